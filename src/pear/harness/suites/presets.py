"""`pear suite --preset NAME`: the tasks and the recipe (TrainConfig options) of a benchmark,
and the line of `pear suite --help` that says so. Kept apart from suite.py so that the CLI's
parser is built without importing the training code."""

from __future__ import annotations

from pathlib import Path

from ...errors import PearError
from ..datasets.vtab_tasks import TASK_ALIASES, VTAB_TASKS

PRESETS: dict[str, dict] = {
    # The paper-style VTAB-1k recipe: 100 epochs, AdamW lr 1e-3, wd 1e-4, batch 64, cosine
    # with 10 warm-up epochs (the scoring window before Pear prunes), 224 px.
    "vtab1k": {
        "tasks": list(VTAB_TASKS),
        "recipe": {"epochs": 100, "warmup_epochs": 10, "lr": 1e-3, "wd": 1e-4, "batch_size": 64, "img_size": 224},
        "help": "the 19 VTAB-1k tasks (every folder must be in --data) with the paper-style recipe",
    }
}


def preset_help() -> str:
    """Each preset's name, what it runs and its recipe, as `pear suite --help` prints them."""
    parts = []
    for name, p in PRESETS.items():
        recipe = ", ".join(
            f"{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"{k.replace('_', '-')} {v}"
            for k, v in p["recipe"].items()
        )
        parts.append(f"{name}: {p['help']} ({recipe})")
    return "; ".join(parts) + "; flags override the recipe"


def preset_named(name: str) -> dict:
    """PRESETS[name]; PearError naming the presets there are otherwise."""
    if name not in PRESETS:
        raise PearError(f"unknown --preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def check_preset(name: str, data: str) -> list[str]:
    """The tasks of preset `name`; every task folder must be in `data` (one message names all missing)."""
    tasks = preset_named(name)["tasks"]
    root = Path(data)
    spellings = {t: [t, *(a for a, c in TASK_ALIASES.items() if c == t)] for t in tasks}
    missing = [t for t in tasks if not any((root / s).is_dir() for s in spellings[t])]
    if missing:
        shown = ", ".join(" or ".join(spellings[t]) for t in missing)
        raise PearError(
            f"--preset {name}: {root} lacks {len(missing)} of the {len(tasks)} task folders: {shown}. "
            f"Lay each out as {root}/<task>/{{train800,val200,train800val200,test}}.txt + images/ "
            f"(README: VTAB-1k in one command)"
        )
    return tasks
