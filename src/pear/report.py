"""What was pruned and what it cost: per-position table and parameter/byte totals.

`report` reads a live model and `checkpoint_report` a saved task checkpoint; both
describe each position as a `Position` and leave the table and the totals to one
function, `summarize`, so the two always agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .adapters import adapter_modules, classifier, pear_state, slots, unwrap
from .gates import PREFIX as GATE_PREFIX

if TYPE_CHECKING:
    from .checkpoint import TaskCheckpoint


@dataclass(frozen=True)
class Position:
    """One adapter position, as the cost summary sees it."""

    name: str
    kind: str
    depth: int
    pruned: bool
    source: str | None  # the position whose adapter it calls (itself when it owns one); None: no adapter
    importance: float | None
    params: int  # of the adapter it owns, or of its gate when it shares one (PearConfig.gate); else 0
    bytes: int
    frozen_params: int  # of its frozen knowledge checkpoint
    frozen_bytes: int


def share_map(model: nn.Module) -> dict[str, str]:
    """Pruned position -> position whose adapter it calls."""
    return {n: s.info.source for n, s in slots(model).items() if s.info.source != n and s.adapter is not None}


def _size(module: nn.Module | None, gate: torch.Tensor | None = None) -> tuple[int, int]:
    """(parameters, bytes) of a module's parameters and of a gate."""
    params = ([] if module is None else list(module.parameters())) + ([] if gate is None else [gate])
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def tensors_size(tensors: Mapping[str, torch.Tensor], prefix: str) -> tuple[int, int]:
    """(parameters, bytes) of the stored tensors whose names start with `prefix`."""
    sel = [t for k, t in tensors.items() if k.startswith(prefix)]
    return sum(t.numel() for t in sel), sum(t.numel() * t.element_size() for t in sel)


def _stored(tensors: Mapping[str, torch.Tensor], position: str) -> tuple[int, int]:
    """(parameters, bytes) a checkpoint stores for a position: its own adapter or its gate."""
    params, nbytes = tensors_size(tensors, f"adapters.{position}.")
    gate = tensors.get(GATE_PREFIX + position)
    return (params, nbytes) if gate is None else (params + gate.numel(), nbytes + gate.numel() * gate.element_size())


def report(model: nn.Module) -> dict:
    """Per position: importance, state (active / kept / pruned), which adapter it
    shares, own and frozen parameters. Totals (`summarize`): trainable parameters before
    and after pruning, and the bytes a task checkpoint stores."""
    state = pear_state(model)
    base = unwrap(model)
    owners = adapter_modules(base)
    positions = [
        Position(
            n,
            s.info.kind,
            s.info.depth,
            s.info.pruned,
            s.info.source if s.adapter is not None else None,
            s.info.importance,
            *_size(owners.get(n), s.gate),
            *_size(s.frozen),
        )
        for n, s in slots(base).items()
    ]
    trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
    rows, totals = summarize(
        positions,
        pruned=state.pruned,
        unpruned_adapter_params=state.unpruned_adapter_params,
        head=_size(classifier(base)),
        trainable_params=trainable,
    )
    return {"config": state.config.to_dict(), "positions": rows, "totals": totals}


def checkpoint_report(ckpt: TaskCheckpoint) -> dict:
    """`report` of a task checkpoint read by `pear.checkpoint.read_checkpoint`, from its
    JSON and tensors alone (no backbone)."""
    info, tensors = ckpt.info, ckpt.tensors
    positions = [
        Position(
            p["name"],
            p["kind"],
            p["depth"],
            p["pruned"],
            p["source"],
            p.get("importance"),
            *_stored(tensors, p["name"]),
            *tensors_size(tensors, f"frozen.{p['name']}."),
        )
        for p in info["positions"]
    ]
    rows, totals = summarize(
        positions,
        pruned=bool(info.get("pruned")),
        head=tensors_size(tensors, "head."),
        unpruned_adapter_params=info.get("unpruned_adapter_params"),
    )
    return {"config": ckpt.config.to_dict(), "positions": rows, "totals": totals}


def summarize(
    positions: list[Position],
    *,
    pruned: bool,
    unpruned_adapter_params: int | None,
    head: tuple[int, int],
    trainable_params: int | None = None,
) -> tuple[list[dict], dict]:
    """(one row per position, totals). pruned: whether the task was pruned (its other
    positions are then 'kept', not 'active'); unpruned_adapter_params: the adapters'
    parameters before pruning (None: as now); head: its (parameters, bytes);
    trainable_params: as counted on a model (None: adapters + head).

    stored_tensor_bytes is what a task checkpoint must hold: unique adapters and the gates of
    shared positions (both counted as adapter parameters and bytes), frozen knowledge
    checkpoints, the head and the share map (its compact JSON). The files on
    disk add the JSON's other fields; `pear inspect` gives their size as
    checkpoint_file_bytes."""
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "depth": p.depth,
            "importance": p.importance,
            "state": "pruned" if p.pruned else ("kept" if pruned else "active"),
            "shares": p.source if p.source not in (None, p.name) else None,
            "params": p.params,
            "frozen_params": p.frozen_params,
        }
        for p in positions
    ]
    head_params, head_bytes = head
    adapter_params, adapter_bytes = sum(p.params for p in positions), sum(p.bytes for p in positions)
    frozen_bytes = sum(p.frozen_bytes for p in positions)
    unpruned = adapter_params if unpruned_adapter_params is None else unpruned_adapter_params
    # Adapters of one task share one dtype, so the unpruned budget costs the same per parameter.
    unpruned_bytes = unpruned * (adapter_bytes // adapter_params if adapter_params else 4)
    shares = {r["name"]: r["shares"] for r in rows if r["shares"] is not None}
    share_bytes = len(json.dumps(shares, separators=(",", ":")).encode()) if shares else 0
    totals = {
        "positions": len(rows),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "shared": len(shares),
        "adapter_params": adapter_params,
        "adapter_params_unpruned": unpruned,
        "frozen_params": sum(p.frozen_params for p in positions),
        "head_params": head_params,
        "trainable_params": adapter_params + head_params if trainable_params is None else trainable_params,
        "trainable_params_before": unpruned + head_params,
        "adapter_bytes": adapter_bytes,
        "adapter_bytes_unpruned": unpruned_bytes,
        "adapter_ratio": adapter_bytes / unpruned_bytes if unpruned_bytes else None,
        "frozen_bytes": frozen_bytes,
        "head_bytes": head_bytes,
        "share_map_bytes": share_bytes,
        "stored_tensor_bytes": adapter_bytes + frozen_bytes + head_bytes + share_bytes,
    }
    return rows, totals
