"""`pear suite`: every (task, method, seed) run, resumable, gathered into one table.

Layout under OUT::

    runs/<task>/<method>/seed<k>/   one `pear train` run folder each (metrics.json when done)
    tuning/<task>/<method>/<option>=<value>/   with --tune: the protocol's runs, and choice.json
    logs/<task>/<method>/seed<k>.log   output of runs started as subprocesses (several devices)
    results.csv  results.md  accuracy_vs_bytes.png   (`pear.harness.results`)

The methods are named by the suite's grammar (`pear.harness.suite_methods`): a training
method, a Pear ablation such as pear-kc-frozen, or METHOD@FIELD=VALUE[@...]. Calling
`run_suite` again skips finished runs, resumes crashed ones from their last complete
epoch and only then aggregates, so a suite can be stopped and restarted at will. With
`tune`, each method's one hyper-parameter is first chosen on val200 by VTAB's protocol
(`pear.harness.tuning`).

On a cluster the scheduler runs the runs instead (`sweep`, `run_index`, `finish`): every run
of a suite has an index, the tuning runs first, then the real runs in seed-major order; a
job array runs one index per task and `finish` aggregates whatever has finished. Two
processes started for one index never both train it: the second is refused by the run
folder's lock (`pear.harness.rundir`).

The suite folder has a lock of its own (OUT/.pear-lock, the run folder's flock): a whole
suite (`run_suite`) holds it alone for as long as it runs, and each `run_index` holds it
shared, so any number of indices run side by side, but never beside a whole suite of the
same folder, and never two whole suites at once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import open_append
from ..errors import PearError
from .builders import BUILTIN_DATASETS, build_dataset
from .data import TASK_ALIASES, VTAB_TASKS, task_info
from .data import _task_folder_name as task_folder_name  # training's own rule
from .files import read_mapping
from .options import TrainConfig, changed_options, check_device
from .results import aggregate, vtab_summary
from .rundir import lock_folder, outside_data, unlock
from .suite_methods import method_overrides
from .train import train
from .watch import require_tensorboard
from . import tuning

# The suite owns these: they name and place each run.
_SUITE_FIELDS = ("data", "task", "method", "seed", "out", "resume", "overwrite")

# `pear suite --preset NAME`: the tasks and the recipe (TrainConfig options) of a benchmark.
PRESETS: dict[str, dict] = {
    # The paper-style VTAB-1k recipe: 100 epochs, AdamW lr 1e-3, wd 1e-4, batch 64, cosine
    # with 10 warm-up epochs (the scoring window before Pear prunes), 224 px.
    "vtab1k": {"tasks": list(VTAB_TASKS),
               "recipe": {"epochs": 100, "warmup_epochs": 10, "lr": 1e-3, "wd": 1e-4, "batch_size": 64,
                          "img_size": 224}},
}


@dataclass
class _Run:
    task: str
    method: str
    seed: int
    cfg: TrainConfig
    tuned_by: tuple[str, str] | None = None  # (task, grid method) whose val200 choice this run trains with
    tuning: bool = False  # one of --tune's train800 -> val200 runs
    stand_in: str | None = None  # the tuned option, while cfg holds a stand-in for the value not chosen yet

    @property
    def dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def label(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"

    @property
    def finished(self) -> bool:
        return (self.dir / "metrics.json").is_file()


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

    Every configuration (and each device) is checked before the suite folder is created
    or the first run starts. The suite holds its folder alone while it runs (a second
    suite or `run_index` on it is refused, naming the PID). A run that fails does not stop
    the others; the failures are raised as one PearError after aggregation.
    """
    devices = list(devices or [])
    for device in devices:
        check_device(device, "--devices")
    base = {**(base or {}), **({"device": devices[0]} if len(devices) == 1 else {})}
    tasks, methods, seeds, base = _checked(tasks, methods, seeds, base)
    _ensure_data(data, tasks, build_missing)
    sweep(data, tasks, methods, seeds, out, base, tune)  # every run's options, before anything is written
    if base.get("tensorboard"):
        require_tensorboard()
    lock = hold(out)
    try:
        chosen = _tune(data, tasks, methods, base, out, devices) if tune else {}
        runs = _real_runs(data, tasks, methods, seeds, out, base, tune, chosen)
        todo = _pending(runs)
        print(f"suite: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run", flush=True)
        failures = _execute(todo, devices, Path(out))
        rows = aggregate(out, command=command)
        _print_vtab_means(rows)
    finally:
        unlock(lock)
    if failures:
        raise PearError(f"{len(failures)} of {len(todo)} runs failed (the others are in {Path(out) / 'results.md'}; "
                        f"run the suite again to retry):\n  " + "\n  ".join(failures))
    return rows


