"""`pear suite`: every (task, method, seed) run, resumable, gathered into one table.

Layout under OUT::

    runs/<task>/<method>/seed<k>/   one `pear train` run folder each (metrics.json when done)
    tuning/<task>/<method>/<option>=<value>/   with --tune: the protocol's runs, and choice.json
    logs/<task>/<method>/seed<k>.log   output of runs started as subprocesses (several devices)
    results.csv  results.md  accuracy_vs_bytes.png

A suite method is a training method (linear, full, adapter, prune, pear, peft-lora; 'lora'
is an alias of peft-lora), a Pear ablation that changes one option of `pear`:
pear-share-POLICY, pear-kc-MODE, pear-imp-SCORER, pear-rRATIO, pear-scope-SCOPE, or a
method with any Pear options set: METHOD@FIELD=VALUE[@FIELD=VALUE...], e.g.
pear@act=gelu@blocks=0+6 (list items are joined by '+'). Calling `run_suite` again skips finished runs, resumes
crashed ones from their last complete epoch and only then aggregates, so a suite can
be stopped and restarted at will. With `tune`, each method's one hyper-parameter is first
chosen on val200 by VTAB's protocol (`pear.harness.tuning`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..atomic import atomic_write_file, atomic_write_text
from ..config import IMPORTANCE_METHODS, KNOWLEDGE_MODES, PRUNE_SCOPES, SHARE_ALIASES, SHARE_POLICY_NAMES, PearConfig
from ..errors import PearError
from .builders import BUILTIN_DATASETS, build_dataset
from .data import TASK_ALIASES, VTAB_GROUPS, VTAB_TASKS, task_info
from .files import read_mapping
from .methods import METHOD_ALIASES, METHODS, canonical_method
from .options import PEAR_FIELDS, TrainConfig, flat_options, value_parser
from .train import train
from . import tuning

# ---------------------------------------------------------------- method grammar


def _choice(field: str, choices: tuple[str, ...], aliases: tuple[str, ...] = ()):
    def parse(text: str) -> str:
        if text not in choices and text not in aliases:
            raise ValueError(text)
        return text
    return field, parse, "{" + ",".join(choices) + "}"


def _ratio(text: str) -> float:
    # Digits only: float() would also take 'nan', 'inf' or '1e-1', none of which is a
    # sensible folder name for a ratio.
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text) or not 0.0 <= float(text) < 1.0:
        raise ValueError(text)
    return float(text)


# Name prefix -> (TrainConfig field it sets on method `pear`, parser of the rest, form).
ABLATIONS = {
    "pear-share-": _choice("share", SHARE_POLICY_NAMES, tuple(SHARE_ALIASES.values())),
    "pear-kc-": _choice("knowledge", KNOWLEDGE_MODES),
    "pear-imp-": _choice("importance", IMPORTANCE_METHODS),
    "pear-r": ("prune_ratio", _ratio, "<ratio in [0,1)>"),
    "pear-scope-": _choice("prune_scope", PRUNE_SCOPES),
}
GRAMMAR = (*METHODS, *(prefix + form for prefix, (_, _, form) in ABLATIONS.items()), "METHOD@FIELD=VALUE[@...]")


def method_overrides(name: str) -> dict:
    """The TrainConfig fields suite method `name` sets, e.g. 'pear-kc-frozen' ->
    {'method': 'pear', 'knowledge': 'frozen'}, 'pear@act=gelu@rank=4' ->
    {'method': 'pear', 'act': 'gelu', 'rank': 4}."""
    if name in METHODS or name in METHOD_ALIASES:
        return {"method": name}
    for prefix, (field, parse, _) in ABLATIONS.items():
        if name.startswith(prefix):
            try:
                return {"method": "pear", field: parse(name[len(prefix):])}
            except ValueError:
                break
    if "@" in name and "/" not in name:
        method, *settings = name.split("@")
        if method in METHODS or method in METHOD_ALIASES:
            return {"method": method, **dict(_setting(name, s) for s in settings)}
    raise PearError(f"unknown suite method {name!r}; expected one of: {', '.join(GRAMMAR)}")


def _setting(name: str, text: str) -> tuple[str, object]:
    """'rank=4' -> ('rank', 4), parsed as `pear train --rank 4` would be."""
    field, eq, value = text.partition("=")
    if not eq or field not in PEAR_FIELDS:
        raise PearError(f"suite method {name!r}: {text!r} is not FIELD=VALUE with FIELD one of {', '.join(PEAR_FIELDS)}")
    try:
        return field, value_parser(PearConfig, field)(value)
    except ValueError:
        raise PearError(f"suite method {name!r}: {value!r} is not a valid {field}") from None


# ---------------------------------------------------------------- running

# The suite owns these: they name and place each run.
_SUITE_FIELDS = ("data", "task", "method", "seed", "out", "resume", "overwrite")
# Options that change how or where a run executes but not what it computes (paths
# change when folders move between machines); a resumed or finished run may differ
# from the current call in these.
_EXECUTION_FIELDS = ("data", "out", "device", "workers", "cache_gb", "progress", "overwrite", "resume",
                     "eval_batch_size", "compile", "deterministic")


@dataclass
class _Run:
    task: str
    method: str
    seed: int
    cfg: TrainConfig

    @property
    def dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def label(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


def run_dir(out: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(out) / "runs" / task / method / f"seed{seed}"


def run_suite(data: str, tasks: list[str], methods: list[str], seeds: list[int], out: str,
              base: dict | None = None, devices: list[str] | None = None, build_missing: bool = False,
              command: str | None = None, tune: bool = False) -> list[dict]:
    """Train every (task, method, seed) not finished yet, then `aggregate(out)`.

    base: TrainConfig options shared by all runs (backbone, epochs, ...).
    devices: with several, one subprocess per device at a time (`python -m pear train`);
        with one or none, runs go one after another in this process.
    build_missing: build the built-in datasets among `tasks` that `data` lacks.
    command: the command line, recorded in results.md.
    tune: first choose each method's tuned option on val200 (`pear.harness.tuning`); the
        real runs then use the chosen value.

    Every configuration is checked before the first run starts. A run that fails does
    not stop the others; the failures are raised as one PearError after aggregation.
    """
    base = dict(base or {})
    owned = sorted(set(base) & set(_SUITE_FIELDS))
    if owned:
        raise PearError(f"suite options must not set {owned}: the suite sets them for each run")
    tasks, methods, seeds = (list(dict.fromkeys(x)) for x in (tasks, methods, seeds))
    if not tasks or not methods or not seeds:
        raise PearError("a suite needs at least one task, one method and one seed")
    devices = list(devices or [])
    if len(devices) == 1:
        base["device"] = devices[0]
    _ensure_data(data, tasks, build_missing)
    chosen = _tune(data, tasks, methods, base, out, devices) if tune else {}

    # Seed-major order: a sweep cut short still has every (task, method) for the seeds it finished.
    runs = [_Run(t, m, s, _config({**base, **chosen.get((t, m), {})}, data, t, m, s, out))
            for s in seeds for t in tasks for m in methods]
    todo = _pending(runs)
    print(f"suite: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run", flush=True)
    failures = _execute(todo, devices, Path(out))
    rows = aggregate(out, command=command)
    if failures:
        raise PearError(f"{len(failures)} of {len(todo)} runs failed (the others are in {Path(out) / 'results.md'}; "
                        f"run the suite again to retry):\n  " + "\n  ".join(failures))
    return rows


def _pending(runs: list[_Run]) -> list[_Run]:
    """The runs without metrics.json (those with a folder resume), after checking that every
    existing folder was made with the same options."""
    todo = []
    for run in runs:
        if run.dir.exists():
            _check_same_options(run)
        if not (run.dir / "metrics.json").is_file():
            run.cfg.resume = run.dir.exists()
            todo.append(run)
    return todo


def _execute(todo: list[_Run], devices: list[str], out: Path) -> list[str]:
    return _run_queue(todo, devices, out) if len(devices) > 1 else _run_here(todo)


def _tune(data: str, tasks: list[str], methods: list[str], base: dict, out: str,
          devices: list[str]) -> dict[tuple[str, str], dict]:
    """Run the protocol's train800 -> val200 runs that are not finished, choose each value,
    and return the options every (task, method) trains with."""
    owners = {(t, m): tuning.tuned_by(m, method_overrides(m)["method"]) for t in tasks for m in methods}
    grids = list(dict.fromkeys((t, g) for (t, _), g in owners.items() if g))
    fixed = sorted({tuning.GRIDS[g][0] for _, g in grids} & set(base))
    if fixed:
        raise PearError(f"--tune chooses {', '.join(fixed)} on val200; do not also set it for every run")
    seed = tuning.TUNE_SEED
    runs = [_Run(t, f"{g}@{tuning.GRIDS[g][0]}={v:g}", seed,
                 _config({**base, **tuning.tune_overrides(g, v)}, data, t, g, seed, out, tuning.tune_run_dir(out, t, g, v)))
            for t, g in grids for v in tuning.GRIDS[g][1]]
    todo = _pending(runs)
    print(f"suite: tuning, {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run", flush=True)
    failures = _execute(todo, devices, Path(out))
    if failures:
        raise PearError(f"{len(failures)} tuning runs failed; run the suite again to retry:\n  " + "\n  ".join(failures))
    records = {(t, g): tuning.choose(out, t, g) for t, g in grids}
    for r in records.values():
        print(f"suite: {r['task']}/{r['method']}: {r['option']} = {r['chosen']:g} (val200 {r['val200_acc']})",
              flush=True)
    return {(t, m): {records[(t, g)]["option"]: records[(t, g)]["chosen"]} for (t, m), g in owners.items() if g}


def _config(base: dict, data: str, task: str, method: str, seed: int, out: str,
            folder: Path | None = None) -> TrainConfig:
    values = {**base, **method_overrides(method), "data": str(data), "task": task, "seed": seed,
              "out": str(folder or run_dir(out, task, method, seed)), "progress": False}
    try:
        return TrainConfig.from_dict(values)
    except TypeError as exc:
        raise PearError(f"bad suite options for {task}/{method}/seed{seed}: {exc}") from None


def _ensure_data(data: str, tasks: list[str], build_missing: bool) -> None:
    for task in tasks:
        if task in BUILTIN_DATASETS and not (Path(data) / task).exists():
            if not build_missing:
                raise PearError(f"built-in dataset {task} is not in {data}; pass --build (build_missing=True) "
                                f"to write it, or `pear data build {task} --out {data}`")
            print(f"suite: building {task} into {data}", flush=True)
            build_dataset(task, data)
        task_info(data, task)


def _check_same_options(run: _Run) -> None:
    """Refuse to mix a run folder made with other options into this suite's table."""
    args = run.dir / "args.yaml"
    if not args.is_file():
        return
    old = read_mapping(args, "run options")
    # Only options the run recorded: a field added to TrainConfig later is no difference.
    old = flat_options(old)
    diff = {k: (old[k], v) for k, v in flat_options(run.cfg.to_dict()).items()
            if k in old and k not in _EXECUTION_FIELDS and _recorded(k, old[k]) != v}
    if diff:
        shown = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise PearError(f"run folder {run.dir} was made with other options ({shown}); use another suite "
                        f"folder, or delete that run folder to train it again")


