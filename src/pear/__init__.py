"""Pear: pruning and sharing adapters for parameter-efficient fine-tuning of vision models.

    model = timm.create_model("vit_base_patch16_224", num_classes=10)
    pear.attach(model, pear.PearConfig(prune_ratio=0.5))
    tracker = pear.ImportanceTracker(model)          # tracker.update() after each backward
    p = pear.plan(tracker.scores(), config, model)   # who is pruned, who shares whom
    pear.prune_and_share(model, p)
    pear.report(model)                               # per-position table + stored bytes
"""

from .adapters import attach, positions, slots, unwrap
from .checkpoint import load, save
from .config import PearConfig
from .errors import PearError
from .importance import ImportanceTracker
from .multitask import MultiTaskModel
from .pruning import PrunePlan, plan, prune_and_share, prune_optimizer
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
    "plan",
    "prune_and_share",
    "prune_optimizer",
    "report",
    "share_map",
    "save",
    "load",
    "MultiTaskModel",
]
__version__ = "0.1.0"
