"""The suite's results: every finished run's metrics.json gathered into results.csv (one
row per run), results.md (means and sample standard deviations over seeds, per task, per
VTAB group, cost per task, the tuning protocol's choices) and accuracy_vs_bytes.png."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from ...atomic import atomic_write_file, atomic_write_text
from ...errors import PearError
from ...jsontypes import NONE, has_type, wrong_types
from ..datasets.vtab import TASK_ALIASES, VTAB_GROUPS, VTAB_TASKS
from ..models.methods import METHODS, canonical_method
from ..trained.runs import read_metrics
from . import tuning
from .grammar import method_overrides

# The numeric columns of results.csv, in their order there.
_COUNTS = (
    "trainable_params", "trainable_params_before", "checkpoint_file_bytes", "adapter_params", "adapter_bytes",
    "train_seconds", "images_per_second", "epochs", "img_size",
)  # fmt: skip
CSV_FIELDS = (
    "task", "method", "seed", "test_acc", *_COUNTS, "backbone", "device", "cpu", "gpu", "world_size", "plan_digest",
    "torch", "tuned", "run",
)  # fmt: skip


def aggregate(out: str | Path, command: str | None = None, missing: Sequence[str] = ()) -> list[dict]:
    """Read every OUT/runs/*/*/seed*/metrics.json; write results.csv (one row per run),
    results.md (tables of mean and sample std over seeds; `missing` names the runs that
    have not finished) and accuracy_vs_bytes.png. Returns the rows, sorted by task, method
    and seed."""
    out = Path(out)
    rows = sorted(
        (_read_metrics(p, out) for p in out.glob("runs/*/*/seed*/metrics.json")),
        key=lambda r: (_task_key(r["task"]), _method_key(r["method"]), r["seed"]),
    )
    choices = tuning.read_choices(out)
    _mark_tuned(rows, choices, out)
    write_tables(out, rows, command, choices, missing)
    return rows


def write_tables(
    out: str | Path,
    rows: list[dict],
    command: str | None = None,
    choices: Sequence[dict] = (),
    missing: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> None:
    """Write OUT/results.csv, results.md and accuracy_vs_bytes.png from rows (aggregate's, or
    read_csv's: tables kept from an earlier suite folder merged with a new one's)."""
    out = Path(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.md", _markdown(rows, command, choices, list(missing), list(notes)))
    if rows:
        _plot(rows, out / "accuracy_vs_bytes.png")


CHOSEN_NOW = "chosen now"  # in a `tuned` cell: the run trained at another value than the one chosen now


def _mark_tuned(rows: list[dict], choices: list[dict], out: Path) -> None:
    """Each tuned row's `tuned` cell: the value of the protocol's option the run trained with ('scale=4');
    where that is not the value chosen now (a grid widened since, or a field tuned apart since), it says
    so ('scale=4 (chosen now: 16)')."""
    for r in rows:
        try:
            overrides = method_overrides(r["method"])
        except PearError:  # a folder name that is no suite method: nothing was tuned for it
            r["tuned"] = None
            continue
        c = tuning.owner_record(choices, r["task"], r["method"], overrides)
        if c is None:
            r["tuned"] = None
            continue
        now, had = float(c["chosen"]), tuning.trained_value(out / r["run"], c["option"])
        value = now if had is None else had
        r["tuned"] = f"{c['option']}={value:g}" + ("" if value == now else f" ({CHOSEN_NOW}: {now:g})")


# What the suite reads of a run's metrics.json (`pear.jsontypes` checks a file a user may have
# edited); test_acc is required, task and seed may be missing (older files: the folders say
# them), and the rest may be missing or null.
_NUMBER = (int, float, NONE)
METRICS_FIELDS = {
    "task": str,
    "seed": int,
    "test_acc": (int, float),
    **dict.fromkeys((*_COUNTS, "world_size"), _NUMBER),
    **dict.fromkeys(("backbone", "device", "cpu", "gpu", "plan_digest", "torch"), (str, NONE)),
}


def _read_metrics(path: Path, out: Path) -> dict:
    try:
        m = read_metrics(path)
    except PearError as exc:
        raise PearError(
            f"{path} is not a readable metrics file ({exc}); delete its run folder and run the suite again"
        ) from None
    problems = wrong_types(m, METRICS_FIELDS, required=("test_acc",))
    problems += [f"{k} is {m[k]!r}" for k in METRICS_FIELDS if has_type(m.get(k), float) and not math.isfinite(m[k])]
    seed_dir = path.parent
    seed = m.get("seed")
    if "seed" not in m and not problems:  # older files: the folder's name says it
        seed = _folder_seed(seed_dir.name)
        if seed is None:
            problems.append(f"it has no seed, and its folder {seed_dir.name!r} is not seed<N>")
    if problems:
        raise PearError(
            f"{path} is not a readable metrics file: {'; '.join(problems)}; delete its run folder "
            f"and run the suite again"
        )
    # The method is the suite's name for it (the folder): an ablation trains method 'pear'.
    row = {k: m.get(k) for k in CSV_FIELDS}
    row.update(
        task=m.get("task") or TASK_ALIASES.get(seed_dir.parent.parent.name, seed_dir.parent.parent.name),
        method=seed_dir.parent.name,
        seed=seed,
        run=str(seed_dir.relative_to(out)),
    )
    return row


def _folder_seed(name: str) -> int | None:
    digits = name[len("seed") :]
    return int(digits) if digits.isascii() and digits.isdigit() else None


def _task_key(task: str) -> tuple:
    order = list(VTAB_TASKS)
    return (order.index(task), "") if task in VTAB_TASKS else (len(order), task)


def _method_key(method: str) -> tuple:
    method = canonical_method(method)
    return (METHODS.index(method), "") if method in METHODS else (len(METHODS), method)


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(task, method) -> its runs."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["task"], r["method"]), []).append(r)
    return out


def _acc_cell(values: list[float]) -> str:
    """Mean ± sample standard deviation (n - 1), which one seed does not have."""
    mean, n = statistics.fmean(values), len(values)
    return f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} ± {statistics.stdev(values):.2f} (n={n})"


def _summary(means: dict[str, float], keys: list[str], unit: str = "tasks") -> str:
    """Mean of the given means, flagged when some have no finished run yet."""
    have = [means[k] for k in keys if k in means]
    if not have:
        return "–"
    mean = statistics.fmean(have)
    return f"{mean:.2f}" if len(have) == len(keys) else f"{mean:.2f} ({len(have)}/{len(keys)} {unit})"


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, GPU {gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def _vtab(tasks: list[str]) -> list[tuple[str, list[str]]]:
    """(group, its tasks among `tasks`) when every task is a VTAB-1k task, else []."""
    if not all(t in VTAB_TASKS for t in tasks):
        return []
    return [(g, ts) for g, members in VTAB_GROUPS.items() if (ts := [t for t in members if t in tasks])]


def _group_cells(means: dict[str, float], vtab: list[tuple[str, list[str]]]) -> list[str]:
    """Each group's mean of its tasks' means, then the mean of the group means."""
    gmeans = {g: statistics.fmean(means[t] for t in ts if t in means) for g, ts in vtab if any(t in means for t in ts)}
    return [_summary(means, ts) for _, ts in vtab] + [_summary(gmeans, [g for g, _ in vtab], "groups")]


def vtab_summary(rows: list[dict]) -> list[str]:
    """Per method, both VTAB-1k summaries, named (when every task is a VTAB task): the mean
    over tasks and the mean of the group means."""
    tasks = sorted({r["task"] for r in rows}, key=_task_key)
    vtab = _vtab(tasks)
    if not rows or not vtab:
        return []
    groups = _groups(rows)
    lines = []
    for m in sorted({r["method"] for r in rows}, key=_method_key):
        means = {t: _mean_acc(groups[(t, m)]) for t in tasks if (t, m) in groups}
        *per_group, of_groups = _group_cells(means, vtab)
        named = ", ".join(f"{g} {cell}" for (g, _), cell in zip(vtab, per_group))
        lines.append(f"{m}: Mean over tasks {_summary(means, tasks)}; Mean of group means {of_groups} ({named})")
    return lines


def _markdown(
    rows: list[dict],
    command: str | None,
    choices: Sequence[dict] = (),
    missing: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    lines = ["# Pear suite results", "", f"- Aggregated on: {_machine()}"]
    if command:
        lines.append(f"- Command: `{command}`")
    lines += [f"- {n}" for n in notes]
    if missing:
        lines.append(f"- Not finished ({len(missing)}, by index): " + ", ".join(f"`{m}`" for m in missing))
    if not rows:
        return "\n".join(lines + ["", "No run has finished yet.", ""])
    for key, what in (
        ("device", "Runs trained on"),
        ("cpu", "Runs' CPUs"),
        ("gpu", "Runs' GPUs"),
        ("backbone", "Backbone"),
        ("torch", "Runs' torch"),
    ):
        recorded = [r for r in rows if r[key] not in (None, "")]
        values = sorted({str(r[key]) for r in recorded})
        unknown = len(rows) - len(recorded)  # runs made before the CPU was recorded (merged from older tables)
        note = f" ({unknown} of the {len(rows)} runs recorded none)" if key == "cpu" and unknown else ""
        if values:
            lines.append(f"- {what}: {', '.join(values)}{note}")
    groups = _groups(rows)
    tasks = sorted({r["task"] for r in rows}, key=_task_key)
    methods = sorted({r["method"] for r in rows}, key=_method_key)
    lines += _accuracy_table(groups, tasks, methods)
    lines += tuning.markdown(list(choices))
    lines += _cost_table(groups, tasks, methods)
    lines += ["", "![accuracy vs checkpoint bytes](accuracy_vs_bytes.png)", ""]
    return "\n".join(lines)


def _accuracy_table(groups: dict[tuple[str, str], list[dict]], tasks: list[str], methods: list[str]) -> list[str]:
    """results.md's "Test accuracy" section: a method per row, a task per column, then the means."""
    acc = {key: _mean_acc(runs) for key, runs in groups.items()}
    vtab = _vtab(tasks)
    header = ["method", *tasks, "Mean over tasks"]
    if vtab:
        header += [f"{g} mean" for g, _ in vtab] + ["Mean of group means"]
    lines = [
        "",
        "## Test accuracy (%)",
        "",
        "Mean ± sample standard deviation over seeds (n seeds). *Mean over tasks* averages the per-task "
        "means"
        + (
            "; each VTAB group mean averages its tasks' means, and *Mean of group means* (the "
            "usual VTAB-1k summary) averages the group means."
            if vtab
            else "."
        ),
        "",
        _row(header),
        _row(["---"] * len(header)),
    ]
    for m in methods:
        means = {t: acc[(t, m)] for t in tasks if (t, m) in acc}
        cells = [
            m,
            *(_acc_cell([r["test_acc"] for r in groups[(t, m)]]) if (t, m) in groups else "–" for t in tasks),
            _summary(means, tasks),
        ]
        if vtab:
            cells += _group_cells(means, vtab)
        lines.append(_row(cells))
    return lines