def _recorded(key: str, value):
    """A recorded option in today's spelling (a method's earlier alias resolved)."""
    return canonical_method(value) if key == "method" and isinstance(value, str) else value


def _run_here(todo: list[_Run]) -> list[str]:
    failures = []
    for i, run in enumerate(todo, 1):
        print(f"suite: [{i}/{len(todo)}] {run.label}{' (resuming)' if run.cfg.resume else ''}", flush=True)
        try:
            train(run.cfg)
        except Exception as exc:  # one bad run (a diverged loss, a bug) must not stop the rest
            if not isinstance(exc, PearError):
                traceback.print_exc()
            failures.append(f"{run.label}: {type(exc).__name__}: {exc}")
            print(f"suite: {failures[-1]}", file=sys.stderr, flush=True)
    return failures


def _run_queue(todo: list[_Run], devices: list[str], out: Path) -> list[str]:
    """One subprocess per device slot at a time; each writes only its own run folder."""
    pending, failures = list(todo), []
    busy: list[tuple | None] = [None] * len(devices)
    started = 0
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".suite-", dir=out) as tmp:
        try:
            while pending or any(busy):
                for slot, device in enumerate(devices):
                    if busy[slot] is None and pending:
                        run = pending.pop(0)
                        started += 1
                        busy[slot] = _spawn(run, device, Path(tmp) / f"{started}.yaml", out)
                        print(f"suite: [{started}/{len(todo)}] {run.label} on {device}"
                              f"{' (resuming)' if run.cfg.resume else ''}", flush=True)
                for slot, job in enumerate(busy):
                    if job is not None and job[0].poll() is not None:
                        proc, run, log_file = job
                        log_file.close()
                        busy[slot] = None
                        if proc.returncode:
                            failures.append(f"{run.label}: exit status {proc.returncode}: {_last_line(log_file.name)} "
                                            f"(log: {log_file.name})")
                time.sleep(0.2)
        finally:
            for job in busy:
                if job is not None:
                    job[0].terminate()
                    job[0].wait()
                    job[2].close()
    return failures


