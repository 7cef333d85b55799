"""One training run: data, model, schedule, Pear's prune step, checkpoints, metrics.

The schedule is the VTAB-1k recipe (AdamW, cosine with linear warm-up, per-step LR,
no augmentation). For `pear`/`prune` the importance tracker runs during the first
`prune_epoch` epochs (by default the warm-up); at the start of epoch `prune_epoch`
the plan is made and applied once, the optimizer drops the pruned parameters' state,
and training goes on. Every epoch a resumable state is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml
from torch import nn

from ..adapters import pear_state, unwrap
from ..atomic import atomic_write_text, recover_dir
from ..checkpoint import fingerprint, save as save_task
from ..config import PearConfig
from ..errors import PearError
from ..importance import ImportanceTracker
from ..pruning import PrunePlan, plan as make_plan, prune_and_share, prune_optimizer
from ..report import report
from . import distributed as D
from .backbones import create_backbone
from .data import VtabDataset, build_transform, task_info
from .methods import METHODS, PEAR_METHODS, freeze_norm_stats, pear_config_for, prepare
from .state import load_plain, load_state, save_plain, save_state

log = logging.getLogger("pear")


@dataclass
class TrainConfig:
    """Everything a run needs; written to RUN_DIR/args.yaml."""

    data: str
    task: str
    out: str
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    method: str = "pear"
    img_size: int = 224
    epochs: int = 100
    warmup_epochs: int | None = None  # None: 10% of epochs (10 of the recipe's 100), at least 1
    batch_size: int = 64
    lr: float = 1e-3
    wd: float = 1e-4
    seed: int = 0
    train_split: str = "train800val200"
    select_on: str | None = None  # 'val200': train on train800, keep the best val200 epoch
    # Pear options (see PearConfig)
    adapter: str = "parallel"
    rank: int = 8
    scale: float = 0.1
    prune_ratio: float = 0.5
    prune_scope: str = "global"
    share: str = "rank"
    knowledge: str = "merge"
    importance: str = "taylor"
    prune_epoch: int | None = None  # None: the end of the LR warm-up
    # Execution
    device: str = "auto"
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on CPU
    compile: bool = False
    workers: int = 2
    cache_gb: float = 4.0  # preprocessed images are kept in memory up to this size
    deterministic: bool = False
    progress: bool = True
    overwrite: bool = False
    resume: bool = False
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PearError(f"--method {self.method!r} is unknown; expected one of {', '.join(METHODS)}")
        for name in ("epochs", "batch_size", "img_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PearError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not isinstance(self.model_kwargs, dict):
            raise PearError(f"model_kwargs must be a mapping of timm.create_model arguments, got {self.model_kwargs!r}")
        if self.warmup_epochs is None:
            self.warmup_epochs = max(1, round(0.1 * self.epochs)) if self.epochs > 1 else 0
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise PearError(f"--warmup-epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.prune_epoch is None:
            self.prune_epoch = max(1, self.warmup_epochs)
        if self.method in ("pear", "prune") and not 1 <= self.prune_epoch < self.epochs:
            raise PearError(f"--prune-epoch must be in [1, epochs) = [1, {self.epochs}) so there is a scoring "
                            f"window before pruning and training after it; got {self.prune_epoch}")
        if self.select_on not in (None, "val200"):
            raise PearError(f"--select-on must be 'val200' if given, got {self.select_on!r}")
        if self.select_on:
            self.train_split = "train800"
        if not self.lr > 0 or not self.wd >= 0:
            raise PearError(f"--lr must be > 0 and --wd >= 0, got lr={self.lr}, wd={self.wd}")
        try:
            self.pear_config()
        except ValueError as exc:
            raise PearError(str(exc)) from None

    def pear_config(self) -> PearConfig:
        return PearConfig(adapter=self.adapter, rank=self.rank, scale=self.scale, importance=self.importance,
                          prune_ratio=self.prune_ratio, prune_scope=self.prune_scope, share=self.share,
                          knowledge=self.knowledge, seed=self.seed)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PearError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


# ---------------------------------------------------------------- data

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
        chunks = [order[i:i + self.batch] for i in range(0, self.n, self.batch)]
        return [c for c in chunks if len(c) >= self.world]  # a rank with no sample would stall DDP

    def batches(self) -> list[list[int]]:
        """This rank's share of each global batch."""
        return [c[self.rank::self.world] for c in self._global()]

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


