"""`pear suite`: every (task, method, seed) run, resumable, gathered into one table.

A `Suite` is the value that names one: its data root, tasks, methods, seeds, folder, shared
training options and whether --tune chooses each method's option first. Its runs
(`Suite.runs`, `pear.harness.suites.suite_runs`) are computed once, every configuration checked
before anything is written; its methods are the ways to run it: `run` (the whole suite),
`run_index` (one run, on a scheduler), `list`, `aggregate` and `emit_slurm`.

Layout under OUT::

    runs/<task>/<method>/seed<k>/   one `pear train` run folder each (metrics.json when done)
    tuning/<task>/<method>/<option>=<value>/   with --tune: the protocol's runs, and choice.json
    logs/<task>/<method>/seed<k>.log   output of runs started as subprocesses (several devices)
    results.csv  results.md  accuracy_vs_bytes.png   (`pear.harness.suites.results`)

The methods are named by the suite's grammar (`pear.harness.suites.grammar`): a training
method, a Pear ablation such as pear-kc-frozen, or METHOD@FIELD=VALUE[@...]. Running a suite
again skips finished runs, resumes crashed ones from their last complete epoch and only then
aggregates, so a suite can be stopped and restarted at will. With `tune`, each method's one
hyper-parameter is first chosen on val200 by VTAB's protocol (`pear.harness.suites.tuning`).

On a cluster the scheduler runs the runs instead (`list`, `run_index`, `aggregate`): every run
of a suite has an index, the tuning runs first, then the real runs in seed-major order; a
job array runs one index per task and `aggregate` gathers whatever has finished. Two
processes started for one index never both train it: the second is refused by the run
folder's lock (`pear.harness.run.rundir`).

The suite folder has a lock of its own (OUT/.pear-lock, the run folder's flock): a whole
suite (`Suite.run`) holds it alone for as long as it runs, and each `run_index` holds it
shared, so any number of indices run side by side, but never beside a whole suite of the
same folder, and never two whole suites at once.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from ...atomic import open_append
from ...errors import PearError
from ..datasets.builders import BUILTIN_DATASETS, build_dataset
from ..datasets.vtab import task_info
from ..run.locks import lock_folder, unlock
from ..run.options import check_device
from ..run.train import train
from ..run.watch import require_tensorboard
from . import slurm, suite_runs, tuning
from .presets import PRESETS, check_preset, preset_named  # noqa: F401  (PRESETS, check_preset: public here too)
from .results import aggregate, vtab_summary
from .suite_exec import run_here, run_queue
from .suite_runs import Run, check_folders, check_same_options, list_runs, run_dir  # noqa: F401  (run_dir: public)


@dataclass(frozen=True)
class Suite:
    """Every (task, method, seed) run of one suite folder `out`.

    base: TrainConfig options shared by all runs (backbone, epochs, ...); not the fields the
        suite sets for each run (`suite_runs.SUITE_FIELDS`).
    tune: first choose each method's tuned option on val200 (`pear.harness.suites.tuning`); the
        real runs then use the chosen value.
    grids: with `tune`, {option: values} tried in place of `tuning.GRIDS`' (--tune-grid scale=...).
    tune_each: with `tune`, the Pear options (prune_ratio, ...) whose every value a method's name
        sets is tuned apart (--tune-each; `suite_runs.grid_of`).

    Repeated tasks, methods and seeds count once. Making a Suite checks its fields; its
    `runs` check every run's configuration, once, before any method writes anything.
    """

    data: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    out: str
    base: dict = field(default_factory=dict)
    tune: bool = False
    grids: dict = field(default_factory=dict)
    tune_each: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        tasks, methods, seeds, base = suite_runs.checked(self.tasks, self.methods, self.seeds, self.base)
        grids = tuning.checked_grids(self.grids)
        each = tuning.checked_apart(self.tune_each)
        if (grids or each) and not self.tune:
            flag = "--tune-grid sets the values --tune tries" if grids else "--tune-each says what --tune chooses apart"
            raise PearError(f"{flag}; pass --tune (or --tune-only) with it")
        for name, value in (
            ("data", str(self.data)),
            ("out", str(self.out)),
            ("tasks", tasks),
            ("methods", methods),
            ("seeds", seeds),
            ("base", base),
            ("grids", grids),
            ("tune_each", each),
        ):
            object.__setattr__(self, name, value)  # frozen: the checked values, set once

    @classmethod
    def configure(
        cls,
        data: str,
        tasks: list[str] | None,
        methods: list[str] | None,
        seeds: list[int],
        out: str | None,
        base: dict | None = None,
        tune: bool = False,
        preset: str | None = None,
        grids: dict | None = None,
        tune_each: list[str] | None = None,
    ) -> Suite:
        """`pear suite`'s Suite: with a `preset` (`PRESETS`), its tasks (every folder checked), method pear,
        folder suites/PRESET and recipe, under whatever is given; without one, tasks, methods and out
        are required."""
        recipe: dict = {}
        if preset:
            recipe = preset_named(preset)["recipe"]
            tasks = tasks or check_preset(preset, data)
            methods, out = methods or ["pear"], out or f"suites/{preset}"
        missing = [flag for flag, v in (("--tasks", tasks), ("--methods", methods), ("--out", out)) if not v]
        if missing:
            raise PearError(f"pear suite needs {', '.join(missing)} (or --preset vtab1k)")
        spec = (tuple(tasks or ()), tuple(methods or ()), tuple(seeds), str(out))
        return cls(data, *spec, {**recipe, **(base or {})}, tune, dict(grids or {}), tuple(tune_each or ()))

    @cached_property
    def runs(self) -> list[Run]:
        """Every run in index order: with `tune` the tuning runs first, then the real runs (seed-major);
        a tuned run holds its task's recorded choice, if there is one yet (`suite_runs.planned`)."""
        return suite_runs.planned(self)

    def run(
        self, devices: list[str] | None = None, build_missing: bool = False, command: str | None = None
    ) -> list[dict]:
        """Train every run not finished yet, then `aggregate(out)`; returns the table's rows.

        devices: with several, one subprocess per device at a time (`python -m pear train`);
            with one or none, runs go one after another in this process (on that device).
        build_missing: build the built-in datasets among the tasks that `data` lacks.
        command: the command line, recorded in results.md.

        Every configuration (and each device) is checked before the suite folder is created or
        the first run starts. The suite holds its folder alone while it runs (a second suite or
        `run_index` on it is refused, naming the PID). A run that fails does not stop the
        others; the failures are raised as one PearError after aggregation.
        """
        devices, runs = self._ready(devices, build_missing)
        lock = hold(self.out)
        try:
            real = self._tune(runs, devices) if self.tune else runs
            todo = _pending(real)
            print(f"suite: {len(real)} runs, {len(real) - len(todo)} finished, {len(todo)} to run", flush=True)
            failures = _execute(todo, devices, Path(self.out))
            rows = aggregate(self.out, command=command)
            _print_vtab_means(rows)
        finally:
            unlock(lock)
        if failures:
            raise PearError(
                f"{len(failures)} of {len(todo)} runs failed (the others are in "
                f"{Path(self.out) / 'results.md'}; run the suite again to retry):\n  " + "\n  ".join(failures)
            )
        return rows

    def _ready(self, devices: list[str] | None, build_missing: bool) -> tuple[list[str], list[Run]]:
        """Before a suite folder is touched: every device and run configuration checked, the data
        there (built where asked); returns the devices and the runs."""
        devices = list(devices or [])
        for device in devices:
            check_device(device, "--devices")
        _ensure_data(self.data, self.tasks, build_missing)
        runs = self.runs  # every run's options, before anything is written
        if self.base.get("tensorboard"):
            require_tensorboard()
        return devices, runs

    def tune_only(self, devices: list[str] | None = None, build_missing: bool = False) -> list[dict]:
        """Run only the protocol's tuning runs (train800 -> val200, `pear.harness.suites.tuning`) that
        have not finished, record each (task, method) choice, and write the grid's scores to
        OUT/tuning/choices.md; returns the choice records. The real runs are left for a later `run`
        (which reuses these tuning runs and choices): the choices can be read before paying for them."""
        if not self.tune:
            raise PearError("tuning only needs a suite made with tune=True (pear suite --tune --tune-only)")
        devices, runs = self._ready(devices, build_missing)
        if not any(r.tuning for r in runs):
            raise PearError(
                f"none of the methods {', '.join(self.methods)} has an option that --tune chooses "
                f"({', '.join(tuning.GRIDS)} have)"
            )
        lock = hold(self.out)
        try:
            self._tune(runs, devices)
            table, records = tuning.write_choices_table(self.out)
            print(f"suite: the choices are in {table}", flush=True)
        finally:
            unlock(lock)
        return records

    def _tune(self, runs: list[Run], devices: list[str]) -> list[Run]:
        """Run the protocol's train800 -> val200 runs that are not finished, choose each value,
        and return the real runs, each tuned one with its task's choice."""
        tuning_runs = [r for r in runs if r.tuning]
        todo = _pending(tuning_runs)
        settled = sum(r.settled and not r.finished for r in tuning_runs)
        print(
            f"suite: tuning, {len(tuning_runs)} runs, {len(tuning_runs) - len(todo) - settled} finished, "
            f"{settled} not needed (their choice is recorded), {len(todo)} to run",
            flush=True,
        )
        failures = _execute(todo, devices, Path(self.out))
        if failures:
            raise PearError(
                f"{len(failures)} tuning runs failed; run the suite again to retry:\n  " + "\n  ".join(failures)
            )
        grids = dict.fromkeys(r.tuned_by for r in runs if r.tuned_by)
        records = {
            (t, g): tuning.current_choice(self.out, t, g, self.grids) or tuning.choose(self.out, t, g, self.grids)
            for t, g in grids
        }
        for c in records.values():
            print(
                f"suite: {c['task']}/{c['method']}: {c['option']} = {c['chosen']:g} (val200 {c['val200_acc']})",
                flush=True,
            )
        for i, r in enumerate(runs):  # `runs` holds each tuned run with its choice from now on
            if r.tuned_by:
                runs[i] = suite_runs.with_choice(self, r, tuning.chosen_option(records[r.tuned_by]))
        return [r for r in runs if not r.tuning]

    def run_index(self, index: int, build_missing: bool = False) -> dict | None:
        """Train run `index` (of `runs`) in this process unless it has finished; returns its metrics.
        A tuned run first takes its task's choice, which needs all of that task's tuning runs
        finished. The suite folder is held shared (other indices may run at the same time, a whole
        suite may not), the run folder alone (by `train`)."""
        runs = self.runs
        if not 0 <= index < len(runs):
            raise PearError(
                f"--index {index} is out of range: this suite has {len(runs)} runs "
                f"(0-{len(runs) - 1}); `--list` shows them"
            )
        run = runs[index]
        if self.base.get("tensorboard"):
            require_tensorboard()
        _ensure_data(self.data, [run.task], build_missing)
        lock = hold(self.out, shared=True)
        try:
            if run.tuned_by:
                run = runs[index] = suite_runs.with_choice(
                    self, run, suite_runs.choice_of(run, runs, self.out, self.grids)
                )
            if run.dir.exists():
                check_same_options(run)
            if run.done:
                done = "has already finished" if run.finished else "is not needed: its choice is recorded"
                print(f"suite: run {index} ({run.label}) {done}", flush=True)
                return None
            print(f"suite: run {index}: {run.label}{' (resuming)' if run.dir.exists() else ''}", flush=True)
            # Always --resume: a process started for this index at the same moment may have just made
            # the folder. train() holds the folder while it runs, so that process or this one is refused.
            run.cfg.resume = True
            return train(run.cfg)
        finally:
            unlock(lock)

    def aggregate(self, command: str | None = None) -> list[dict]:
        """`finish`: the tables from whatever has finished, naming the runs that have not."""
        return finish(self.runs, self.out, command=command)

    def emit_slurm(self, path: str | Path, command: list[str], gres: str = "gpu:1") -> Path:
        """Write the sbatch --array script `path` that runs `command --index I` for every index
        (`pear.harness.suites.slurm`), after the same-run check of every run folder that exists
        (`check_folders`), as --index, --list and --aggregate check."""
        runs = self.runs
        check_folders(runs)
        written = slurm.emit_slurm(
            path, command, len(runs), sum(r.tuning for r in runs), self.out, self.data, gres=gres
        )
        print(f"wrote {path}: {len(runs)} runs as a job array; submit with `sbatch {path}`")
        return written

    def list(self) -> str:
        """`list_runs`: one line per run with its index and state."""
        return list_runs(self.runs)


