"""Batches, loading and evaluation: what a run feeds its model, and how it scores it.

`GlobalBatches` cuts a seeded permutation into global batches that every rank shares
out; `Split` holds a dataset split, preprocessed in memory when it fits; `evaluate`
scores a model on a split across ranks.
"""

from __future__ import annotations

import torch

from ...errors import PearError
from ..datasets.vtab import VtabDataset
from . import distributed as D


class GlobalBatches:
    """Seeded per-epoch permutation cut into global batches; rank r takes every
    world-th sample of each global batch. The same global batch therefore reaches the
    optimizer whatever the number of processes, and the order depends only on
    (seed, epoch), so a resumed run sees exactly the batches it would have seen."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.batch, self.seed, self.rank, self.world, self.shuffle = n, batch, seed, rank, world, shuffle
        self.epoch = 0

    def _global(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        chunks = [order[i : i + self.batch] for i in range(0, self.n, self.batch)]
        return [c for c in chunks if len(c) >= self.world]  # a rank with no sample would stall DDP

    def batches(self) -> list[list[int]]:
        """This rank's share of each global batch."""
        return [c[self.rank :: self.world] for c in self._global()]

    def global_sizes(self) -> list[int]:
        """The size of each global batch: ranks' shares differ by one when it does not
        divide by the world size, so the loss is normalised by this, not the share."""
        return [len(c) for c in self._global()]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class _Failed:
    """A PearError raised in a DataLoader worker, carried back as a value: raised there,
    it would reach the user wrapped in the worker's traceback."""

    def __init__(self, message: str):
        self.message = message


class _Guarded(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index):
        try:
            return self.ds[index]
        except PearError as exc:
            return _Failed(str(exc))


def _collate(items):
    failed = next((it for it in items if isinstance(it, _Failed)), None)
    return failed if failed is not None else torch.utils.data.default_collate(items)


def _load(ds, workers: int, **kwargs):
    """Batches of a DataLoader over `ds`; a bad image stops it with the plain PearError."""
    for batch in torch.utils.data.DataLoader(_Guarded(ds), num_workers=workers, collate_fn=_collate, **kwargs):
        if isinstance(batch, _Failed):
            raise PearError(batch.message)
        yield batch


class Split:
    """A dataset split, preprocessed into one in-memory tensor when it fits the cache
    budget (the recipe has no augmentation, so every epoch sees the same pixels)."""

    def __init__(self, ds: VtabDataset, cache_bytes: float, workers: int):
        self.ds = ds
        self.labels = torch.tensor([y for _, y in ds.samples], dtype=torch.long)
        self.images = None
        x0, _ = ds[0]
        if x0.numel() * x0.element_size() * len(ds) <= cache_bytes:
            self.images = torch.cat([x for x, _ in _load(ds, workers, batch_size=64)])
        self.workers = workers

    def __len__(self) -> int:
        return len(self.ds)

    def loader(self, batches):
        """Yield (images, labels) for the given index batches."""
        if self.images is not None:
            for idx in batches:
                t = torch.tensor(idx)
                yield self.images[t], self.labels[t]
        else:
            yield from _load(self.ds, self.workers, batch_sampler=list(batches))


def resolve_device(name: str) -> torch.device:
    from .options import check_device

    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PearError(f"--device {name}: CUDA is not available on this machine")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise PearError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PearError("--device mps: MPS is not available on this machine")
    return torch.device(name)


@torch.no_grad()
def evaluate(
    fwd, split: Split, device: torch.device, amp: bool, ctx: D.Context | None = None, batch_size: int = 256
) -> float:
    """Top-1 accuracy in percent; each rank scores its shard, counts are summed."""
    ctx = ctx or D.Context()
    fwd.eval()
    idx = list(range(len(split)))[ctx.rank :: ctx.world]
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    correct = total = 0
    for x, y in split.loader(batches):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = fwd(x.to(device)).argmax(-1).cpu()
        correct += (pred == y).sum().item()
        total += y.numel()
    all_correct, all_total = D.all_sum([correct, total], ctx, device)
    return 100.0 * all_correct / max(1, all_total)
