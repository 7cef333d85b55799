"""Pear: pruning and sharing adapters for parameter-efficient fine-tuning of vision models.

    model = timm.create_model("vit_base_patch16_224", num_classes=10)
    pear.attach(model, pear.PearConfig(prune_ratio=0.5))
    tracker = pear.ImportanceTracker(model)          # tracker.update() after each backward
    p = pear.make_plan(tracker.scores(), config, model)  # who is pruned, who shares whom
    pear.prune_and_share(model, p)
    pear.report(model)                               # per-position table + stored tensor bytes
"""

from importlib import metadata as _metadata

from .adapters import attach, positions, slots, unwrap
from .checkpoint import load, save
from .config import PearConfig
from .errors import PearError
from .importance import ImportanceTracker
from .multitask import MultiTaskModel
from .norms import freeze_norm_stats
from .pruning import PrunePlan, capture_inputs, make_plan, prune_and_share, prune_optimizer
from .report import report, share_map

__all__ = [
    "PearConfig",
    "PearError",
    "attach",
    "positions",
    "slots",
    "unwrap",
    "ImportanceTracker",
    "PrunePlan",
    "make_plan",
    "prune_and_share",
    "capture_inputs",
    "prune_optimizer",
    "freeze_norm_stats",
    "report",
    "share_map",
    "save",
    "load",
    "MultiTaskModel",
]
try:
    __version__ = _metadata.version("pear-peft")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    # `pear.plan` was this verb's name until 0.1; it reads like the PrunePlan it returns.
    if name == "plan":
        import warnings

        warnings.warn("pear.plan is deprecated and will be removed in the next release; use pear.make_plan",
                      DeprecationWarning, stacklevel=2)
        return make_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
