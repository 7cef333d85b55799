"""Adapter kinds (`PearConfig.adapter`): how an adapter sits at a position, one class each.

A kind is an `AdapterKind` subclass registered with `@ADAPTERS.register("name", help=...)`;
`PearConfig(adapter="name")`, `pear train --adapter name` and the suite's
`METHOD@adapter=name` then take it. It says three things, which `pear.attach` asks it:

- where its positions are (`candidates`, `shapes`): by default the family's sub-layer
  positions (a ViT block's attention and MLP, a CNN's blocks); LoRA's are the layers the
  family's LoRA targets (`blocks[i].attn.qkv` on a ViT);
- what its adapter reads (`mode`): 'parallel', the sub-layer's input (its output is added
  beside the sub-layer's), or 'sequential', the sub-layer's output. A family takes the
  modes in its `modes` (a CNN block changes the shape, so CNNs take only 'parallel');
- which module it is (`make`): by default the family's bottleneck (`Family.make_adapter`:
  linear on tokens, 1x1 convolutions on feature maps) with the kind's activation (`act`)
  and biases (`bias`); LoRA's has no nonlinearity and no biases, so it is `U D x`, a
  low-rank update of the layer's weight.

`PearConfig`'s validation imports this module without torch, so nothing here imports it;
the families build the modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from .families import Candidate, Family

# What an adapter is fed: the sub-layer's input ('parallel') or its output ('sequential').
MODES = ("parallel", "sequential")

ADAPTERS: Registry[type[AdapterKind]] = Registry("adapter kind", "PearConfig.adapter")


class AdapterKind:
    """The default: the family's bottleneck, with the config's activation and biases, at
    each of the family's sub-layer positions, fed the sub-layer's input. Entries are the
    classes; callers make an instance (`kind_of`)."""

    mode = "parallel"  # one of MODES
    bias = True  # whether the bottleneck's projections have biases

    def check(self, config: Any) -> None:
        """Raise PearError when `config` (a PearConfig) cannot use this kind (when the config is made)."""

    def act(self, config: Any) -> str:
        """The bottleneck's activation (a name of PearConfig.act)."""
        return str(config.act)

    def linear(self, config: Any) -> bool:
        """Whether the adapter is one linear map (no nonlinearity): what the 'svd' knowledge
        checkpoint needs (PearConfig refuses it otherwise)."""
        return self.act(config) == "identity"

    def candidates(self, family: Family, model: nn.Module, config: Any) -> list[Candidate]:
        """The positions this kind takes in `model` (before PearConfig.blocks / target select among them)."""
        return family.candidates(model, config)

    def shapes(
        self, family: Family, model: nn.Module, bases: list[nn.Module], config: Any
    ) -> list[tuple[int, int, int]]:
        """(in width, out width, stride) of the adapter at each candidate's sub-layer `bases`."""
        return family.shapes(model, bases, config)

    def make(
        self, family: Family, config: Any, cand: Candidate, din: int, dout: int, stride: int
    ) -> tuple[nn.Module, tuple]:
        """(adapter module, signature) at one position: adapters of equal signature can be shared."""
        return family.make_adapter(config, cand, din, dout, stride)


def kind_of(config: Any) -> AdapterKind:
    """The adapter kind of `config` (a PearConfig), as an instance."""
    return ADAPTERS.get(config.adapter)()


@ADAPTERS.register("parallel", help="AdaptFormer: a bottleneck beside the sub-layer, fed its input")
class Parallel(AdapterKind):
    pass


@ADAPTERS.register(
    "sequential",
    help="Houlsby: a bottleneck after the sub-layer, fed its output; ViTs only, as a CNN block changes the shape",
)
class Sequential(AdapterKind):
    mode = "sequential"


@ADAPTERS.register(
    "lora",
    help="a low-rank update of attn.qkv: a parallel bottleneck without nonlinearity or "
    "biases at the layers LoRA targets, blocks[i].attn.qkv on ViTs; act and sublayers "
    "are ignored",
)
class LoRA(AdapterKind):
    bias = False

    def act(self, config: Any) -> str:
        return "identity"

    def candidates(self, family: Family, model: nn.Module, config: Any) -> list[Candidate]:
        return family.lora_candidates(model, config)

    def shapes(
        self, family: Family, model: nn.Module, bases: list[nn.Module], config: Any
    ) -> list[tuple[int, int, int]]:
        return family.lora_shapes(model, bases, config)
