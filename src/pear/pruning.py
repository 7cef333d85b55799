"""Prune the least important adapters and share surviving ones into their positions.

`make_plan()` is pure bookkeeping (scores in, a `PrunePlan` out) so it can be inspected,
saved, and compared across ranks; `prune_and_share()` applies a plan to a model for
real: pruned adapters' tensors are dropped and each pruned position calls the shared
adapter module itself, so gradients from all of its positions accumulate in it (through
a learned gate at each shared position with `PearConfig.gate`, pear.gates).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from . import gates
from .adapters import PearSlot, count_params, gate_params, pear_state, slots
from .config import PearConfig
from .errors import PearError
from .knowledge import KNOWLEDGE, _distill_into, _svd_merge_into  # noqa: F401  (their home before pear.knowledge)
from .sharing import SHARE_POLICIES
from .sharing import Position as _Pos


@dataclass
class PrunePlan:
    """Which positions are pruned, and which kept adapter each pruned position shares."""

    pruned: list[str]
    kept: list[str]
    shares: dict[str, str]  # pruned position -> kept position whose adapter it calls
    scores: dict[str, float]
    ratio: float
    policy: str
    pruned_params: int = 0
    total_params: int = 0
    scope: str = "global"

    def to_dict(self) -> dict:
        return {
            "pruned": self.pruned,
            "kept": self.kept,
            "shares": self.shares,
            "scores": self.scores,
            "ratio": self.ratio,
            "policy": self.policy,
            "pruned_params": self.pruned_params,
            "total_params": self.total_params,
            "scope": self.scope,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PrunePlan:
        try:
            plan = cls(
                pruned=list(d["pruned"]),
                kept=list(d["kept"]),
                shares=dict(d["shares"]),
                scores={k: float(v) for k, v in d["scores"].items()},
                ratio=float(d["ratio"]),
                policy=str(d["policy"]),
                pruned_params=int(d.get("pruned_params", 0)),
                total_params=int(d.get("total_params", 0)),
                scope=str(d.get("scope", "global")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PearError(f"prune plan is malformed: {exc!r}") from None
        bad = [p for p, k in plan.shares.items() if p not in plan.pruned or k not in plan.kept]
        if bad or set(plan.pruned) & set(plan.kept):
            raise PearError(f"prune plan is inconsistent: shares {bad} do not map pruned -> kept positions")
        return plan

    def digest(self) -> str:
        """A short hash of the decisions (not the scores), to compare plans across ranks."""
        key = json.dumps({"pruned": self.pruned, "shares": self.shares}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def _describe(scores: dict[str, float], model: nn.Module | None) -> list[_Pos]:
    if model is not None:
        sl = slots(model)
        missing = [n for n in sl if n not in scores]
        extra = [n for n in scores if n not in sl]
        if missing or extra:
            raise PearError(f"scores do not match the model's positions: missing {missing[:3]}, unknown {extra[:3]}")
        out = []
        for i, (n, s) in enumerate(sl.items()):
            size = count_params(s.adapter) if s.adapter is not None else 0
            out.append(_Pos(n, i, s.info.kind, s.info.depth, s.info.signature, size, float(scores[n])))
        return out
    out = []
    for i, (n, v) in enumerate(scores.items()):
        m = re.search(r"blocks\.(\d+)", n)
        out.append(_Pos(n, i, n.rsplit(".", 1)[-1], int(m.group(1)) if m else i, (), 1, float(v)))
    return out


def _n_pruned(ranked: list[_Pos], ratio: float) -> int:
    """How many of the least important adapters to prune so that their parameters
    come closest to `ratio` of all adapter parameters. Never all of them: a ratio
    below 1 always leaves at least one adapter to share."""
    sizes = [p.size for p in ranked]
    if len(set(sizes)) <= 1:
        return min(round(ratio * len(ranked)), len(ranked) - 1)
    target = ratio * sum(sizes)
    best, best_err, acc = 0, target, 0
    for k, s in enumerate(sizes[:-1], start=1):
        acc += s
        if abs(acc - target) < best_err:
            best, best_err = k, abs(acc - target)
    return best


def make_plan(scores: dict[str, float], config: PearConfig, model: nn.Module | None = None) -> PrunePlan:
    """Decide what to prune and share. With `model`, adapter sizes and shape
    compatibility come from its slots; without, all positions count as equal and
    compatible (true inside one ViT)."""
    if not scores:
        raise PearError("scores is empty: there are no adapter positions to plan over")
    bad = {k: v for k, v in scores.items() if not math.isfinite(float(v))}
    if bad:
        raise PearError(f"importance scores must be finite; got {bad}")
    pos = _describe(scores, model)
    # Least important first; ties broken by model order so a plan is deterministic.
    ranked = sorted(pos, key=lambda p: (p.score, p.index))
    if config.prune_scope == "group":
        # The ratio within each group of interchangeable positions: each group keeps at
        # least one adapter, so every pruned position has one to share.
        cut: set[str] = set()
        for sig in dict.fromkeys(p.signature for p in ranked):
            group = [p for p in ranked if p.signature == sig]
            cut.update(p.name for p in group[: _n_pruned(group, config.prune_ratio)])
        pruned = [p for p in ranked if p.name in cut]
        kept = [p for p in ranked if p.name not in cut]
    else:
        m = _n_pruned(ranked, config.prune_ratio)
        pruned, kept = ranked[:m], ranked[m:]
    shares = _share(pruned, kept, config.share)
    order = {p.name: p.index for p in pos}
    return PrunePlan(
        pruned=sorted((p.name for p in pruned), key=order.__getitem__),
        kept=sorted((p.name for p in kept), key=order.__getitem__),
        shares=shares,
        scores={p.name: p.score for p in pos},
        ratio=config.prune_ratio,
        policy=config.share,
        pruned_params=sum(p.size for p in pruned),
        total_params=sum(p.size for p in pos),
        scope=config.prune_scope,
    )


def _share(pruned: list[_Pos], kept: list[_Pos], policy: str) -> dict[str, str]:
    """The registered share policy `policy` (pear.sharing) over least-important-first pruned
    and most-important-first kept positions (ties in model order)."""
    share = SHARE_POLICIES.get(policy)
    return share(pruned, sorted(kept, key=lambda p: (-p.score, p.index)))


@torch.no_grad()
def prune_and_share(
    model: nn.Module, plan: PrunePlan, config: PearConfig | None = None, inputs: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Apply `plan`: drop pruned adapters, point pruned positions at their shared
    adapter (with a gate at 1.0 there when `config.gate` is 'scalar' or 'channel'), and keep
    the pruned knowledge as `config.knowledge` says.

    inputs: what each position's adapter is fed (`capture_inputs`), needed only by the
    'distill' knowledge checkpoint, which fits each shared adapter to those outputs.
    """
    state = pear_state(model)
    config = config or state.config
    if state.pruned:
        raise PearError("this model was already pruned; prune_and_share runs once")
    knowledge = KNOWLEDGE.get(config.knowledge)()
    if knowledge.needs_inputs and plan.shares:
        missing = [n for n in [*plan.shares, *plan.shares.values()] if inputs is None or n not in inputs]
        if missing:
            raise PearError(
                f"knowledge={config.knowledge!r} needs the adapter inputs at every sharing position "
                f"(pear.capture_inputs(model, batches)); missing {sorted(set(missing))[:4]}"
            )
    sl = slots(model)
    _check_plan(plan, sl)
    for name, slot in sl.items():
        slot.info.importance = plan.scores.get(name)

    receivers: dict[str, list[str]] = {}
    for p, k in plan.shares.items():
        receivers.setdefault(k, []).append(p)
    for k, ps in receivers.items():
        weights = _weights([plan.scores[k]] + [plan.scores[p] for p in ps])
        donors = [sl[p].adapter for p in ps]
        # inputs holds every sharing position when the mode needs them (checked above).
        fed = [inputs[n] for n in [k, *ps]] if knowledge.needs_inputs and inputs is not None else None
        knowledge.absorb(sl[k].adapter, donors, weights, fed, config)

    for p in plan.pruned:
        _prune(sl[p], p, sl, plan.shares.get(p), knowledge.keeps_pruned, config.gate)
    if config.gate != state.config.gate:  # the saved config must say what the model now holds
        state.config = dataclasses.replace(state.config, gate=config.gate)
    state.pruned = True
    state.extra["plan"] = plan.to_dict()
    return model


