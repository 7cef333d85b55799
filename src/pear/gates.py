"""Learned gates on shared adapters (`PearConfig.gate`; ours, not in the paper).

After pruning, a pruned position calls a kept position's adapter, the very same module.
With `gate="scalar"` or `"channel"`, `prune_and_share` gives each such *shared* position a
trainable gate `g` (a 0-d tensor, or one value per output channel of the adapter), and the
slot adds `g * adapter(x)` there instead of `adapter(x)`. Every gate starts at 1.0, so right
after pruning the model computes exactly what plain sharing computes; it then trains
beside the adapters (`pear.prune_optimizer` adds it to the optimizer), is stored in the
task checkpoint as the tensor `gates.<position>` and counted with the adapter parameters.
Kept positions have no gate.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .bottlenecks import ConvBottleneck
from .errors import PearError

PREFIX = "gates."  # a gate's tensor in a task checkpoint: gates.<position>


def shape(mode: str, adapter: nn.Module) -> tuple[int, ...]:
    """The shape of a gate of `mode` ('scalar' or 'channel') on `adapter`'s output."""
    if mode == "scalar":
        return ()
    up = getattr(adapter, "up", None)
    weight = getattr(up, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise PearError(
            f"PearConfig.gate='channel' needs the output width of the adapter, read from its 'up' "
            f"projection, which a {type(adapter).__name__} has not; use gate='scalar'"
        )
    return (int(weight.shape[0]),)  # out_features of a Linear, out_channels of a Conv2d


def new(mode: str, adapter: nn.Module) -> nn.Parameter:
    """A trainable gate of `mode` for `adapter`, at 1.0, on the adapter's device and dtype."""
    ref = next(adapter.parameters())
    return nn.Parameter(torch.ones(shape(mode, adapter), device=ref.device, dtype=ref.dtype))


def gated(out: torch.Tensor, gate: torch.Tensor, adapter: nn.Module) -> torch.Tensor:
    """`out` (what `adapter` computed) times `gate`, one value per channel for a channel gate:
    the last dimension of tokens, dimension 1 of a convolutional adapter's NCHW feature maps."""
    g = gate.to(out.dtype)  # under autocast: keep the adapter's bf16 output bf16
    if g.ndim and isinstance(adapter, ConvBottleneck):
        g = g.view(-1, 1, 1)
    return out * g


def add_to_optimizer(optimizer: torch.optim.Optimizer, gates: list[nn.Parameter]) -> int:
    """Put the `gates` the optimizer does not hold yet into its first param group without weight
    decay (decay would pull them from 1.0 towards 0), else into its last group, so that a learning
    rate schedule over its groups schedules them too. Returns how many were added."""
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    new_gates = [g for g in gates if id(g) not in held]
    if new_gates:
        groups = optimizer.param_groups
        group = next((g for g in groups if g.get("weight_decay", 0.0) == 0.0), groups[-1])
        group["params"].extend(new_gates)
    return len(new_gates)


def check_stored(mode: str, shared: list[str], tensors: Mapping[str, torch.Tensor]) -> None:
    """ValueError unless a task checkpoint's gate tensors are those a gate of `mode` makes:
    one at every shared position (`shared`), none elsewhere, of rank 0 ('scalar') or 1 ('channel')."""
    stored = {k[len(PREFIX) :]: t for k, t in tensors.items() if k.startswith(PREFIX)}
    want = set(shared) if mode != "none" else set()
    if set(stored) != want:
        extra, missing = sorted(set(stored) - want), sorted(want - set(stored))
        raise ValueError(
            f"its gate tensors do not match PearConfig.gate={mode!r}, which gives one to each shared "
            f"position: unexpected {[PREFIX + n for n in extra][:3]}, missing "
            f"{[PREFIX + n for n in missing][:3]}"
        )
    rank = 0 if mode == "scalar" else 1
    bad = sorted(n for n, t in stored.items() if t.ndim != rank)
    if bad:
        raise ValueError(
            f"tensor {PREFIX + bad[0]!r} has shape {list(stored[bad[0]].shape)}; a {mode!r} gate has "
            f"{'shape []' if rank == 0 else 'one value per channel'}"
        )


def load(mode: str, stored: torch.Tensor, adapter: nn.Module, where: str) -> nn.Parameter:
    """The trainable gate of a checkpoint's tensor `stored`, for the shared `adapter`; PearError
    naming `where` (the tensor) when its shape does not fit that adapter."""
    want = shape(mode, adapter)
    if tuple(stored.shape) != want:
        raise PearError(
            f"{where} has shape {list(stored.shape)}, but a {mode!r} gate on this adapter has shape {list(want)}"
        )
    ref = next(adapter.parameters())
    return nn.Parameter(stored.to(ref.device).clone())
