"""The map of a backbone's structure, one entry per family.

A family says, for the models it matches: which sub-layers are adapter positions
(`candidates`) and the layers LoRA-kind adapters adapt (`lora_candidates`), the shapes an
adapter there needs (`shapes`, `lora_shapes`), which adapter module sits there
(`make_adapter`), what its adapters may read (`modes`: a sub-layer's input, 'parallel', or
its output, 'sequential'), the task head modules that train beside the adapters
(`head_modules`: several on a distilled DeiT, head and head_dist) and the layers peft's
LoRA targets (`lora_targets`). `pear.attach`, the checkpoint and the harness's LoRA ask
this map and decide nothing themselves; which of a family's positions an adapter kind
takes is the kind's to say (pear.adapter_kinds).

Adding a family is one subclass of `Family` here (or in your own code), decorated with
`@register_family("name")`, as timm's `register_model`; `FAMILIES` is their
`pear.registry.Registry`. Families registered later are asked first, so an entry can take
over models that a built-in one would match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .adapter_kinds import MODES, kind_of
from .bottlenecks import Bottleneck, ConvBottleneck
from .config import PearConfig
from .errors import PearError
from .registry import Registry


@dataclass(frozen=True)
class Candidate:
    """One position a model offers: `parent.<attr>` is the sub-layer a slot wraps."""

    name: str  # dotted position name, e.g. 'blocks.3.attn'
    parent: nn.Module
    attr: str
    depth: int  # block index, for the 'nearest' share policy and plots
    kind: str = "block"  # 'attn', 'mlp', 'qkv', 'block', ...


class Family:
    """A backbone family. The defaults suit token models with linear adapters and timm's
    `get_classifier()` head; subclasses override what differs."""

    name = ""
    description = ""  # what models it takes, for the error naming every family
    lora_targets = ""  # peft's target_modules regex
    modes: tuple[str, ...] = MODES  # what its adapters may read (pear.adapter_kinds.MODES)

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def candidates(self, model: nn.Module, cfg: PearConfig) -> list[Candidate]:
        raise NotImplementedError

    def shapes(self, model: nn.Module, bases: list[nn.Module], cfg: PearConfig) -> list[tuple[int, int, int]]:
        """(in width, out width, stride) of the adapter at each candidate's sub-layer."""
        raise NotImplementedError

    def lora_candidates(self, model: nn.Module, cfg: PearConfig) -> list[Candidate]:
        """The linear layers a LoRA-kind adapter adapts (PearConfig.adapter='lora'); the
        default family offers none."""
        raise PearError(
            f"PearConfig.adapter={cfg.adapter!r} adapts the layers LoRA targets, which "
            f"{self.description or type(self).__name__} do not offer Pear's adapters; use "
            f"adapter='parallel'"
        )

    def lora_shapes(self, model: nn.Module, bases: list[nn.Module], cfg: PearConfig) -> list[tuple[int, int, int]]:
        """(in width, out width, stride) at each of `lora_candidates`' linear layers."""
        return [(_features(b, "in_features"), _features(b, "out_features"), 1) for b in bases]

    def make_adapter(
        self, cfg: PearConfig, cand: Candidate, din: int, dout: int, stride: int
    ) -> tuple[nn.Module, tuple]:
        """(adapter module, signature): adapters of equal signature can be shared. The
        activation and biases are the adapter kind's (pear.adapter_kinds)."""
        kind = kind_of(cfg)
        adapter = Bottleneck(
            din, dout, cfg.rank, cfg.scale, act=kind.act(cfg), zero_init=cfg.init == "zero", bias=kind.bias
        )
        return adapter, ("linear", din, dout)

    def head_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Dotted name -> module of each task head, in order; the first is the main one."""
        get_classifier = getattr(model, "get_classifier", None)  # timm's; nn.Module has none
        head = get_classifier() if get_classifier is not None else None
        found = [h for h in (head if isinstance(head, (tuple, list)) else [head]) if isinstance(h, nn.Module)]
        names = {id(m): n for n, m in model.named_modules()}  # each module once, under its first name
        return {names[id(h)]: h for h in found if id(h) in names}


FAMILIES: Registry[Family] = Registry("backbone family", "backbone family")


def register_family(name: str) -> Callable[[type[Family]], type[Family]]:
    """Class decorator: register a `Family` subclass under `name` (one instance of it, in
    `FAMILIES`; its `description` is the entry's help). Returns the class unchanged."""

    def add(cls: type[Family]) -> type[Family]:
        family = cls()
        family.name = name
        FAMILIES.add(name, family, help=family.description)
        return cls

    return add


def find_family(model: nn.Module) -> Family | None:
    return next((f for f in reversed(FAMILIES.values()) if f.matches(model)), None)


def family_of(model: nn.Module) -> Family:
    """The family of `model` (a plain module, not a compiled/DDP wrapper); PearError if none."""
    family = find_family(model)
    if family is None:
        raise PearError(
            f"pear.attach supports {'; '.join(f.description for f in FAMILIES.values())}; "
            f"{type(model).__name__} is none of these (has it a 'blocks' list?). Another kind of "
            f"backbone needs an entry in pear.families (register_family)"
        )
    return family


def heads(model: nn.Module) -> dict[str, nn.Module]:
    """The task head modules of `model` by name (those of timm's get_classifier() for a
    model of no family, as a plain linear or full fine-tuning run may use)."""
    return (find_family(model) or _GENERIC).head_modules(model)


def head_names(model: nn.Module) -> list[str]:
    return list(heads(model))


_GENERIC = Family()


_BlockList = nn.Sequential | nn.ModuleList


def _blocks(model: nn.Module) -> nn.Sequential | nn.ModuleList | None:
    """model.blocks when it is a non-empty list of blocks (a module that is no list has no len)."""
    blocks = getattr(model, "blocks", None)
    return blocks if isinstance(blocks, _BlockList) and len(blocks) > 0 else None


def _features(layer: object, attr: str) -> int:
    """A layer's width attribute (in_features, embed_dim, ...), read duck-typed as it always was."""
    return int(getattr(layer, attr))


def _stage(stage: nn.Module) -> nn.Sequential | nn.ModuleList:
    if not isinstance(stage, _BlockList):
        raise PearError(f"model.blocks holds a {type(stage).__name__}, not a stage (a list of blocks)")
    return stage


def _block_list(model: nn.Module) -> nn.Sequential | nn.ModuleList:
    blocks = _blocks(model)
    if blocks is None:  # matches() said the family fits; a model changed since has no blocks to adapt
        raise PearError(f"{type(model).__name__} has no model.blocks list to adapt")
    return blocks


def _token_blocks(model: nn.Module) -> bool:
    blocks = _blocks(model)
    return blocks is not None and hasattr(blocks[0], "attn") and hasattr(blocks[0], "mlp")


@register_family("vit")
class ViTFamily(Family):
    """timm VisionTransformer-style models: adapters at blocks[i].attn / .mlp, LoRA-style
    adapters at blocks[i].attn.qkv."""

    description = "timm VisionTransformer-style models (model.blocks[i].attn/.mlp)"
    lora_targets = r".*blocks\.\d+\.attn\.qkv"

    def matches(self, model: nn.Module) -> bool:
        return _token_blocks(model)

    def candidates(self, model: nn.Module, cfg: PearConfig) -> list[Candidate]:
        return [
            Candidate(f"blocks.{i}.{kind}", block, kind, i, kind)
            for i, block in enumerate(_block_list(model))
            for kind in cfg.sublayers
        ]

    def lora_candidates(self, model: nn.Module, cfg: PearConfig) -> list[Candidate]:
        return [
            Candidate(f"blocks.{i}.attn.qkv", block.get_submodule("attn"), "qkv", i, "qkv")
            for i, block in enumerate(_block_list(model))
        ]

    def shapes(self, model: nn.Module, bases: list[nn.Module], cfg: PearConfig) -> list[tuple[int, int, int]]:
        return [
            (_features(model, "embed_dim") if hasattr(model, "embed_dim") else _features(b.fc1, "in_features"),) * 2
            + (1,)
            for b in bases
        ]


@register_family("staged_cnn")
class StagedCNNFamily(Family):
    """EfficientNet/MobileNet-style CNNs: one parallel conv adapter per block of
    model.blocks[stage][i] (a block may change the shape, so its adapter reads the block's
    input); shapes from one small dummy forward pass."""

    description = "EfficientNet/MobileNet-style CNNs (model.blocks[stage][i])"
    lora_targets = r".*blocks\.\d+\.\d+\.(conv_pwl|conv_pw)"
    modes = ("parallel",)

    def matches(self, model: nn.Module) -> bool:
        return _blocks(model) is not None and not _token_blocks(model)

    def candidates(self, model: nn.Module, cfg: PearConfig) -> list[Candidate]:
        stages = [(s, j, stage) for s, stage in enumerate(_block_list(model)) for j, _ in enumerate(_stage(stage))]
        return [Candidate(f"blocks.{s}.{j}", stage, str(j), depth) for depth, (s, j, stage) in enumerate(stages)]

    def shapes(self, model: nn.Module, bases: list[nn.Module], cfg: PearConfig) -> list[tuple[int, int, int]]:
        return [(i[1], o[1], max(1, round(i[-1] / o[-1]))) for i, o in _probe_shapes(model, bases)]

    def make_adapter(
        self, cfg: PearConfig, cand: Candidate, din: int, dout: int, stride: int
    ) -> tuple[nn.Module, tuple]:
        kind = kind_of(cfg)
        adapter = ConvBottleneck(
            din,
            dout,
            cfg.rank,
            cfg.scale,
            stride=stride,
            act=kind.act(cfg),
            zero_init=cfg.init == "zero",
            bias=kind.bias,
        )
        return adapter, ("conv", din, dout, stride)


def _probe_shapes(model: nn.Module, modules: list[nn.Module]) -> list[tuple[torch.Size, torch.Size]]:
    """Input/output shapes of CNN blocks from one small dummy forward pass."""
    shapes: dict[int, tuple] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, k=k: shapes.__setitem__(k, (i[0].shape, o.shape)))
        for k, m in enumerate(modules)
    ]
    p = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [shapes[k] for k in range(len(modules))]