def _check_plan(plan: PrunePlan, sl: dict[str, PearSlot]) -> None:
    """PearError unless `plan` covers exactly the model's positions and shares only adapters
    of equal shapes, from kept to pruned positions."""
    if set(plan.pruned) | set(plan.kept) != set(sl) or set(plan.pruned) & set(plan.kept):
        raise PearError("the prune plan's positions do not match the model's positions")
    bad = {p: k for p, k in plan.shares.items() if p not in plan.pruned or k not in plan.kept}
    if bad:
        raise PearError(f"the prune plan shares must map pruned -> kept positions; got {bad}")
    for p, k in plan.shares.items():
        if sl[p].info.signature != sl[k].info.signature:
            raise PearError(
                f"cannot share {k} into {p}: adapter shapes differ ({sl[k].info.signature} vs {sl[p].info.signature})"
            )


def _prune(
    slot: PearSlot, name: str, sl: dict[str, PearSlot], shared: str | None, keep_frozen: bool, gate: str
) -> None:
    """Prune position `name`: its adapter kept frozen with `keep_frozen`, and the slot calling
    the adapter of position `shared` (through a new gate unless `gate` is 'none'), or none."""
    old = slot.adapter
    if keep_frozen and old is not None:
        old.requires_grad_(False)
        slot.frozen = old
    slot.adapter = sl[shared].adapter if shared is not None else None
    if slot.adapter is not None and gate != "none":
        slot.gate = gates.new(gate, slot.adapter)
    slot.info.source = shared if shared is not None else name
    slot.info.pruned = True


