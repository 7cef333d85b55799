"""The same-run rule: a run's recorded options (RUN/args.yaml) against given ones.

A run is the same run (to resume, to skip as finished, to list or aggregate) when the options
that change what it computes are equal (`changed_options`); the data root compares by the
digest of its task lists (`task_lists_digest`, `other_data`), so a run folder moved to another
machine takes its data given again. `pear.harness.run.options` re-exports these names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import ADDED_DEFAULTS
from ...errors import PearError
from .flags import flag_name

if TYPE_CHECKING:
    from .options import TrainConfig


def flat_options(d: dict) -> dict:
    """A TrainConfig mapping (nested or flat Pear options) as one flat dict, Pear
    options under their own names: the form in which two runs' options compare."""
    d = dict(d)
    pear = d.pop("pear", None) or {}
    flat = {**d, **{k: v for k, v in pear.items() if k != "seed"}}
    return {**flat, **{k: flat.get(k, v) for k, v in ADDED_DEFAULTS.items()}}  # to_dict omits them at their default


# Options that change how or where a run executes, not what it computes: a run is the
# same run (to resume, to skip as finished, to list or aggregate) under options that differ
# from its recorded ones in these, in nothing else. The data root compares by what it holds
# (`other_data`): its path changes when folders move between machines.
EXECUTION_FIELDS = (
    "out",
    "task_lists",
    "device",
    "workers",
    "cache_gb",
    "progress",
    "overwrite",
    "resume",
    "eval_batch_size",
    "compile",
    "deterministic",
    "tensorboard",
)


def changed_options(
    recorded: dict, cfg: TrainConfig, ignore: tuple[str, ...] = ()
) -> dict[str, tuple[Any, Any, str | None]]:
    """The same-run rule: {option: (recorded value, value in `cfg`, why or None)} for every
    option that changes the result and differs (`ignore`: options not to compare). Both sides
    are read as TrainConfig, so an option added later compares with its default and an earlier
    method alias with today's name; a weights path compares resolved, the data root by its task
    lists. PearError when the recorded options are not valid options."""
    from .options import TrainConfig  # the options module re-exports this one's names

    try:
        old = TrainConfig.from_dict({**recorded, "resume": False, "overwrite": False})
    except (PearError, TypeError) as exc:
        raise PearError(f"its recorded options are not valid ({exc})") from None
    old_flat, new_flat = flat_options(old.to_dict()), flat_options(cfg.to_dict())
    out: dict[str, tuple[Any, Any, str | None]] = {}
    for key, value in new_flat.items():
        before = old_flat.get(key)
        if key in EXECUTION_FIELDS or key in ignore:
            continue
        if key == "data":
            try:
                why = other_data(old.data, old.task_lists, value, cfg.task)
            except (OSError, ValueError) as exc:  # a recorded path no file system takes (a NUL byte)
                raise PearError(f"its recorded --data {before!r} is not a path ({exc})") from None
            if why:
                out[key] = (before, value, why)
            continue
        if key == "weights" and before is not None and value is not None:
            before, value = str(Path(before).resolve()), str(Path(value).resolve())
        if before != value:
            out[key] = (before, value, None)
    return out


def differences(recorded: dict, cfg: TrainConfig) -> list[str]:
    """`changed_options` as '--flag VALUE (the run has RECORDED)', one per option."""
    return [
        why or f"{flag_name(key)} {value!r} (the run has {before!r})"
        for key, (before, value, why) in changed_options(recorded, cfg).items()
    ]


def task_lists_digest(root: str | Path, task: str) -> str | None:
    """SHA-256 over the list files (and classes.txt) of `task` under `root`; None where there is no such task."""
    from ...atomic import sha256_file
    from ..datasets.vtab import SPLITS, task_info

    try:
        task_dir = task_info(root, task).dir
    except PearError:
        return None
    digest = hashlib.sha256()
    for name in (*(f"{s}.txt" for s in SPLITS), "classes.txt"):
        if (task_dir / name).is_file():
            digest.update(f"{name} {sha256_file(task_dir / name)}\n".encode())
    return digest.hexdigest()


def other_data(recorded: str, recorded_digest: str | None, given: str, task: str) -> str | None:
    """Why the data root `given` is not the one a run recorded (`recorded`, its task lists' digest
    `recorded_digest`), or None: another path holding the same task lists is the same data (a run
    folder moved to another machine, its data given again)."""
    if Path(recorded).resolve() == Path(given).resolve():
        return None
    want = recorded_digest or task_lists_digest(recorded, task)
    if want is None:
        return (
            f"--data {given!r}: the run's data root {recorded!r} is gone and its args.yaml (written by an "
            f"earlier Pear) records no digest of its task lists to check {given!r} against"
        )
    if task_lists_digest(given, task) != want:
        return f"--data {given!r} holds other task lists for {task!r} than the run's data root {recorded!r}"
    return None
