"""Adapters and the positions they sit at.

An adapter is a small bottleneck `s * up(act(down(x)))`. A *position* is a sub-layer of
the backbone (a ViT block's attention or MLP, its qkv projection for LoRA, or a whole
CNN block) that `attach` wraps in a `PearSlot`. A slot calls its own adapter until
pruning; afterwards it may call another position's adapter (the very same module, so
gradients from every position that uses it add up), scaled there by a learned gate with
`PearConfig.gate` (pear.gates), and, with the `frozen` knowledge checkpoint, a frozen copy
of its old adapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .adapter_kinds import MODES, AdapterKind, kind_of
from .bottlenecks import Bottleneck, ConvBottleneck  # noqa: F401  (their home before pear.bottlenecks)
from .config import PearConfig
from .errors import PearError
from .families import Candidate, Family, family_of, heads
from .gates import gated


class PearSlot(nn.Module):
    """Wraps one backbone sub-layer: `base(x)` plus whatever adapters the slot holds.

    `mode` (pear.adapter_kinds.MODES, the adapter kind's) 'parallel' feeds the adapter the
    sub-layer's input, 'sequential' its output.
    `adapter` is None after plain pruning; `gate` scales a shared adapter's output at this
    position (PearConfig.gate; None: no gate); `frozen` is the pruned adapter kept as a
    frozen residual (knowledge checkpoint 'frozen').
    """

    def __init__(self, base: nn.Module, adapter: nn.Module, mode: str, info: SlotInfo) -> None:
        super().__init__()
        if mode not in MODES:
            raise PearError(f"an adapter's mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.base = base
        self.adapter: nn.Module | None = adapter
        self.frozen: nn.Module | None = None
        self.gate: nn.Parameter | None
        self.register_parameter("gate", None)
        self.mode = mode
        self.info = info

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base(x, *args, **kwargs)
        src = x if self.mode == "parallel" else y
        if self.adapter is not None:
            out = self.adapter(src)
            y = y + (out if self.gate is None else gated(out, self.gate, self.adapter))
        if self.frozen is not None:
            y = y + self.frozen(src)
        return y

    def extra_repr(self) -> str:
        i = self.info
        state = "pruned" if i.pruned else "kept"
        share = f", shares={i.source}" if i.source != i.name else ""
        gate = f", gate={list(self.gate.shape)}" if self.gate is not None else ""
        return f"position={i.name}, mode={self.mode}, {state}{share}{gate}"


@dataclass
class SlotInfo:
    """What Pear knows about a position (kept on the slot, saved in the checkpoint)."""

    name: str
    kind: str  # 'attn', 'mlp', 'qkv' or 'block'
    depth: int  # block index, for the 'nearest' share policy and plots
    signature: tuple  # adapters of equal signature are interchangeable (shareable)
    source: str = ""  # position whose adapter this slot runs; itself unless shared
    pruned: bool = False
    importance: float | None = None

    def __post_init__(self) -> None:
        self.source = self.source or self.name


@dataclass
class PearState:
    """Pear's bookkeeping on an attached model (`model.pear_state`)."""

    config: PearConfig
    positions: list[str]
    unpruned_adapter_params: int
    pruned: bool = False
    extra: dict = field(default_factory=dict)


def adapter_tensor_ids(model: nn.Module) -> set[int]:
    """ids of every tensor Pear put into `model`: each slot's adapter, frozen knowledge
    checkpoint and gate; what is left is the backbone (and the head)."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, PearSlot):
            for sub in (m.adapter, m.frozen):
                if sub is not None:
                    ids.update(id(t) for t in sub.parameters())
            if m.gate is not None:
                ids.add(id(m.gate))
    return ids


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DDP wrappers."""
    while True:
        if isinstance(orig := getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            model = orig
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def pear_state(model: nn.Module) -> PearState:
    state = getattr(unwrap(model), "pear_state", None)
    if state is None:
        raise PearError("model has no Pear adapters: call pear.attach(model, config) first")
    return state


def slots(model: nn.Module) -> dict[str, PearSlot]:
    """Position name -> slot, in model order."""
    return {m.info.name: m for m in unwrap(model).modules() if isinstance(m, PearSlot)}


def positions(model: nn.Module) -> list[str]:
    """Names of the adapted positions of an attached model, in model order."""
    return list(slots(model))


def gate_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """Each shared position's gate (PearConfig.gate), keyed by position; empty without gates."""
    return {name: slot.gate for name, slot in slots(model).items() if slot.gate is not None}


def adapter_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Each unique trainable adapter once, keyed by the position that owns it."""
    out: dict[str, nn.Module] = {}
    for name, slot in slots(model).items():
        if slot.adapter is not None and slot.info.source == name:
            out[name] = slot.adapter
    return out


def attach(model: nn.Module, config: PearConfig | None = None) -> PearSummary:
    """Insert adapters at the configured positions, freeze the backbone, keep the head
    trainable. The model is modified in place; the return value is its `PearSummary`
    (one line, so a notebook cell ending in `pear.attach(...)` does not print the whole
    model)."""
    config = config or PearConfig()
    model = unwrap(model)
    if getattr(model, "pear_state", None) is not None:
        raise PearError("model already has Pear adapters attached")
    family, kind = family_of(model), kind_of(config)
    cands = _selected(model, family, kind, config)
    bases = [getattr(c.parent, c.attr) for c in cands]
    dims = kind.shapes(family, model, bases, config)
    _check_size(model, config, [c.name for c in cands], dims)
    for p in model.parameters():
        p.requires_grad_(False)
    p = next(model.parameters())
    for cand, base, (din, dout, stride) in zip(cands, bases, dims):
        adapter, sig = kind.make(family, config, cand, din, dout, stride)
        adapter.to(device=p.device, dtype=p.dtype)
        info = SlotInfo(cand.name, cand.kind, cand.depth, sig)
        setattr(cand.parent, cand.attr, PearSlot(base, adapter, kind.mode, info))
    for head in heads(model).values():
        head.requires_grad_(True)
    # setattr: nn.Module's typing takes only tensors and modules as attributes.
    setattr(
        model,
        "pear_state",
        PearState(
            config=config,
            positions=[c.name for c in cands],
            unpruned_adapter_params=sum(count_params(a) for a in adapter_modules(model).values()),
        ),
    )
    return summary(model)


def _selected(model: nn.Module, family: Family, kind: AdapterKind, config: PearConfig) -> list[Candidate]:
    """The positions of `kind` in `model` that PearConfig.blocks and .target select;
    PearError when the family takes no adapters of the kind's mode, or none is selected."""
    if kind.mode not in family.modes:
        raise PearError(
            f"PearConfig.adapter={config.adapter!r} feeds its adapters the sub-layer's "
            f"{'output' if kind.mode == 'sequential' else 'input'} ({kind.mode}), which "
            f"{family.description or family.name} do not take: they take "
            f"{' or '.join(family.modes)} adapters"
        )
    cands = kind.candidates(family, model, config)
    if config.blocks is not None:
        lo, hi = config.blocks
        cands = [c for c in cands if lo <= c.depth < hi]
    if config.target is not None:
        cands = [c for c in cands if re.search(config.target, c.name)]
    if not cands:
        raise PearError(
            f"PearConfig selects no positions (adapter={config.adapter!r}, sublayers={config.sublayers!r}, "
            f"blocks={config.blocks!r}, target={config.target!r}) in {type(model).__name__}"
        )
    return cands


def _check_size(model: nn.Module, config: PearConfig, names: list[str], dims: list[tuple[int, int, int]]) -> None:
    """Refuse, before allocating anything, adapters larger than the backbone itself (a
    typo such as rank=1000000000 would otherwise ask for terabytes)."""
    adapter_params = sum(config.rank * (din + dout) for din, dout, _ in dims)
    backbone_params = sum(t.numel() for t in model.parameters())
    if adapter_params > backbone_params:
        name, (din, dout, _) = names[0], dims[0]
        raise PearError(
            f"adapter rank {config.rank} (--rank, PearConfig.rank) would give adapters of {adapter_params:,} parameters "
            f"({len(names)} positions, e.g. {name}: {din} -> {config.rank} -> {dout}), more than the "
            f"{backbone_params:,} of the backbone itself; a bottleneck's rank is at most its width "
            f"({max(din, dout)})"
        )


def classifier(model: nn.Module) -> nn.Module | None:
    """The task head that trains beside the adapters (pear.families.heads): one module, or
    a ModuleList of several (head and head_dist on a distilled DeiT)."""
    found = list(heads(unwrap(model)).values())
    if len(found) > 1:
        return nn.ModuleList(found)
    return found[0] if found else None


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True, repr=False)
class PearSummary:
    """Counts of an attached model, printed on one line (peft's print_trainable_parameters).

    Until 0.1 `attach` returned the model itself; code that still uses its return value as
    the model keeps working (attribute access and calls go to the model), with a warning."""

    positions: int
    kept: int
    shared: int
    pruned: int
    adapter_params: int
    trainable_params: int
    all_params: int
    model: nn.Module = field(compare=False)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / max(1, self.all_params)

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable_params:,} || all params: {self.all_params:,} || "
            f"trainable%: {self.trainable_percent:.4f} || Pear positions: {self.positions} "
            f"({self.kept} own an adapter, {self.shared} shared, {self.pruned} pruned), "
            f"adapter params: {self.adapter_params:,}"
        )

    def __repr__(self) -> str:
        return f"PearSummary({self})"

    def _legacy(self) -> nn.Module:
        import warnings

        warnings.warn(
            "pear.attach modifies the model in place and returns a PearSummary; use the model you "
            "passed to it (the summary stands in for it until the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
        return self.model

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "model":  # copy/pickle probes; and no recursion while unpickling
            raise AttributeError(name)
        return getattr(self._legacy(), name)

    def __call__(self, *args, **kwargs):
        return self._legacy()(*args, **kwargs)


def summary(model: nn.Module) -> PearSummary:
    """The one-line counts of an attached model: positions kept / shared / pruned, adapter
    parameters (each shared adapter once, and the gates of PearConfig.gate), trainable and all
    parameters."""
    pear_state(model)  # PearError unless adapters are attached
    sl = slots(model)
    shared = sum(1 for n, s in sl.items() if s.adapter is not None and s.info.source != n)
    pruned = sum(1 for s in sl.values() if s.adapter is None)
    params = list(unwrap(model).parameters())  # each shared module once
    return PearSummary(
        positions=len(sl),
        kept=len(sl) - shared - pruned,
        shared=shared,
        pruned=pruned,
        adapter_params=sum(count_params(a) for a in adapter_modules(model).values())
        + sum(g.numel() for g in gate_params(model).values()),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        all_params=sum(p.numel() for p in params),
        model=unwrap(model),
    )


def print_trainable_parameters(model: nn.Module) -> None:
    """Print `summary(model)`: trainable and all parameters, as peft prints them, and Pear's positions."""
    print(summary(model))