def hold(out: str | Path, shared: bool = False) -> int:
    """Create the suite folder and lock it (`pear.harness.rundir.lock_folder`): alone for a
    whole suite, shared for one index; returns the lock for `unlock`."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PearError(f"cannot create suite folder {out}: {exc.strerror or exc}") from None
    return lock_folder(Path(out), "suite folder", shared=shared)


def _check_folder(out: str | Path, data: str) -> None:
    """--out is a folder (or nothing yet) outside the data root."""
    if Path(out).exists() and not Path(out).is_dir():
        raise PearError(f"suite folder --out {out} exists and is not a folder; choose a folder for the suite")
    outside_data(Path(out), Path(data), "a suite folder")


def _checked(tasks, methods, seeds, base: dict | None) -> tuple[list, list, list, dict]:
    base = dict(base or {})
    owned = sorted(set(base) & set(_SUITE_FIELDS))
    if owned:
        raise PearError(f"suite options must not set {owned}: the suite sets them for each run")
    tasks, methods, seeds = (list(dict.fromkeys(x)) for x in (tasks, methods, seeds))
    if not tasks or not methods or not seeds:
        raise PearError("a suite needs at least one task, one method and one seed")
    return tasks, methods, seeds, base


def _real_runs(data: str, tasks: list[str], methods: list[str], seeds: list[int], out: str, base: dict,
               tune: bool, chosen: dict | None = None) -> list[_Run]:
    """The suite's (task, method, seed) runs in seed-major order (a sweep cut short still has every
    (task, method) for the seeds it finished). chosen: (task, method) -> the options --tune chose;
    a tuned run not in it is configured with its grid's first value, as a check only."""
    runs = []
    for s in seeds:
        for t in tasks:
            for m in methods:
                grid = tuning.tuned_by(m, method_overrides(m)["method"]) if tune else None
                option: dict = {}
                stand_in: str | None = None
                if grid:
                    name, values = tuning.GRIDS[grid]
                    picked = (chosen or {}).get((t, m))
                    option, stand_in = (picked, None) if picked else ({name: values[0]}, name)
                runs.append(_Run(t, m, s, _config({**base, **option}, data, t, m, s, out), (t, grid) if grid else None,
                                 stand_in=stand_in))
    return runs


def sweep(data: str, tasks: list[str], methods: list[str], seeds: list[int], out: str, base: dict | None = None,
          tune: bool = False) -> list[_Run]:
    """Every run of the suite in index order: with `tune`, the tuning runs first, then the real
    runs (seed-major); a tuned run takes its task's recorded choice, if there is one yet. Every
    configuration and task name is checked; nothing is trained or written."""
    tasks, methods, seeds, base = _checked(tasks, methods, seeds, base)
    _check_folder(out, data)
    _check_tasks(tasks)
    tuning_runs = _tuning_runs(data, tasks, methods, base, out) if tune else []
    chosen = _recorded_choices(out, tasks, methods) if tune else {}
    return tuning_runs + _real_runs(data, tasks, methods, seeds, out, base, tune, chosen)


def _recorded_choices(out: str, tasks: list[str], methods: list[str]) -> dict[tuple[str, str], dict]:
    """(task, method) -> {option: value} of the choices --tune has recorded so far."""
    chosen = {}
    for t in tasks:
        for m in methods:
            grid = tuning.tuned_by(m, method_overrides(m)["method"])
            record = tuning.grid_dir(out, t, grid) / tuning.CHOICE_FILE if grid else None
            if record is not None and record.is_file():
                chosen[(t, m)] = tuning.chosen_option(tuning.read_choice(record))
    return chosen


def check_folders(runs: list[_Run]) -> None:
    """Every run folder that exists was made with the options its run has now (`changed_options`):
    what is listed as finished, aggregated or skipped is this suite's run."""
    for run in runs:
        if run.dir.exists():
            _check_same_options(run)


def list_runs(runs: list[_Run]) -> str:
    """One line per run: index, state (finished / started / pending), label, folder; after
    `check_folders`."""
    check_folders(runs)
    lines = []
    for i, run in enumerate(runs):
        state = "finished" if run.finished else ("started" if run.dir.exists() else "pending")
        note = f"  ({tuning.GRIDS[run.tuned_by[1]][0]}: the val200 choice)" if run.tuned_by else ""
        lines.append(f"{i:5d}  {state:8s}  {run.label}  {run.dir}{note}")
    tuned = sum(r.tuning for r in runs)
    head = f"{len(runs)} runs (indices 0-{len(runs) - 1})"
    if tuned:
        head += f"; tuning runs 0-{tuned - 1} first: a tuned run needs its task's tuning runs finished"
    return "\n".join([head, *lines])


