"""The training methods' names, without torch: option parsing (and so `pear --help`) needs
them, building a model for one (`pear.harness.methods`) needs torch."""

from __future__ import annotations

from ..config import PearConfig

METHODS = ("linear", "full", "adapter", "pear", "prune", "peft-lora", "peft-lora-eq")
LORA_METHODS = ("peft-lora", "peft-lora-eq")
METHOD_ALIASES = {"lora": "peft-lora"}  # earlier names, still accepted
PEAR_METHODS = ("adapter", "pear", "prune")
PRUNING_METHODS = ("pear", "prune")


def canonical_method(method: str) -> str:
    """A method's name, an earlier alias ('lora') resolved."""
    return METHOD_ALIASES.get(method, method)


def pear_config_for(method: str, config: PearConfig) -> PearConfig:
    """The Pear config a method trains with: 'adapter' never prunes, 'prune' never shares."""
    d = config.to_dict()
    if method == "adapter":
        d["prune_ratio"] = 0.0
    elif method == "prune":
        d["share"] = "none"
    return PearConfig.from_dict(d)