# ---------------------------------------------------------------- schedule

def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, per optimisation step."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm scales (1-d tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.wd}, {"params": no_decay, "weight_decay": 0.0}]
    # On CUDA the fused kernel does the whole update in one launch (same maths, same state).
    params = decay + no_decay
    fused = (bool(params) and all(p.is_cuda and p.dtype == torch.float32 for p in params)) or None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=fused)


# ---------------------------------------------------------------- the run

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PearError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def prepare_run_dir(cfg: TrainConfig, ctx: "D.Context") -> Path:
    """Rank 0 checks and creates the run folder; the other ranks wait for its verdict
    and stop with a one-line error of their own when it failed, instead of losing
    their connection to rank 0 in the next collective."""
    out = Path(cfg.out)
    error = None
    if ctx.is_main:
        try:
            _make_run_dir(out, cfg)
        except PearError as exc:
            error = exc
    failed = D.broadcast_object(error is not None, ctx)
    if error is not None:
        raise error
    if failed:
        raise PearError(f"rank {ctx.rank} stopped: rank 0 could not prepare the run folder {out} (its error is above)")
    return out


def _make_run_dir(out: Path, cfg: TrainConfig) -> None:
    if out.exists() and not out.is_dir():
        raise PearError(f"run folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (cfg.overwrite or cfg.resume):
        raise PearError(f"run folder {out} already exists; pass --resume to continue it or --overwrite to replace it")
    if out.exists() and cfg.overwrite and not cfg.resume:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PearError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None


def build(cfg: TrainConfig, num_classes: int, device: torch.device):
    """Backbone + method; returns (model, data_config, backbone fingerprint)."""
    model, data_cfg = create_backbone(cfg.backbone, num_classes, cfg.weights,
                                      img_size=cfg.img_size,
                                      model_kwargs=cfg.model_kwargs)
    fp = fingerprint(model)
    model = prepare(model, cfg.method, cfg.pear_config())
    return model.to(device), data_cfg, fp


def train(cfg: TrainConfig) -> dict | None:
    """Run `cfg` to the end (resuming if asked) and return the metrics dict. Under
    torchrun every process calls this; rank 0 writes the run folder and returns the
    metrics, the other ranks return None."""
    ctx = D.setup(cfg.device)
    try:
        with warnings.catch_warnings():
            if not ctx.is_main:
                # Every rank runs the same code, so rank 0 already shows each warning once.
                warnings.simplefilter("ignore")
            return _train(cfg, ctx)
    finally:
        D.teardown(ctx)


def _train(cfg: TrainConfig, ctx: "D.Context") -> dict | None:
    device = resolve_device(cfg.device) if not ctx.enabled else ctx.device
    out = prepare_run_dir(cfg, ctx)
    _setup_logging(out, ctx)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    amp = (device.type == "cuda") if cfg.amp is None else cfg.amp

    info = task_info(cfg.data, cfg.task)
    model, data_cfg, fp = build(cfg, info.num_classes, device)
    transform = build_transform(cfg.img_size, data_cfg["mean"], data_cfg["std"])
    cache = cfg.cache_gb * 2**30
    train_split = Split(VtabDataset(cfg.data, cfg.task, cfg.train_split, transform), cache, cfg.workers)
    val_split = Split(VtabDataset(cfg.data, cfg.task, "val200", transform), cache, cfg.workers) if cfg.select_on else None
    test_split = Split(VtabDataset(cfg.data, cfg.task, "test", transform), cache, cfg.workers)

    if ctx.is_main:
        _write_text(out / "args.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
        log.info("run %s: %s on %s/%s, backbone %s, %d train / %d test images, device %s, world %d",
                 out, cfg.method, cfg.data, info.name, cfg.backbone, len(train_split), len(test_split),
                 device, ctx.world)

    optimizer = make_optimizer(model, cfg)
    sampler = GlobalBatches(len(train_split), cfg.batch_size, cfg.seed, ctx.rank, ctx.world)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = steps_per_epoch * cfg.warmup_epochs
    pruning = cfg.method in ("pear", "prune") and pear_config_for(cfg.method, cfg.pear_config()).prune_ratio > 0
    tracker = ImportanceTracker(model) if pruning else None

    start_epoch, step, history, plan, best = 0, 0, [], None, None
    if cfg.resume and ctx.is_main:
        recover_dir(out / "state")
    D.barrier()
    if cfg.resume and (out / "state").is_dir():
        st = load_state(out / "state", model, optimizer, tracker, device)
        start_epoch, step, history, best = st["epoch"] + 1, st["step"], st["history"], st.get("best")
        plan = PrunePlan.from_dict(st["plan"]) if st.get("plan") else None
        if plan is not None and tracker is not None:
            tracker.close()
            tracker = None
        log.info("resumed from %s at epoch %d (step %d)", out / "state", start_epoch, step)
    elif cfg.resume:
        log.info("--resume: no saved state in %s, starting from scratch", out)
    if cfg.resume:
        D.check_same((start_epoch, step, plan.digest() if plan else None), "resume points (epoch, step, plan)", ctx,
                     f"every rank reads {out / 'state'}: put --out on a filesystem that all nodes share")

    fwd = _wrap(model, cfg, ctx)
    for epoch in range(start_epoch, cfg.epochs):
        if tracker is not None and epoch == cfg.prune_epoch:
            plan = _prune(model, tracker, optimizer, ctx)
            tracker = None
            fwd = _wrap(model, cfg, ctx, fwd)  # DDP over the new parameter set; compile once more
        sampler.epoch = epoch
        t0 = time.perf_counter()
        loss_sum, correct, seen, step = _train_epoch(fwd, model, train_split, sampler, optimizer, tracker, step,
                                                     total_steps, warmup_steps, cfg, device, amp, epoch, ctx)
        dt = time.perf_counter() - t0
        _check_finite(model, cfg, epoch)
        rec = {"epoch": epoch, "loss": loss_sum / max(1, seen), "train_acc": 100.0 * correct / max(1, seen),
               "images_per_second": seen / dt, "images": seen, "seconds": dt,
               "lr": optimizer.param_groups[0]["lr"]}
        if val_split is not None and (plan is not None or not pruning):
            rec["val_acc"] = evaluate(fwd, val_split, cfg, device, amp, ctx)
            if best is None or rec["val_acc"] > best["val_acc"]:
                best = {"epoch": epoch, "val_acc": rec["val_acc"]}
                if ctx.is_main:
                    _guarded(lambda: _save_checkpoint(model, out / "best", cfg, info, fp), out / "best")
        history.append(rec)
        if ctx.is_main:
            log.info("epoch %d/%d  loss %.4f  train acc %.2f%%  %.1f img/s%s", epoch + 1, cfg.epochs, rec["loss"],
                     rec["train_acc"], rec["images_per_second"],
                     f"  val acc {rec['val_acc']:.2f}%" if "val_acc" in rec else "")
            _guarded(lambda: save_state(out / "state", model, optimizer, tracker, epoch=epoch, step=step,
                                        history=history, plan=plan, best=best), out / "state")
        D.barrier()

    if best is not None and cfg.select_on:
        if ctx.is_main:  # only rank 0's disk is sure to hold RUN/best
            _restore_best(model, out / "best", cfg, device)
        D.broadcast_module(model, ctx)
        fwd = _wrap(model, cfg, ctx, fwd)
    # The eager model, not the compiled one: compiled kernels may round differently, and the
    # recorded accuracy must be the one `pear eval --run` recomputes from the checkpoint.
    test_acc = evaluate(model, test_split, cfg, device, amp, ctx)
    # Over every epoch, including those a resumed run's earlier processes trained.
    train_time = sum(r.get("seconds", 0.0) for r in history)
    images_seen = sum(r.get("images", 0) for r in history)
    metrics = None
    if ctx.is_main:
        ckpt = out / "checkpoint"
        _guarded(lambda: _save_checkpoint(model, ckpt, cfg, info, fp), ckpt)
        stored = sum(f.stat().st_size for f in ckpt.iterdir())
        rep = report(model) if cfg.method in PEAR_METHODS else None
        trainable = sum(p.numel() for p in unwrap(model).parameters() if p.requires_grad)
        metrics = {
            "task": info.name, "method": cfg.method, "backbone": cfg.backbone, "seed": cfg.seed,
            "test_acc": test_acc, "trainable_params": trainable,
            "trainable_params_before": rep["totals"]["trainable_params_before"] if rep else trainable,
            "stored_bytes": stored, "epochs": cfg.epochs, "img_size": cfg.img_size,
            "train_seconds": train_time,
            "images_per_second": images_seen / train_time if train_time else None,
            "world_size": ctx.world, "device": str(device), "plan_digest": plan.digest() if plan else None,
            "selected_epoch": best["epoch"] if best and cfg.select_on else None,
            "torch": torch.__version__, "python": platform.python_version(),
        }
        if rep:
            _write_text(out / "report.json", json.dumps(rep, indent=1))
            metrics["adapter_params"] = rep["totals"]["adapter_params"]
            metrics["adapter_bytes"] = rep["totals"]["adapter_bytes"]
        if plan:
            _write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=1))
        _write_text(out / "history.json", json.dumps(history, indent=1))
        _write_text(out / "metrics.json", json.dumps(metrics, indent=1))
        log.info("test accuracy %.2f%%  trainable %d  stored %d bytes", test_acc, trainable, stored)
    D.barrier()  # when train() returns on any rank, the run folder is complete
    return metrics