def run_index(index: int, data: str, tasks: list[str], methods: list[str], seeds: list[int], out: str,
              base: dict | None = None, tune: bool = False, build_missing: bool = False) -> dict | None:
    """Train run `index` of the suite (`sweep`'s order) in this process unless it has finished;
    returns its metrics. A tuned run first takes its task's choice, which needs all of that
    task's tuning runs finished. The suite folder is held shared (other indices may run at the
    same time, a whole suite may not), the run folder alone (by `train`)."""
    tasks, methods, seeds, base = _checked(tasks, methods, seeds, base)
    runs = sweep(data, tasks, methods, seeds, out, base, tune)
    if not 0 <= index < len(runs):
        raise PearError(f"--index {index} is out of range: this suite has {len(runs)} runs (0-{len(runs) - 1}); "
                        f"`--list` shows them")
    run = runs[index]
    if base.get("tensorboard"):
        require_tensorboard()
    _ensure_data(data, [run.task], build_missing)
    lock = hold(out, shared=True)
    try:
        if run.tuned_by:
            run.cfg = _config({**base, **_choice(run, runs, out)}, data, run.task, run.method, run.seed, out)
        if run.dir.exists():
            _check_same_options(run)
        if run.finished:
            print(f"suite: run {index} ({run.label}) has already finished", flush=True)
            return None
        print(f"suite: run {index}: {run.label}{' (resuming)' if run.dir.exists() else ''}", flush=True)
        # Always --resume: a process started for this index at the same moment may have just made
        # the folder. train() holds the folder while it runs, so that process or this one is refused.
        run.cfg.resume = True
        return train(run.cfg)
    finally:
        unlock(lock)


def _choice(run: _Run, runs: list[_Run], out: str) -> dict:
    """{option: value} chosen for a tuned run's task, choosing it when its tuning runs have finished."""
    assert run.tuned_by is not None, "only a tuned run has a choice to read"
    task, grid = run.tuned_by
    option, values = tuning.GRIDS[grid]
    record = tuning.grid_dir(out, task, grid) / tuning.CHOICE_FILE
    if not record.is_file():
        folders = {tuning.tune_run_dir(out, task, grid, v) for v in values}
        waiting = [f"{i} ({r.label})" for i, r in enumerate(runs) if r.dir in folders and not r.finished]
        if waiting:
            raise PearError(f"run {runs.index(run)} ({run.label}) trains with the {option} that --tune chooses on "
                            f"val200, and tuning runs {', '.join(waiting)} have not finished yet; run those indices "
                            f"first (with Slurm: submit the tuning indices, then this one with "
                            f"--dependency=afterok:JOBID)")
        tuning.choose(out, task, grid)
    return tuning.chosen_option(tuning.read_choice(record))


def finish(runs: list[_Run], out: str, command: str | None = None) -> list[dict]:
    """Aggregate whatever has finished and name the runs that have not (on stdout and in results.md),
    after `check_folders`."""
    check_folders(runs)
    missing = [f"{i} {r.label}" for i, r in enumerate(runs) if not r.finished]
    rows = aggregate(out, command=command, missing=missing)
    print(f"suite: aggregated {len(runs) - len(missing)} of {len(runs)} runs into {Path(out) / 'results.md'}",
          flush=True)
    if missing:
        print(f"suite: {len(missing)} not finished (index, run):\n  " + "\n  ".join(missing), flush=True)
    _print_vtab_means(rows)
    return rows


def _print_vtab_means(rows: list[dict]) -> None:
    for line in vtab_summary(rows):
        print(f"suite: {line}", flush=True)


def check_preset(name: str, data: str) -> list[str]:
    """The tasks of preset `name`; every task folder must be in `data` (one message names all missing)."""
    if name not in PRESETS:
        raise PearError(f"unknown --preset {name!r}; presets: {', '.join(PRESETS)}")
    tasks = PRESETS[name]["tasks"]
    root = Path(data)
    spellings = {t: [t, *(a for a, c in TASK_ALIASES.items() if c == t)] for t in tasks}
    missing = [t for t in tasks if not any((root / s).is_dir() for s in spellings[t])]
    if missing:
        shown = ", ".join(" or ".join(spellings[t]) for t in missing)
        raise PearError(f"--preset {name}: {root} lacks {len(missing)} of the {len(tasks)} task folders: {shown}. "
                        f"Lay each out as {root}/<task>/{{train800,val200,train800val200,test}}.txt + images/ "
                        f"(README: VTAB-1k in one command)")
    return tasks


