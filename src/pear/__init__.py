"""Pear: pruning and sharing adapters for parameter-efficient fine-tuning of vision models.

    model = timm.create_model("vit_base_patch16_224", num_classes=10)
    pear.attach(model, pear.PearConfig(prune_ratio=0.5))
    tracker = pear.ImportanceTracker(model)          # tracker.update() after each backward
    p = pear.make_plan(tracker.scores(), config, model)  # who is pruned, who shares whom
    pear.prune_and_share(model, p)
    pear.report(model)                               # per-position table + stored tensor bytes

or, from the training step: `pruner = pear.Pruner(model, optimizer, prune_step=N)` and
`pruner.step()` after each backward. `pear.save_pretrained` / `pear.from_pretrained` keep a task.

The names that need torch are imported on first use (PEP 562), so `import pear` and the
`pear` command line's help and option checks do not import it.
"""

import importlib as _importlib
import sys as _sys
import types as _types
from importlib import metadata as _metadata

from . import timm_registry as _timm_registry
from .config import PearConfig
from .errors import PearError

_timm_registry.register()  # timm.create_model("pear_vit_tiny6_patch4_32", pretrained=True) after import pear

# Each torch-backed name of the API -> the submodule that defines it.
_LAZY = {
    "attach": "adapters",
    "positions": "adapters",
    "slots": "adapters",
    "unwrap": "adapters",
    "PearSummary": "adapters",
    "summary": "adapters",
    "print_trainable_parameters": "adapters",
    "ImportanceTracker": "importance",
    "PrunePlan": "pruning",
    "make_plan": "pruning",
    "prune_and_share": "pruning",
    "capture_inputs": "pruning",
    "prune_optimizer": "pruning",
    "freeze_norm_stats": "norms",
    "report": "report",
    "share_map": "report",
    "save": "checkpoint",
    "load": "checkpoint",
    "save_pretrained": "checkpoint",
    "from_pretrained": "checkpoint",
    "MultiTaskModel": "multitask",
    "merge_and_unload": "merge",
    "Pruner": "trainer",
}
_SUBMODULES = frozenset(
    {
        "adapter_kinds",
        "adapters",
        "atomic",
        "bottlenecks",
        "checkpoint",
        "checkpoint_backbone",
        "checkpoint_files",
        "checkpoint_read",
        "cli",
        "config",
        "errors",
        "families",
        "harness",
        "importance",
        "integrations",
        "jsontypes",
        "knowledge",
        "merge",
        "multitask",
        "norms",
        "pruning",
        "registry",
        "report",
        "scorers",
        "sharing",
        "timm_registry",
        "trainer",
    }
)


__all__ = [
    "ImportanceTracker",
    "MultiTaskModel",
    "PearConfig",
    "PearError",
    "PearSummary",
    "PrunePlan",
    "Pruner",
    "attach",
    "capture_inputs",
    "freeze_norm_stats",
    "from_pretrained",
    "load",
    "make_plan",
    "merge_and_unload",
    "positions",
    "print_trainable_parameters",
    "prune_and_share",
    "prune_optimizer",
    "report",
    "save",
    "save_pretrained",
    "share_map",
    "slots",
    "summary",
    "unwrap",
]
try:
    __version__ = _metadata.version("pear-peft")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    # `pear.plan` was this verb's name until 0.1; it reads like the PrunePlan it returns.
    if name == "plan":
        import warnings

        warnings.warn(
            "pear.plan is deprecated and will be removed in the next release; use pear.make_plan",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__("make_plan")
    if name in _SUBMODULES:  # `import pear; pear.checkpoint.read_checkpoint(...)`, as when all were imported
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        # `pear.report` is the function; importing the submodule pear.report (from pear.report
        # import ...) binds the submodule here, as the import system does, and must not replace it.
        if name == "report" and isinstance(value, _types.ModuleType) and value.__name__ == f"{__name__}.report":
            value = value.report
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