def _wrap(model: nn.Module, cfg: TrainConfig, ctx: "D.Context", previous: nn.Module | None = None) -> nn.Module:
    fwd = D.wrap_ddp(model, ctx, previous)
    if cfg.compile:
        fwd = torch.compile(fwd)
    return fwd


def _prune(model: nn.Module, tracker: ImportanceTracker, optimizer, ctx: "D.Context") -> PrunePlan:
    scores = tracker.scores()
    tracker.close()
    state = pear_state(model)
    p = make_plan(scores, state.config, model)
    digest = D.check_same_plan(p, ctx)
    prune_and_share(model, p)
    dropped = prune_optimizer(optimizer, model)
    log.info("pruned %d of %d adapters (%s sharing, knowledge %s); optimizer dropped %d tensors; plan %s",
             len(p.pruned), len(p.pruned) + len(p.kept), p.policy, state.config.knowledge, dropped, digest)
    if ctx.enabled:
        log.info("plan %s checked: identical on all %d ranks", digest, ctx.world)
    return p


def _train_epoch(fwd, model, split: Split, sampler: GlobalBatches, optimizer, tracker, step, total_steps,
                 warmup_steps, cfg: TrainConfig, device, amp: bool, epoch: int, ctx):
    """One epoch; returns (loss sum, correct, images) summed over all ranks, and the step."""
    fwd.train()
    freeze_norm_stats(unwrap(model))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct, seen = 0.0, 0, 0
    batches = sampler.batches()
    sizes = sampler.global_sizes()
    bar = _progress(len(batches), f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(split.loader(batches)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        factor = lr_factor(step, total_steps, warmup_steps)
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * factor
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = fwd(x)
            loss_total = loss_fn(logits.float(), y)
        value = loss_total.item()
        if not math.isfinite(value):
            raise PearError(f"loss became {value} at epoch {epoch + 1}, step {i + 1} (global step {step + 1}); "
                            f"stopped. {_last_good(cfg, epoch)}; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; this scale makes that average the gradient
        # of the global batch's mean loss, as in one process.
        (loss_total * (ctx.world / sizes[i])).backward()
        if tracker is not None:
            tracker.update()
        optimizer.step()
        step += 1
        loss_sum += value
        correct += (logits.argmax(-1) == y).sum().item()
        seen += y.numel()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            img_s=f"{seen * ctx.world / (time.perf_counter() - t0):.0f}")
    if bar is not None:
        bar.close()
    loss_sum, correct, seen = D.all_sum([loss_sum, correct, seen], ctx, device)
    return loss_sum, int(correct), int(seen), step


def _last_good(cfg: TrainConfig, epoch: int) -> str:
    if epoch == 0:
        return "No state was saved yet (it is written at the end of each epoch)"
    return f"The last good state (end of epoch {epoch}) is kept in {cfg.out}/state"


def _check_finite(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """The loss is checked before each step, so the last step of an epoch can still
    leave inf/NaN weights (an inf gradient); saving them would overwrite the last
    good state with one that cannot train."""
    bad = next((n for n, p in unwrap(model).named_parameters() if p.requires_grad and not torch.isfinite(p).all()),
               None)
    if bad is not None:
        raise PearError(f"parameter {bad!r} became non-finite during epoch {epoch + 1} (the loss was still finite); "
                        f"stopped. {_last_good(cfg, epoch)}; try a lower --lr")


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


@torch.no_grad()
def evaluate(fwd, split: Split, cfg: TrainConfig, device, amp: bool, ctx) -> float:
    """Top-1 accuracy in percent; each rank scores its shard, counts are summed."""
    fwd.eval()
    idx = list(range(len(split)))[ctx.rank::ctx.world]
    batches = [idx[i:i + cfg.eval_batch_size] for i in range(0, len(idx), cfg.eval_batch_size)]
    correct = total = 0
    for x, y in split.loader(batches):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = fwd(x.to(device)).argmax(-1).cpu()
        correct += (pred == y).sum().item()
        total += y.numel()
    correct, total = D.all_sum([correct, total], ctx, device)
    return 100.0 * correct / max(1, total)


def _save_checkpoint(model, directory: Path, cfg: TrainConfig, info, fp: str) -> None:
    meta = {"method": cfg.method, "task": info.name, "img_size": cfg.img_size, "model_kwargs": cfg.model_kwargs,
            "seed": cfg.seed, "rank": cfg.rank}
    if cfg.method in PEAR_METHODS:
        save_task(model, directory, backbone=cfg.backbone, class_names=info.class_names, fingerprint_value=fp,
                  meta=meta)
    else:
        save_plain(model, directory, method=cfg.method, backbone=cfg.backbone, class_names=info.class_names,
                   fingerprint_value=fp, meta=meta)


def _restore_best(model, directory: Path, cfg: TrainConfig, device) -> None:
    from ..checkpoint import build_task, head_name, install, read_checkpoint

    if cfg.method in PEAR_METHODS:
        ckpt = read_checkpoint(directory)
        install(model, build_task(ckpt, model), head_name(model))
    else:
        load_plain(directory, model)
    model.to(device)


def _write_text(path: Path, text: str) -> None:
    _guarded(lambda: atomic_write_text(path, text), path)


def _guarded(write, path: Path) -> None:
    """Turn a failed write (disk full, read-only folder) into a clear error; the
    previous complete checkpoint is untouched because writes are atomic."""
    try:
        write()
    except OSError as exc:
        raise PearError(f"could not write {path}: {exc.strerror or exc}. The previous complete "
                        f"{path.name} (if any) is intact.") from None


def _setup_logging(out: Path, ctx: "D.Context") -> None:
    """Rank 0 logs everything to stdout and RUN/train.log; other ranks only warnings,
    tagged with their rank, to stdout (torchrun merges every rank's output)."""
    log.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s" if ctx.is_main else f"%(asctime)s [rank {ctx.rank}] %(message)s",
                            "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if ctx.is_main:
        fh = logging.FileHandler(out / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