def _cost_table(groups: dict[tuple[str, str], list[dict]], tasks: list[str], methods: list[str]) -> list[str]:
    """results.md's "Cost per task" section: parameters and bytes of each (task, method)."""
    header = [
        "task",
        "method",
        "test acc (%)",
        "trainable params",
        "checkpoint bytes",
        "adapter bytes",
        "adapter bytes / adapter's",
    ]
    lines = [
        "",
        "## Cost per task",
        "",
        "Trainable parameters after pruning (before → after where pruning changed them); checkpoint "
        "bytes: the size of the task checkpoint's files on disk; the last column compares unique adapter "
        "bytes with the unpruned `adapter` method on the same task.",
        "",
        _row(header),
        _row(["---"] * len(header)),
    ]
    for t in tasks:
        ref = _mean_of(groups.get((t, "adapter"), []), "adapter_bytes")
        for m in methods:
            runs = groups.get((t, m))
            if not runs:
                continue
            after, before = _mean_of(runs, "trainable_params"), _mean_of(runs, "trainable_params_before")
            params = _count(after) if before in (None, after) else f"{_count(before)} → {_count(after)}"
            adapter = _mean_of(runs, "adapter_bytes")
            ratio = f"{adapter / ref:.2f}×" if adapter is not None and ref else "–"
            lines.append(
                _row(
                    [
                        t,
                        m,
                        _acc_cell([r["test_acc"] for r in runs]),
                        params,
                        _count(_mean_of(runs, "checkpoint_file_bytes")),
                        _count(adapter),
                        ratio,
                    ]
                )
            )
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _mean_acc(runs: list[dict]) -> float:
    # test_acc is required of every metrics file (_read_metrics).
    return statistics.fmean(r["test_acc"] for r in runs)


