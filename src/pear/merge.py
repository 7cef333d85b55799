"""`merge_and_unload`: fold linear adapters into the backbone, so inference costs nothing extra.

A LoRA-kind adapter (`adapter="lora"`: identity activation, parallel to a `nn.Linear`)
adds `s * U(D x + b_D) + s * b_U` to `W x + b`, which is one linear map: `W' = W + s U D`,
`b' = b + s (U b_D + b_U)`. Every slot gets its own fold, so an adapter shared by several
positions is added to each of their weights (times the position's gate, PearConfig.gate:
`W' = W + diag(g) s U D`, its constant part times g), and a frozen knowledge checkpoint is
folded too. Adapters with a nonlinearity, sequential ones and convolutional ones are no single
linear map: they are refused before anything changes.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapters import Bottleneck, PearSlot, pear_state, slots, unwrap
from .errors import PearError


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter of an attached model into the weights it adapts and put the plain
    layers back (in place); returns the model, a plain timm model again with the trained head.
    PearError, with nothing changed, when any position's adapter is not linear."""
    state = pear_state(model)
    base = unwrap(model)
    found = slots(base)
    for name, slot in found.items():
        _check_linear(name, slot, state.config)
    parents = {id(m): (parent, attr) for parent in base.modules() for attr, m in parent.named_children()}
    for slot in found.values():
        parent, attr = parents[id(slot)]
        setattr(parent, attr, _folded(slot))
    del base.pear_state
    return base


def _linear_parts(slot: PearSlot) -> tuple[nn.Linear, list[Bottleneck]] | None:
    """The slot's base layer and its adapters when together they are one linear map, else None."""
    parts = [m for m in (slot.adapter, slot.frozen) if m is not None]
    linear = [m for m in parts if isinstance(m, Bottleneck) and isinstance(m.act, nn.Identity)]
    if slot.mode != "parallel" or not isinstance(slot.base, nn.Linear) or len(linear) != len(parts):
        return None
    return slot.base, linear


def _check_linear(name: str, slot: PearSlot, config) -> None:
    if _linear_parts(slot) is None:
        raise PearError(
            f"merge_and_unload folds only linear adapters (PearConfig adapter='lora', or adapter='parallel' on a "
            f"linear layer with act='identity'); position {name!r} has a {slot.mode} {config.adapter!r} adapter "
            f"with act={config.act!r} around a {type(slot.base).__name__}, which is no single linear map: keep "
            f"the attached model for inference"
        )


@torch.no_grad()
def _folded(slot: PearSlot) -> nn.Linear:
    """The slot's base layer with its adapter (and frozen checkpoint) folded in."""
    parts = _linear_parts(slot)
    assert parts is not None, "merge_and_unload checks every slot before it folds one"
    layer, adapters = parts
    weight = layer.weight.float()
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(layer.out_features, device=weight.device)
    for m in adapters:
        # The shared adapter's gate at this position (none on a frozen checkpoint): a factor per output.
        g = slot.gate.float() if m is slot.adapter and slot.gate is not None else torch.ones((), device=weight.device)
        weight = weight + g.reshape(-1, 1) * (m.scale * m.up.weight.float() @ m.down.weight.float())
        # The adapter of a zero input is its constant part s (U b_D + b_U): exact, as it has no nonlinearity.
        zero = torch.zeros(1, layer.in_features, device=weight.device, dtype=layer.weight.dtype)
        bias = bias + g * m(zero)[0].float()
    has_bias = layer.bias is not None or bool(bias.abs().max() > 0)
    out = nn.Linear(
        layer.in_features, layer.out_features, bias=has_bias, device=weight.device, dtype=layer.weight.dtype
    )
    out.weight.copy_(weight)
    if has_bias:
        out.bias.copy_(bias)
    out.requires_grad_(False)
    return out