def run_suite(
    *spec, devices: list[str] | None = None, build_missing: bool = False, command: str | None = None, **fields
) -> list[dict]:
    """`Suite(*spec, **fields).run(devices, build_missing, command)`, as scripts called a suite before
    it was a value."""
    return Suite(*spec, **fields).run(devices, build_missing, command)


def sweep(*spec, **fields) -> list[Run]:
    """`Suite(*spec, **fields).runs`: every run in index order, checked; nothing is trained or written."""
    return Suite(*spec, **fields).runs


def run_index(index: int, *spec, build_missing: bool = False, **fields) -> dict | None:
    """`Suite(*spec, **fields).run_index(index, build_missing)`."""
    return Suite(*spec, **fields).run_index(index, build_missing)


def hold(out: str | Path, shared: bool = False) -> int:
    """Create the suite folder and lock it (`pear.harness.run.locks.lock_folder`): alone for a
    whole suite, shared for one index; returns the lock for `unlock`."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PearError(f"cannot create suite folder {out}: {exc.strerror or exc}") from None
    return lock_folder(Path(out), "suite folder", shared=shared)


def finish(runs: list[Run], out: str, command: str | None = None) -> list[dict]:
    """Aggregate whatever has finished and name the runs that have not (on stdout and in results.md),
    after `check_folders`."""
    check_folders(runs)
    missing = [f"{i} {r.label}" for i, r in enumerate(runs) if not r.done]
    rows = aggregate(out, command=command, missing=missing)
    print(
        f"suite: aggregated {len(runs) - len(missing)} of {len(runs)} runs into {Path(out) / 'results.md'}", flush=True
    )
    if missing:
        print(f"suite: {len(missing)} not finished (index, run):\n  " + "\n  ".join(missing), flush=True)
    _print_vtab_means(rows)
    return rows


def _print_vtab_means(rows: list[dict]) -> None:
    for line in vtab_summary(rows):
        print(f"suite: {line}", flush=True)


def _pending(runs: list[Run]) -> list[Run]:
    """The runs not done (`Run.done`; those with a folder resume), after checking that every
    existing folder was made with the same options."""
    check_folders(runs)
    todo = []
    for run in runs:
        if not run.done:
            run.cfg.resume = run.dir.exists()
            todo.append(run)
    return todo


def _execute(todo: list[Run], devices: list[str], out: Path) -> list[str]:
    """The failures of running `todo`: one subprocess per device with several, else here (on the one)."""
    if len(devices) > 1:
        return run_queue(todo, devices, out, _spawn)
    if devices:  # one device: the runs train here, on it
        for run in todo:
            run.cfg.device = devices[0]
    return run_here(todo, train)


def _ensure_data(data: str, tasks, build_missing: bool) -> None:
    for task in tasks:
        if task in BUILTIN_DATASETS and not (Path(data) / task).exists():
            if not build_missing:
                raise PearError(
                    f"built-in dataset {task} is not in {data}; pass --build (build_missing=True) "
                    f"to write it, or `pear data build {task} --out {data}`"
                )
            print(f"suite: building {task} into {data}", flush=True)
            build_dataset(task, data, if_missing=True)  # another --index may be building it too
        task_info(data, task)


def _spawn(run: Run, device: str, config_file: Path, out: Path) -> tuple:
    # config_file is in the suite's own fresh temporary folder: nothing can be planted there.
    config_file.write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=False), encoding="utf-8")
    log_path = out / "logs" / run.task / run.method / f"seed{run.seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open_append(log_path)  # a resumed run appends to its earlier output
    proc = subprocess.Popen(
        _train_command(config_file, device), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return proc, run, log_file


def _train_command(config_file: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "pear", "train", "-c", str(config_file), "--device", device]
