"""The runs of a `pear suite` (`pear.harness.suites.suite.Suite`): each one a `Run` with its TrainConfig.

In index order: with --tune the tuning runs first (one per grid value of each task and tuned
method, `pear.harness.suites.tuning`), then the real runs, seed-major, so that a sweep cut short
still has every (task, method) for the seeds it finished. Building them checks every
configuration and task name and writes nothing. A run folder already on disk counts as its
run only when it was made with the same options (`check_folders`, the same-run rule of
`pear.harness.run.same_run.changed_options`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import PearError
from ..datasets.vtab import _task_folder_name as task_folder_name  # training's own rule
from ..files import read_mapping
from ..run.options import TrainConfig
from ..run.rundir import RunDir, outside_data
from ..run.same_run import changed_options
from . import tuning
from .grammar import method_overrides

if TYPE_CHECKING:
    from .suite import Suite

# The suite owns these: they name and place each run.
SUITE_FIELDS = ("data", "task", "method", "seed", "out", "resume", "overwrite")


@dataclass
class Run:
    task: str
    method: str
    seed: int
    cfg: TrainConfig
    tuned_by: tuple[str, str] | None = None  # (task, grid method) whose val200 choice this run trains with
    tuning: bool = False  # one of --tune's train800 -> val200 runs
    stand_in: str | None = None  # the tuned option, while cfg holds a stand-in for the value not chosen yet
    settled: bool = False  # a tuning run whose (task, method) has its choice recorded: not needed again

    @property
    def dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def label(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"

    @property
    def finished(self) -> bool:
        return RunDir(self.dir).metrics.is_file()

    @property
    def done(self) -> bool:
        """Finished, or a tuning run that a recorded choice has made unneeded (`tuning_runs`)."""
        return self.settled or self.finished


def run_dir(out: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(out) / "runs" / task / method / f"seed{seed}"


def checked(tasks, methods, seeds, base: dict | None) -> tuple[tuple, tuple, tuple, dict]:
    """The suite's tasks, methods and seeds without repeats, and its shared options, which must
    leave the suite's own fields (`SUITE_FIELDS`) to it."""
    base = dict(base or {})
    owned = sorted(set(base) & set(SUITE_FIELDS))
    if owned:
        raise PearError(f"suite options must not set {owned}: the suite sets them for each run")
    tasks, methods, seeds = (tuple(dict.fromkeys(x)) for x in (tasks, methods, seeds))
    if not tasks or not methods or not seeds:
        raise PearError("a suite needs at least one task, one method and one seed")
    return tasks, methods, seeds, base


def grid_of(suite: Suite, method: str) -> str | None:
    """The tuning owner (`tuning.tuned_by`: a `tuning.GRIDS` method, with the fields of the suite's
    `tune_each` that `method` sets) whose val200 choice suite method `method` trains with under --tune."""
    overrides = method_overrides(method)
    apart = {f: overrides[f] for f in suite.tune_each if f in overrides}
    return tuning.tuned_by(method, overrides["method"], apart)


def planned(suite: Suite) -> list[Run]:
    """Every run of `suite` in index order; a tuned run takes its task's recorded choice, if there
    is one yet, else a stand-in (as a check only). Nothing is trained or written."""
    check_folder(suite.out, suite.data)
    _check_tasks(suite.tasks)
    if not suite.tune:
        return real_runs(suite, {})
    return tuning_runs(suite) + real_runs(suite, recorded_choices(suite))


def real_runs(suite: Suite, chosen: dict[tuple[str, str], dict]) -> list[Run]:
    """The (task, method, seed) runs, seed-major. chosen: (task, method) -> the options --tune chose;
    a tuned run not in it is configured with its grid's first value, as a check only."""
    runs = []
    for s in suite.seeds:
        for t in suite.tasks:
            for m in suite.methods:
                grid = grid_of(suite, m) if suite.tune else None
                if grid is None:
                    runs.append(Run(t, m, s, config(suite, t, m, s, {})))
                    continue
                name, values = tuning.grid_for(grid, suite.grids)
                picked = chosen.get((t, m))
                option, stand_in = (picked, None) if picked else ({name: values[0]}, name)
                runs.append(Run(t, m, s, config(suite, t, m, s, option), (t, grid), stand_in=stand_in))
    return runs


def with_choice(suite: Suite, run: Run, option: dict) -> Run:
    """Tuned run `run` configured with the {option: value} --tune chose for its task."""
    return dataclasses.replace(run, cfg=config(suite, run.task, run.method, run.seed, option), stand_in=None)


def choice_of(run: Run, runs: list[Run], out: str, grids: dict) -> dict:
    """{option: value} chosen for a tuned run's task, choosing it when its tuning runs have finished."""
    assert run.tuned_by is not None, "only a tuned run has a choice to read"
    task, grid = run.tuned_by
    option, values = tuning.grid_for(grid, grids)
    record = tuning.current_choice(out, task, grid, grids)
    if record is None:
        folders = {tuning.tune_run_dir(out, task, grid, v) for v in values}
        waiting = [f"{i} ({r.label})" for i, r in enumerate(runs) if r.dir in folders and not r.finished]
        if waiting:
            raise PearError(
                f"run {runs.index(run)} ({run.label}) trains with the {option} that --tune chooses on "
                f"val200, and tuning runs {', '.join(waiting)} have not finished yet; run those indices "
                f"first (with Slurm: submit the tuning indices, then this one with "
                f"--dependency=afterok:JOBID)"
            )
        record = tuning.choose(out, task, grid, grids)
    return tuning.chosen_option(record)


