"""torch.distributed glue: DDP under `torchrun`, a no-op in a single process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / PORT or the rendezvous
endpoint); we use NCCL on GPUs and gloo on CPUs. Rank 0 writes every file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ...adapters import unwrap
from ...errors import PearError


@dataclass
class Context:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes. `device` is --device: 'cuda' (or
    'auto' where CUDA is available) gives each process the GPU cuda:LOCAL_RANK with
    NCCL; 'cpu' uses gloo, also on a GPU machine."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise PearError(
            f"--device {device}: under torchrun each process takes the GPU cuda:LOCAL_RANK; pass "
            f"--device cuda, auto or cpu (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise PearError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise PearError(
                f"local rank {local} has no GPU: {torch.cuda.device_count()} visible on this node; "
                f"start at most that many processes per node (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Context(True, rank, world, local, dev)


# How long teardown releases the GIL to the process group's worker threads.
DRAIN_S = 0.2


def teardown(ctx: Context) -> None:
    """Leave the process group. A gloo worker thread frees a finished collective's
    tensors after the caller's wait() has returned, and it needs the GIL to do so. If
    the interpreter has begun shutting down by then, the thread is killed inside a C++
    destructor and the process aborts (SIGABRT, "terminate called without an active
    exception") although the run succeeded (pytorch/pytorch#190489). destroy_process_group
    does not join those threads, so sleep briefly, releasing the GIL to them. No
    barrier: teardown also runs when this rank failed and the others may not reach it."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(DRAIN_S)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, ctx: Context, previous: nn.Module | None = None) -> nn.Module:
    """DDP over the model's current trainable parameters. Called again after pruning:
    the parameter set changed, and a module shared by several positions is one set of
    parameters whose gradient autograd sums before DDP's hook sees it. `previous` is
    the wrapper being replaced; its gradient hooks stay on the parameters it shares
    with the new one unless they are removed here."""
    base = unwrap(model)
    if not ctx.enabled:
        return base
    old = _find_ddp(previous)
    if old is not None:
        # Hooks of the C++ reducer, and of the Python reducer used under compiled
        # autograd: the latter keep the old wrapper alive and would all-reduce every
        # surviving gradient a second time.
        old._remove_autograd_hooks()
        for handle in getattr(old, "_accum_grad_hooks", ()):
            handle.remove()
    ids = [ctx.local_rank] if ctx.device is not None and ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(base, device_ids=ids)


def _find_ddp(fwd: nn.Module | None) -> nn.parallel.DistributedDataParallel | None:
    while fwd is not None and not isinstance(fwd, nn.parallel.DistributedDataParallel):
        fwd = getattr(fwd, "_orig_mod", None)
    return fwd


def check_same(value, what: str, ctx: Context, hint: str = "") -> None:
    """Raise on every rank unless all ranks hold the same (picklable) `value`."""
    if not ctx.enabled:
        return
    values = [None] * ctx.world
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise PearError(
            f"{what} differ across ranks ({', '.join(f'rank {r}: {v}' for r, v in enumerate(values))})"
            f"{'; ' + hint if hint else ''}"
        )


def check_same_plan(plan, ctx: Context) -> str:
    """Every rank must prune and share identically; a mismatch is an error. Returns
    the plan's digest."""
    digest = plan.digest()
    check_same(digest, "prune plans", ctx, "refusing to continue with diverged models")
    return digest


def all_sum(values: list[float], ctx: Context, device) -> list[float]:
    """Each value summed over the ranks (float64: counts stay exact up to 2**53)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, ctx: Context):
    """Rank 0's value on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(model: nn.Module, ctx: Context) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's, in place."""
    if not ctx.enabled:
        return
    seen = set()
    for t in unwrap(model).state_dict(keep_vars=True).values():
        if id(t) not in seen:  # a shared module appears once per position
            seen.add(id(t))
            dist.broadcast(t.detach(), src=0)