def _spawn(run: _Run, device: str, config_file: Path, out: Path) -> tuple:
    config_file.write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=False), encoding="utf-8")
    log_path = out / "logs" / run.task / run.method / f"seed{run.seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a", encoding="utf-8")  # a resumed run appends to its earlier output
    proc = subprocess.Popen(_train_command(config_file, device), stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return proc, run, log_file


def _train_command(config_file: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "pear", "train", "-c", str(config_file), "--device", device]


def _last_line(path: str) -> str:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


# ---------------------------------------------------------------- aggregation

CSV_FIELDS = ("task", "method", "seed", "test_acc", "trainable_params", "trainable_params_before", "stored_bytes",
              "adapter_params", "adapter_bytes", "train_seconds", "images_per_second", "epochs", "img_size",
              "backbone", "device", "world_size", "plan_digest", "torch", "tuned", "run")


def aggregate(out: str | Path, command: str | None = None) -> list[dict]:
    """Read every OUT/runs/*/*/seed*/metrics.json; write results.csv (one row per run),
    results.md (tables of mean and sample std over seeds) and accuracy_vs_bytes.png.
    Returns the rows, sorted by task, method and seed."""
    out = Path(out)
    rows = sorted((_read_metrics(p, out) for p in out.glob("runs/*/*/seed*/metrics.json")),
                  key=lambda r: (_task_key(r["task"]), _method_key(r["method"]), r["seed"]))
    choices = tuning.read_choices(out)
    _mark_tuned(rows, choices)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.md", _markdown(rows, command, choices))
    if rows:
        _plot(rows, out / "accuracy_vs_bytes.png")
    return rows


def _mark_tuned(rows: list[dict], choices: list[dict]) -> None:
    """Each row's `tuned` cell: the option value the protocol chose for it ('scale=1'), if any."""
    chosen = {(c.get("task"), c.get("method")): f"{c.get('option')}={c.get('chosen'):g}" for c in choices}
    for r in rows:
        try:
            owner = tuning.tuned_by(r["method"], method_overrides(r["method"])["method"])
        except PearError:  # a folder name that is no suite method: nothing was tuned for it
            owner = None
        r["tuned"] = chosen.get((r["task"], owner))


def _read_metrics(path: Path, out: Path) -> dict:
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        float(m["test_acc"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise PearError(f"{path} is not a readable metrics file ({type(exc).__name__}: {exc}); delete its run "
                        f"folder and run the suite again") from None
    seed_dir = path.parent
    # The method is the suite's name for it (the folder): an ablation trains method 'pear'.
    row = {k: m.get(k) for k in CSV_FIELDS}
    row.update(task=m.get("task") or TASK_ALIASES.get(seed_dir.parent.parent.name, seed_dir.parent.parent.name),
               method=seed_dir.parent.name, seed=int(m.get("seed", seed_dir.name[len("seed"):])),
               run=str(seed_dir.relative_to(out)))
    return row


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
    return (f"{platform.platform()}, {os.cpu_count()} CPUs, GPU {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _markdown(rows: list[dict], command: str | None, choices: list[dict] = ()) -> str:
    lines = ["# Pear suite results", "", f"- Aggregated on: {_machine()}"]
    if command:
        lines.append(f"- Command: `{command}`")
    if not rows:
        return "\n".join(lines + ["", "No run has finished yet.", ""])
    for key, what in (("device", "Runs trained on"), ("backbone", "Backbone"), ("torch", "Runs' torch")):
        values = sorted({str(r[key]) for r in rows if r[key] is not None})
        if values:
            lines.append(f"- {what}: {', '.join(values)}")
    groups = _groups(rows)
    tasks = sorted({r["task"] for r in rows}, key=_task_key)
    methods = sorted({r["method"] for r in rows}, key=_method_key)
    acc = {key: _mean_of(runs, "test_acc") for key, runs in groups.items()}
    vtab = [(g, [t for t in members if t in tasks]) for g, members in VTAB_GROUPS.items()]
    vtab = [(g, ts) for g, ts in vtab if ts] if all(t in VTAB_TASKS for t in tasks) else []

    header = ["method", *tasks, "Mean over tasks"]
    if vtab:
        header += [f"{g} mean" for g, _ in vtab] + ["Mean of group means"]
    lines += ["", "## Test accuracy (%)", "",
              "Mean ± sample standard deviation over seeds (n seeds). *Mean over tasks* averages the per-task "
              "means" + ("; each VTAB group mean averages its tasks' means, and *Mean of group means* (the "
                         "usual VTAB-1k summary) averages the group means." if vtab else "."), "",
              _row(header), _row(["---"] * len(header))]
    for m in methods:
        means = {t: acc[(t, m)] for t in tasks if (t, m) in acc}
        cells = [m, *(_acc_cell([r["test_acc"] for r in groups[(t, m)]]) if (t, m) in groups else "–"
                      for t in tasks), _summary(means, tasks)]
        if vtab:
            gmeans = {g: statistics.fmean(means[t] for t in ts if t in means) for g, ts in vtab
                      if any(t in means for t in ts)}
            cells += [_summary(means, ts) for _, ts in vtab] + [_summary(gmeans, [g for g, _ in vtab], "groups")]
        lines.append(_row(cells))

    lines += tuning.markdown(list(choices))

    header = ["task", "method", "test acc (%)", "trainable params", "stored bytes", "adapter bytes",
              "adapter bytes / adapter's"]
    lines += ["", "## Cost per task", "",
              "Trainable parameters after pruning (before → after where pruning changed them); stored bytes: "
              "the files of the task checkpoint; the last column compares unique adapter bytes with the "
              "unpruned `adapter` method on the same task.", "", _row(header), _row(["---"] * len(header))]
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
            lines.append(_row([t, m, _acc_cell([r["test_acc"] for r in runs]), params,
                               _count(_mean_of(runs, "stored_bytes")), _count(adapter), ratio]))
    lines += ["", "![accuracy vs stored bytes](accuracy_vs_bytes.png)", ""]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


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
    colors = colormaps["tab20"].colors  # 20 distinct colours: ablations make many methods
    markers = "os^Dv<>pP*Xh"
    points = {}
    for m in sorted({r["method"] for r in rows}, key=_method_key):
        per_task = [groups[(t, m)] for t in tasks if (t, m) in groups and _mean_of(groups[(t, m)], "stored_bytes")]
        if per_task:
            points[m] = per_task
    # A mean over fewer tasks is not comparable with the others: where some methods ran on
    # every task, only those are drawn (the others stay in the tables).
    complete = {m: p for m, p in points.items() if len(p) == len(tasks)}
    if complete and len(complete) < len(points):
        ax.set_title(f"methods run on every task; {len(points) - len(complete)} others: see results.md", fontsize=9)
        points = complete
    for i, (m, per_task) in enumerate(points.items()):
        x = statistics.fmean(_mean_of(runs, "stored_bytes") for runs in per_task)
        y = statistics.fmean(_mean_of(runs, "test_acc") for runs in per_task)
        label = m if len(per_task) == len(tasks) else f"{m} ({len(per_task)}/{len(tasks)} tasks)"
        ax.scatter([x], [y], marker=markers[i % len(markers)], color=colors[i % len(colors)], s=50, label=label)
        if canonical_method(m) in METHODS:  # ablations crowd around `pear`: the legend names them
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes per task (mean over tasks, log scale)")
    ax.set_ylabel("test accuracy, % (mean over tasks and seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    atomic_write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