def _mean_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def _plot(rows: list[dict], path: Path) -> None:
    # A bare Figure (no pyplot) leaves matplotlib's global backend and state alone.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    groups = _groups(rows)
    tasks = {r["task"] for r in rows}
    fig = Figure(figsize=(8.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["tab20"]  # 20 distinct colours: ablations make many methods
    markers = "os^Dv<>pP*Xh"
    points: dict[str, list[tuple[float, float]]] = {}  # method -> per task (checkpoint bytes, test accuracy)
    for m in sorted({r["method"] for r in rows}, key=_method_key):
        per_task = [
            (size, _mean_acc(runs))
            for t in tasks
            if (runs := groups.get((t, m))) and (size := _mean_of(runs, "checkpoint_file_bytes"))
        ]
        if per_task:
            points[m] = per_task
    # A mean over fewer tasks is not comparable with the others: where some methods ran on
    # every task, only those are drawn (the others stay in the tables).
    complete = {m: p for m, p in points.items() if len(p) == len(tasks)}
    if complete and len(complete) < len(points):
        ax.set_title(f"methods run on every task; {len(points) - len(complete)} others: see results.md", fontsize=9)
        points = complete
    for i, (m, per_task) in enumerate(points.items()):
        x = statistics.fmean(size for size, _ in per_task)
        y = statistics.fmean(acc for _, acc in per_task)
        label = m if len(per_task) == len(tasks) else f"{m} ({len(per_task)}/{len(tasks)} tasks)"
        ax.scatter([x], [y], marker=markers[i % len(markers)], color=cmap(i % cmap.N), s=50, label=label)
        if canonical_method(m) in METHODS:  # ablations crowd around `pear`: the legend names them
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("checkpoint file bytes per task (mean over tasks, log scale)")
    ax.set_ylabel("test accuracy, % (mean over tasks and seeds)")
    ax.grid(True, which="both", alpha=0.3)
    if points:  # rows that record no checkpoint bytes draw nothing, and name nothing
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    atomic_write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
