"""The training methods, one registered function each, without torch at import: option
parsing (and so `pear --help`) needs their names and help, building a model for one needs
torch, which each method's function imports when it is called.

A method is a function `(model, config, lora_alpha) -> model to train` decorated with
`@register_method("name", help=..., ...)`; `pear train --method name` and the suite's
grammar (`name`, `name@FIELD=VALUE`) then take it. Its traits say what the harness does
around it: `pear` (Pear adapters: a Pear checkpoint, a per-position report), `prunes` (it
prunes at --prune-epoch), `options` (the Pear options it uses; None: all of them) and
`fixed` (Pear options it sets, whatever is given).

The Pear config a method trains with, its `fixed` options over the given ones, is derived
in one place, `TrainingMethod.config` (`pear_config_for` by the method's name): a run's
`TrainConfig.pear_config()` holds it, and `methods.prepare` hands it to the function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...config import PearConfig
from ...registry import Registry


@dataclass(frozen=True)
class TrainingMethod:
    """A registered training method: its prepare function and the traits the harness reads."""

    prepare: Callable[..., Any]
    pear: bool = False
    prunes: bool = False
    peft: bool = False  # built with HuggingFace peft (an optional package)
    options: tuple[str, ...] | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def config(self, config: PearConfig) -> PearConfig:
        """The Pear config this method trains with: its fixed options over `config` (a new
        config; applied to one it returned, the same again)."""
        return PearConfig.from_dict({**config.to_dict(), **self.fixed})


TRAINING_METHODS: Registry[TrainingMethod] = Registry("training method", "--method")


def register_method(name: str, *, help: str, aliases: Sequence[str] = (), **traits: Any):
    """Decorator: register `prepare(model, config, lora_alpha)` as training method `name`
    (traits: those of `TrainingMethod`; `config` is the one the method trains with, its
    fixed options applied); returns the function unchanged."""

    def add(prepare: Callable[..., Any]) -> Callable[..., Any]:
        TRAINING_METHODS.add(name, TrainingMethod(prepare, **traits), help=help, aliases=aliases)
        return prepare

    return add


@register_method("linear", help="the classifier head only", options=())
def _linear(model, config: PearConfig, lora_alpha: float | None = None):
    from .methods import train_head

    for p in model.parameters():
        p.requires_grad_(False)
    train_head(model)
    return model


@register_method("full", help="every parameter", options=())
def _full(model, config: PearConfig, lora_alpha: float | None = None):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _attach(model, config: PearConfig, lora_alpha: float | None = None):
    """The Pear methods: adapters as `config` (the method's own, `TrainingMethod.config`) says."""
    from ...adapters import attach

    attach(model, config)
    return model


register_method("adapter", help="Pear adapters, never pruned", pear=True, fixed={"prune_ratio": 0.0})(_attach)
register_method("pear", help="Pear adapters + prune-and-share + knowledge checkpoint", pear=True, prunes=True)(_attach)
register_method("prune", help="pear without sharing, the ablation", pear=True, prunes=True, fixed={"share": "none"})(
    _attach
)


@register_method(
    "peft-lora",
    aliases=("lora",),
    peft=True,
    options=("rank",),
    help="HuggingFace peft's LoRA at rank --rank, the peer baseline",
)
def _peft_lora(model, config: PearConfig, lora_alpha: float | None = None):
    from .methods import peft_lora

    return peft_lora(model, config.rank, lora_alpha)


@register_method(
    "peft-lora-eq",
    peft=True,
    help="peft's LoRA at the rank whose trainable parameters come closest to the adapter method's",
)
def _peft_lora_eq(model, config: PearConfig, lora_alpha: float | None = None):
    from .methods import lora_rank, peft_lora

    return peft_lora(model, lora_rank(model, config), lora_alpha)


# The registered names, always current (the tuples these were before the registry).
METHODS = TRAINING_METHODS.view()
LORA_METHODS = TRAINING_METHODS.view(lambda m: m.peft)
METHOD_ALIASES = TRAINING_METHODS.aliases()  # earlier names, still accepted
PEAR_METHODS = TRAINING_METHODS.view(lambda m: m.pear)
PRUNING_METHODS = TRAINING_METHODS.view(lambda m: m.prunes)


def canonical_method(method: str) -> str:
    """A method's name, an earlier alias ('lora') resolved."""
    return TRAINING_METHODS.canonical(method)


def pear_config_for(method: str, config: PearConfig) -> PearConfig:
    """The Pear config a method trains with: its fixed options over `config` ('adapter' never
    prunes, 'prune' never shares; `TrainingMethod.config`). An unknown method fixes nothing."""
    if method in TRAINING_METHODS:
        return TRAINING_METHODS.get(method).config(config)
    return PearConfig.from_dict(config.to_dict())
