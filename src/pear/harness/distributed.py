"""torch.distributed glue: DDP under `torchrun`, a no-op in a single process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / PORT or the rendezvous
endpoint); we use NCCL on GPUs and gloo on CPUs. Rank 0 writes every file.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..adapters import unwrap
from ..errors import PearError


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


def setup() -> Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Context(True, rank, world, local, device)


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, ctx: Context) -> nn.Module:
    """DDP over the model's current trainable parameters. Called again after pruning:
    the parameter set changed, and a module shared by several positions is one set of
    parameters whose gradient autograd sums before DDP's hook sees it."""
    base = unwrap(model)
    if not ctx.enabled:
        return base
    gc.collect()  # let a previous DDP wrapper release its gradient hooks first
    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(base, device_ids=ids)


def check_same_plan(plan, ctx: Context) -> None:
    """Every rank must prune and share identically; a mismatch is an error."""
    if not ctx.enabled:
        return
    digests = [None] * ctx.world
    dist.all_gather_object(digests, plan.digest())
    if len(set(digests)) != 1:
        raise PearError(f"prune plans differ across ranks ({digests}); refusing to continue with diverged models")


def sum_counts(correct: int, total: int, ctx: Context, device) -> tuple[int, int]:
    if not ctx.enabled:
        return correct, total
    t = torch.tensor([correct, total], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t[0]), int(t[1])


def broadcast_object(obj, ctx: Context):
    """Rank 0's value on every rank (the metrics dict)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
