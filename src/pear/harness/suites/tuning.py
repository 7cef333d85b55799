"""VTAB-1k's own protocol for one hyper-parameter per method, as `pear suite --tune` runs it.

For each (task, method) with a grid: one run per grid value, trained on train800 and
scored on val200 (the accuracy after its last epoch), at seed `TUNE_SEED`. The value with
the best val200 score (the earlier grid value on a tie) is then used for every seed of
the method's real runs, which train on train800val200 and see the test split once. The
grid, the val200 scores and the choice are written to
`OUT/tuning/<task>/<method>/choice.json` and into the suite's results.

What is tuned: the adapter output scale s for `adapter`, `pear` and `prune` (the Pear
ablations `pear-...` use the value chosen for `pear` on the same task, so they differ
from it in their one option only; a method with @options uses its base method's, e.g.
`prune@prune_ratio=0.9` that of `prune`), and alpha for peft's LoRA. With `--tune-each FIELD`
the values of FIELD that a method's name sets are tuned apart: `prune@prune_ratio=0.9` then has a
choice of its own (its tuning runs under tuning/<task>/prune@prune_ratio=0.9/), and
`pear@prune_ratio=0.9@knowledge=none` uses the choice of `pear@prune_ratio=0.9`. Test accuracy
is never read here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from ...atomic import atomic_write_text
from ...errors import PearError
from ...jsontypes import has_type, wrong_types
from ..files import read_mapping
from ..run.options import PEAR_FIELDS
from ..run.rundir import RunDir
from .grammar import split_name

TUNE_SEED = 0
# s = 16 as well: on sprites_loc the adapters' val200 still rose from s = 4 to 16 (48.5 against 37.0), and
# the LoRAs' alpha grid reaches a scale alpha / rank of 16 at the default rank 8.
SCALE_GRID = (0.1, 1.0, 4.0, 16.0)
LORA_ALPHA_GRID = (8.0, 32.0, 128.0)
# method -> (option, grid)
GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "adapter": ("scale", SCALE_GRID),
    "pear": ("scale", SCALE_GRID),
    "prune": ("scale", SCALE_GRID),
    "peft-lora": ("lora_alpha", LORA_ALPHA_GRID),
    "peft-lora-eq": ("lora_alpha", LORA_ALPHA_GRID),
}
CHOICE_FILE = "choice.json"
CHOICES_TABLE = "choices.md"  # OUT/tuning/choices.md: every choice, as `pear suite --tune --tune-only` leaves them


def tuned_by(method: str, trains: str, apart: dict | None = None) -> str | None:
    """The suite method whose choice `method` (which trains method `trains`) uses: itself when it
    has a grid; the method it names before its @options ('prune@prune_ratio=0.9' -> 'prune'); the
    method it trains ('pear' for a Pear ablation such as 'pear-kc-none'); None for methods with
    nothing to tune (linear, full). `apart`: {field: value} of the fields tuned apart
    (`pear suite --tune-each`) that `method` sets; they join the name, so that each of their values
    has a choice of its own ('prune@prune_ratio=0.9' with prune_ratio apart -> itself)."""
    owner = next((m for m in (method.split("@", 1)[0], trains) if m in GRIDS), None)
    if owner is None:
        return None
    return owner + "".join(f"@{field}={spell(value)}" for field, value in (apart or {}).items())


def spell(value: object) -> str:
    """A setting's value as a method name spells it: 0.75 -> '0.75', [0, 6] -> '0+6'."""
    if isinstance(value, (list, tuple)):
        return "+".join(spell(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_key(owner: str) -> str:
    """The `GRIDS` method of a tuning owner ('prune@prune_ratio=0.9' -> 'prune')."""
    return owner.split("@", 1)[0]


def owner_record(choices: list[dict], task: str, method: str, overrides: dict) -> dict | None:
    """The recorded choice (of `choices`) that a run of suite method `method` on `task` trained with:
    its owner's (`tuned_by`), the most specific one where some were tuned apart (`--tune-each`): of
    the records whose fields tuned apart `method` also sets to the same values (`overrides`, its
    parsed options, `grammar.method_overrides`), the one with the most such fields. None when none
    was recorded."""
    owner = tuned_by(method, overrides["method"])
    spelled = {field: spell(value) for field, value in overrides.items()}
    found = []
    for c in choices:
        key, apart = split_name(c["method"])  # checked by read_choice
        if c["task"] == task and key == owner and all(spelled.get(f) == v for f, v in apart.items()):
            found.append((len(apart), c))
    return max(found, key=lambda pair: pair[0])[1] if found else None


def grid_for(method: str, grids: dict[str, tuple[float, ...]] | None = None) -> tuple[str, tuple[float, ...]]:
    """(option, values) of `method`'s grid (a tuning owner, `tuned_by`): a suite's own values for that
    option (--tune-grid), else `GRIDS`'."""
    option, default = GRIDS[grid_key(method)]
    return option, tuple((grids or {}).get(option, default))


def checked_grids(grids: dict | None) -> dict[str, tuple[float, ...]]:
    """A suite's own grids, {option: values}: options --tune chooses, each with finite values > 0
    (a repeated value counts once); PearError naming the option otherwise."""
    options = sorted({option for option, _ in GRIDS.values()})
    checked = {}
    for option, values in dict(grids or {}).items():
        if option not in options:
            raise PearError(f"--tune-grid {option}=...: --tune chooses {' and '.join(options)}, not {option!r}")
        values = tuple(dict.fromkeys(values))
        if not values or not all(_finite(v) and v > 0 for v in values):
            raise PearError(f"--tune-grid {option}: expected one or more finite values > 0, got {list(values)}")
        checked[option] = tuple(float(v) for v in values)
    return checked


def checked_apart(fields: Sequence[str]) -> tuple[str, ...]:
    """The Pear options a suite tunes apart (--tune-each), each once; PearError naming one that is no
    Pear option, or one that --tune chooses itself."""
    fields = tuple(dict.fromkeys(f.strip() for f in fields))
    for f in fields:
        if f in {option for option, _ in GRIDS.values()}:
            raise PearError(
                f"--tune-each {f}: --tune chooses {f} itself; name an option a method sets, e.g. prune_ratio"
            )
        if f not in PEAR_FIELDS:
            raise PearError(f"--tune-each {f!r}: expected one of the Pear options {', '.join(PEAR_FIELDS)}")
    return fields


def parse_grid(text: str) -> tuple[str, tuple[float, ...]]:
    """'scale=0.1,1,4,16' -> ('scale', (0.1, 1.0, 4.0, 16.0)), as --tune-grid takes one."""
    option, sep, values = text.partition("=")
    try:
        parsed = tuple(float(v) for v in values.split(","))
    except ValueError:
        parsed = ()
    if not sep or not option.strip() or not parsed:
        raise PearError(
            f"--tune-grid {text!r}: expected OPTION=VALUE,VALUE,..., e.g. scale=0.1,1,4,16 or lora_alpha=8,32,128"
        )
    return option.strip(), parsed


def grid_dir(out: str | Path, task: str, method: str) -> Path:
    return Path(out) / "tuning" / task / method


def tune_run_dir(out: str | Path, task: str, method: str, value: float) -> Path:
    option, _ = GRIDS[grid_key(method)]
    return grid_dir(out, task, method) / f"{option}={value:g}"


def tune_overrides(method: str, value: float) -> dict:
    """The options of the tuning run for one grid value: train800, scored on val200."""
    option, _ = GRIDS[grid_key(method)]
    return {option: value, "seed": TUNE_SEED, "select_on": "val200"}


def val_score(run: Path) -> float:
    """val200 accuracy after the last epoch of a finished tuning run."""
    try:
        epochs = json.loads(RunDir(run).history.read_text(encoding="utf-8"))
        return float(epochs[-1]["val_acc"])
    except (OSError, UnicodeDecodeError, ValueError, LookupError, TypeError, AttributeError):
        raise PearError(
            f"tuning run {run} has no val200 accuracy in {RunDir.HISTORY}; delete it and run the suite again"
        ) from None


def choose(out: str | Path, task: str, method: str, grids: dict | None = None) -> dict:
    """Score every grid value's finished run (the suite's own `grids`, else `GRIDS`), pick the best
    and record it; returns the record."""
    option, grid = grid_for(method, grids)
    scores = {f"{v:g}": val_score(tune_run_dir(out, task, method, v)) for v in grid}
    best = max(grid, key=lambda v: (scores[f"{v:g}"], -grid.index(v)))
    record = {
        "task": task,
        "method": method,
        "option": option,
        "grid": list(grid),
        "val200_acc": scores,
        "chosen": best,
        "seed": TUNE_SEED,
        "protocol": "train800 -> val200 accuracy after the last epoch; best value used on train800val200",
    }
    atomic_write_text(grid_dir(out, task, method) / CHOICE_FILE, json.dumps(record, indent=2) + "\n")
    return record


# What a choice record holds (`pear.jsontypes` checks a record a user may have edited).
CHOICE_FIELDS = {"task": str, "method": str, "option": str, "chosen": (int, float), "val200_acc": dict}


def read_choice(path: str | Path) -> dict:
    """One choice record, as written by `choose`; PearError naming the file and field otherwise."""
    record = read_mapping(path, "tuning record")
    problems = wrong_types(record, CHOICE_FIELDS, required=tuple(CHOICE_FIELDS))
    if not problems:  # the checks below read inside these fields
        problems = [
            f"{where} is {v!r}"
            for where, v in [("chosen", record["chosen"])]
            + [(f"val200_acc[{k!r}]", v) for k, v in record["val200_acc"].items()]
            if not _finite(v)
        ]
        try:
            split_name(record["method"])
        except PearError as exc:
            problems.append(str(exc))
        key = grid_key(record["method"])
        if key not in GRIDS or record["option"] != GRIDS[key][0]:
            problems.append(
                f"method and option are {record['method']!r} and {record['option']!r}, which --tune "
                f"does not tune (it tunes {', '.join(f'{m}: {o}' for m, (o, _) in GRIDS.items())})"
            )
    if problems:
        raise PearError(
            f"tuning record {path}: {'; '.join(problems)}; expected the fields {', '.join(CHOICE_FIELDS)} "
            f"as `pear suite --tune` writes them (delete the file to choose again)"
        )
    return record


def _finite(value) -> bool:
    return has_type(value, (int, float)) and math.isfinite(value)


def current_choice(out: str | Path, task: str, method: str, grids: dict | None = None) -> dict | None:
    """The checked record of (task, method) when it was chosen over the grid used now (`grid_for`);
    None when there is none yet, or when it was chosen over another grid (a grid since widened
    chooses again, once the runs of its new values have finished)."""
    path = grid_dir(out, task, method) / CHOICE_FILE
    if not path.is_file():
        return None
    record = read_choice(path)
    return record if record.get("grid") == list(grid_for(method, grids)[1]) else None


def trained_value(run: Path, option: str) -> float | None:
    """The value of `option` (one that --tune chooses) that run folder `run` trained with, from its
    args.yaml (top level, or its `pear` section for the adapter scale); None where the file cannot
    tell (the suite's same-run check names a damaged one)."""
    path = RunDir(run).args
    try:
        args = read_mapping(path, "run options") if path.is_file() else {}
    except PearError:
        return None
    section = args.get("pear")
    value = args.get(option, section.get(option) if isinstance(section, dict) else None)
    return float(value) if value is not None and _finite(value) else None


def chosen_option(record: dict) -> dict:
    """{option: value} a checked record chose."""
    return {record["option"]: float(record["chosen"])}


def read_choices(out: str | Path) -> list[dict]:
    """Every recorded choice under OUT/tuning, as written by `choose`, checked (`read_choice`)."""
    return [read_choice(p) for p in sorted(Path(out).glob(f"tuning/*/*/{CHOICE_FILE}"))]


def markdown(records: list[dict]) -> list[str]:
    """The results.md section that shows the protocol's grid, scores and choices."""
    if not records:
        return []
    lines = [
        "",
        "## Tuning (val200)",
        "",
        f"Each value trained on train800 (seed {TUNE_SEED}) and scored on val200 after its last epoch; the "
        "best value (bold) trained every seed on train800val200. Pear ablations use `pear`'s choice (with "
        "--tune-each, a method named with that option, such as `pear@prune_ratio=0.9`, has one of its own).",
        "",
        "| task | method | option | val200 accuracy per value (%) | chosen |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in records:
        chosen = f"{r['chosen']:g}"
        cells = ", ".join(
            f"**{v}: {acc:.1f}**" if v == chosen else f"{v}: {acc:.1f}" for v, acc in r["val200_acc"].items()
        )
        lines.append(f"| {r['task']} | {r['method']} | {r['option']} | {cells} | {chosen} |")
    return lines


def write_choices_table(out: str | Path) -> tuple[Path, list[dict]]:
    """OUT/tuning/choices.md from every choice recorded under OUT/tuning (`read_choices`): a suite's,
    or a results folder's kept copies of them; returns its path and the records."""
    records = read_choices(out)
    table = Path(out) / "tuning" / CHOICES_TABLE
    atomic_write_text(table, "\n".join(markdown(records)).lstrip("\n") + "\n")
    return table, records