def _weights(scores: list[float]) -> list[float]:
    """Importance scores as weights summing to 1 (equal weights when no score is positive)."""
    w = [max(0.0, float(x)) for x in scores]
    total = sum(w)
    if total <= 0.0:  # no signal at all: an unweighted mean keeps every adapter's share
        return [1.0 / len(w)] * len(w)
    return [x / total for x in w]


@torch.no_grad()
def capture_inputs(model: nn.Module, batches, max_rows: int = 8192) -> dict[str, torch.Tensor]:
    """What each position's adapter is fed (the sub-layer's input, or its output for sequential
    adapters) over `batches` of images, for the 'distill' knowledge checkpoint. Token inputs are
    flattened to rows and thinned evenly to at most `max_rows` per position (an adapter acts on
    each token alone); feature maps are kept whole."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, slot in slots(model).items():

        def keep(t: torch.Tensor, name: str = name) -> None:
            # fp32, whatever autocast computed them in: the fit runs on the fp32 adapters.
            t = t.detach().float()
            captured.setdefault(name, []).append(t.reshape(-1, t.shape[-1]) if t.ndim == 3 else t)

        if slot.mode == "parallel":
            hooks.append(slot.register_forward_pre_hook(lambda mod, args, keep=keep: keep(args[0])))
        else:
            hooks.append(slot.base.register_forward_hook(lambda mod, args, out, keep=keep: keep(out)))
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = {}
    for name, parts in captured.items():
        t = torch.cat(parts)
        if t.ndim == 2 and len(t) > max_rows:
            t = t[torch.linspace(0, len(t) - 1, max_rows).long()]
        out[name] = t
    return out


def prune_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> int:
    """Drop parameters that no longer train (pruned or frozen) from `optimizer`,
    with their state; surviving (and shared) adapters keep theirs. The gates pruning made
    (PearConfig.gate) join it (`pear.gates.add_to_optimizer`: the first group without weight
    decay), so that they train. Returns how many parameters were dropped."""
    live = {id(p) for p in model.parameters() if p.requires_grad}
    dropped = 0
    for group in optimizer.param_groups:
        keep = []
        for p in group["params"]:
            if id(p) in live:
                keep.append(p)
            else:
                optimizer.state.pop(p, None)
                dropped += 1
        group["params"] = keep
    gates.add_to_optimizer(optimizer, list(gate_params(model).values()))
    return dropped