def tuning_runs(suite: Suite) -> list[Run]:
    """The protocol's train800 -> val200 runs: one per grid value of each (task, tuned method). Where
    the choice of (task, method) is recorded over today's grid (`tuning.current_choice`), its runs are
    `settled`: the record stands without them (their folders may be deleted to save disk; delete
    choice.json to choose again), and the indices stay the same."""
    grids = list(dict.fromkeys((t, g) for t in suite.tasks for m in suite.methods if (g := grid_of(suite, m))))
    _check_tunable(suite, [g for _, g in grids])
    seed = tuning.TUNE_SEED
    recorded = {(t, g) for t, g in grids if tuning.current_choice(suite.out, t, g, suite.grids) is not None}
    return [
        Run(
            t,
            f"{g}@{tuning.grid_for(g)[0]}={v:g}",
            seed,
            config(suite, t, g, seed, tuning.tune_overrides(g, v), tuning.tune_run_dir(suite.out, t, g, v)),
            tuning=True,
            settled=(t, g) in recorded,
        )
        for t, g in grids
        for v in tuning.grid_for(g, suite.grids)[1]
    ]


def recorded_choices(suite: Suite) -> dict[tuple[str, str], dict]:
    """(task, method) -> {option: value} of the choices --tune has recorded so far over today's grids."""
    chosen = {}
    for t in suite.tasks:
        for m in suite.methods:
            grid = grid_of(suite, m)
            record = tuning.current_choice(suite.out, t, grid, suite.grids) if grid else None
            if record is not None:
                chosen[(t, m)] = tuning.chosen_option(record)
    return chosen


def _check_tunable(suite: Suite, grids: list[str]) -> None:
    """--tune chooses each grid's option: neither the suite's options nor a method name may set it."""
    fixed = sorted({tuning.grid_for(g)[0] for g in grids} & set(suite.base))
    if fixed:
        raise PearError(f"--tune chooses {', '.join(fixed)} on val200; do not also set it for every run")
    for m in suite.methods:
        overrides = method_overrides(m)
        grid = grid_of(suite, m)
        option = tuning.grid_for(grid)[0] if grid else None
        if option in overrides:
            raise PearError(
                f"--tune chooses {option} on val200, but suite method {m!r} sets it; drop "
                f"@{option}={overrides[option]:g} or --tune"
            )


def config(suite: Suite, task: str, method: str, seed: int, options: dict, folder: Path | None = None) -> TrainConfig:
    """The TrainConfig of one run: the suite's shared options, then `options`, then the method's."""
    values = {
        **suite.base,
        **options,
        **method_overrides(method),
        "data": str(suite.data),
        "task": task,
        "seed": seed,
        "out": str(folder or run_dir(suite.out, task, method, seed)),
        "progress": False,
    }
    try:
        return TrainConfig.from_dict(values)
    except TypeError as exc:
        raise PearError(f"bad suite options for {task}/{method}/seed{seed}: {exc}") from None


def check_folder(out: str | Path, data: str) -> None:
    """--out is a folder (or nothing yet) outside the data root."""
    if Path(out).exists() and not Path(out).is_dir():
        raise PearError(f"suite folder --out {out} exists and is not a folder; choose a folder for the suite")
    outside_data(Path(out), Path(data), "a suite folder")


def _check_tasks(tasks) -> None:
    """Every task names a folder inside the data root, as training's task names must (whether the
    folder holds a task is checked before a run trains: --list works on a data root still being laid out)."""
    for task in tasks:
        task_folder_name(task)


def check_folders(runs: list[Run]) -> None:
    """Every run folder that exists was made with the options its run has now (`changed_options`):
    what is listed as finished, aggregated or skipped is this suite's run."""
    for run in runs:
        if run.dir.exists():
            check_same_options(run)


def check_same_options(run: Run) -> None:
    """Refuse to mix a run folder made with other options into this suite's table (the same-run
    rule of `pear train --resume`, `pear.harness.run.same_run.changed_options`)."""
    args = RunDir(run.dir).args
    if not args.is_file():
        return
    recorded = read_mapping(args, "run options")  # its message names the file
    try:
        diff = changed_options(recorded, run.cfg, ignore=(run.stand_in,) if run.stand_in else ())
    except PearError as exc:
        raise PearError(f"{args}: {exc}; delete that run folder to train it again") from None
    if diff:
        shown = ", ".join(why or f"{k}: {a!r} there, {b!r} now" for k, (a, b, why) in sorted(diff.items()))
        raise PearError(
            f"run folder {run.dir} was made with other options ({shown}); use another suite "
            f"folder, or delete that run folder to train it again"
        )


def list_runs(runs: list[Run]) -> str:
    """One line per run: index, state (finished / recorded: a tuning run whose choice is recorded /
    started / pending), label, folder; after
    `check_folders`."""
    check_folders(runs)
    lines = []
    for i, run in enumerate(runs):
        state = (
            "finished" if run.finished else "recorded" if run.settled else "started" if run.dir.exists() else "pending"
        )
        note = f"  ({tuning.grid_for(run.tuned_by[1])[0]}: the val200 choice)" if run.tuned_by else ""
        lines.append(f"{i:5d}  {state:8s}  {run.label}  {run.dir}{note}")
    tuned = sum(r.tuning for r in runs)
    head = f"{len(runs)} runs (indices 0-{len(runs) - 1})"
    if tuned:
        head += f"; tuning runs 0-{tuned - 1} first: a tuned run needs its task's tuning runs finished"
    return "\n".join([head, *lines])
