"""What was pruned and what it cost: per-position table and parameter/byte totals."""

from __future__ import annotations

import json

from torch import nn

from .adapters import adapter_modules, classifier, pear_state, slots, unwrap


def share_map(model: nn.Module) -> dict[str, str]:
    """Pruned position -> position whose adapter it calls."""
    return {n: s.info.source for n, s in slots(model).items() if s.info.source != n and s.adapter is not None}


def _bytes(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() * p.element_size() for p in module.parameters())


def _params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def report(model: nn.Module) -> dict:
    """Per position: importance, state (active / kept / pruned), which adapter it
    shares, own and frozen parameters. Totals: trainable parameters before and after
    pruning, and the bytes a task checkpoint stores (unique adapters + head + frozen
    knowledge checkpoints + the share map)."""
    state = pear_state(model)
    base = unwrap(model)
    sl = slots(base)
    owners = adapter_modules(base)
    rows = []
    for name, s in sl.items():
        rows.append({
            "name": name,
            "kind": s.info.kind,
            "depth": s.info.depth,
            "importance": s.info.importance,
            "state": "pruned" if s.info.pruned else ("kept" if state.pruned else "active"),
            "shares": s.info.source if s.info.source != name and s.adapter is not None else None,
            "params": _params(owners.get(name)),
            "frozen_params": _params(s.frozen),
        })
    head = classifier(base)
    adapter_params = sum(_params(a) for a in owners.values())
    adapter_bytes = sum(_bytes(a) for a in owners.values())
    frozen_bytes = sum(_bytes(s.frozen) for s in sl.values())
    head_params = _params(head)
    smap = share_map(base)
    share_bytes = len(json.dumps(smap, separators=(",", ":")).encode()) if smap else 0
    unpruned_bytes = state.unpruned_adapter_params * (adapter_bytes // adapter_params if adapter_params else 4)
    trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
    totals = {
        "positions": len(sl),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "shared": len(smap),
        "adapter_params": adapter_params,
        "adapter_params_unpruned": state.unpruned_adapter_params,
        "frozen_params": sum(r["frozen_params"] for r in rows),
        "head_params": head_params,
        "trainable_params": trainable,
        "trainable_params_before": state.unpruned_adapter_params + head_params,
        "adapter_bytes": adapter_bytes,
        "adapter_bytes_unpruned": unpruned_bytes,
        "frozen_bytes": frozen_bytes,
        "head_bytes": _bytes(head),
        "share_map_bytes": share_bytes,
        "stored_bytes": adapter_bytes + frozen_bytes + _bytes(head) + share_bytes,
    }
    return {"config": state.config.to_dict(), "positions": rows, "totals": totals}