def _pending(runs: list[_Run]) -> list[_Run]:
    """The runs without metrics.json (those with a folder resume), after checking that every
    existing folder was made with the same options."""
    check_folders(runs)
    todo = []
    for run in runs:
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
    runs = _tuning_runs(data, tasks, methods, base, out)
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


def _tuning_runs(data: str, tasks: list[str], methods: list[str], base: dict, out: str) -> list[_Run]:
    """The protocol's train800 -> val200 runs: one per grid value of each (task, tuned method)."""
    grids = list(dict.fromkeys((t, g) for t in tasks for m in methods
                               if (g := tuning.tuned_by(m, method_overrides(m)["method"]))))
    _check_tunable(methods, base, [g for _, g in grids])
    seed = tuning.TUNE_SEED
    return [_Run(t, f"{g}@{tuning.GRIDS[g][0]}={v:g}", seed,
                 _config({**base, **tuning.tune_overrides(g, v)}, data, t, g, seed, out,
                         tuning.tune_run_dir(out, t, g, v)), tuning=True)
            for t, g in grids for v in tuning.GRIDS[g][1]]


def _check_tunable(methods: list[str], base: dict, grids: list[str]) -> None:
    """--tune chooses each grid's option: neither the suite's options nor a method name may set it."""
    fixed = sorted({tuning.GRIDS[g][0] for g in grids} & set(base))
    if fixed:
        raise PearError(f"--tune chooses {', '.join(fixed)} on val200; do not also set it for every run")
    for m in methods:
        overrides = method_overrides(m)
        grid = tuning.tuned_by(m, overrides["method"])
        option = tuning.GRIDS[grid][0] if grid else None
        if option in overrides:
            raise PearError(f"--tune chooses {option} on val200, but suite method {m!r} sets it; drop "
                            f"@{option}={overrides[option]:g} or --tune")


def _config(base: dict, data: str, task: str, method: str, seed: int, out: str,
            folder: Path | None = None) -> TrainConfig:
    values = {**base, **method_overrides(method), "data": str(data), "task": task, "seed": seed,
              "out": str(folder or run_dir(out, task, method, seed)), "progress": False}
    try:
        return TrainConfig.from_dict(values)
    except TypeError as exc:
        raise PearError(f"bad suite options for {task}/{method}/seed{seed}: {exc}") from None


def _check_tasks(tasks: list[str]) -> None:
    """Every task names a folder inside the data root, as training's task names must (whether the
    folder holds a task is checked before a run trains: --list works on a data root still being laid out)."""
    for task in tasks:
        task_folder_name(task)


def _ensure_data(data: str, tasks: list[str], build_missing: bool) -> None:
    for task in tasks:
        if task in BUILTIN_DATASETS and not (Path(data) / task).exists():
            if not build_missing:
                raise PearError(f"built-in dataset {task} is not in {data}; pass --build (build_missing=True) "
                                f"to write it, or `pear data build {task} --out {data}`")
            print(f"suite: building {task} into {data}", flush=True)
            build_dataset(task, data, if_missing=True)  # another --index may be building it too
        task_info(data, task)


def _check_same_options(run: _Run) -> None:
    """Refuse to mix a run folder made with other options into this suite's table (the same-run
    rule of `pear train --resume`, `pear.harness.options.changed_options`)."""
    args = run.dir / "args.yaml"
    if not args.is_file():
        return
    recorded = read_mapping(args, "run options")  # its message names the file
    try:
        diff = changed_options(recorded, run.cfg, ignore=(run.stand_in,) if run.stand_in else ())
    except PearError as exc:
        raise PearError(f"{args}: {exc}; delete that run folder to train it again") from None
    if diff:
        shown = ", ".join(why or f"{k}: {a!r} there, {b!r} now" for k, (a, b, why) in sorted(diff.items()))
        raise PearError(f"run folder {run.dir} was made with other options ({shown}); use another suite "
                        f"folder, or delete that run folder to train it again")


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
    # config_file is in the suite's own fresh temporary folder: nothing can be planted there.
    config_file.write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=False), encoding="utf-8")
    log_path = out / "logs" / run.task / run.method / f"seed{run.seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open_append(log_path)  # a resumed run appends to its earlier output
    proc = subprocess.Popen(_train_command(config_file, device), stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return proc, run, log_file


def _train_command(config_file: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "pear", "train", "-c", str(config_file), "--device", device]


def _last_line(path: str) -> str:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
