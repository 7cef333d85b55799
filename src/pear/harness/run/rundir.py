"""The run folder: validated before anything is created or removed, held by one writer
at a time (an flock the kernel drops when the process dies: `locks`), written only through
guarded atomic writes, and `train.log` beside the console output.

`--overwrite` never deletes first: the new run trains in a hidden folder beside the old
one (`.NAME.new-PID`) and replaces it in one atomic swap when it is complete, so a
failure at any point leaves the old run as it was. Only a folder that holds nothing but
what a run writes is ever replaced, and never the data root, a folder inside it or one
that contains it.

`RunDir` owns the folder's layout: the name of every file and folder a run writes there,
and their paths; nothing else in Pear spells them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import atomic_dir_write, atomic_write_text, check_replaceable, open_append
from ...errors import PearError
from ..files import read_mapping
from . import distributed as D
from .locks import LOCK_FILE, lock_folder, unlock, waiting_for  # noqa: F401  (re-exported)
from .options import differences

log = logging.getLogger("pear")


@dataclass(frozen=True)
class RunDir:
    """The layout of the run folder at `path`: `RunDir(out).metrics` is OUT/metrics.json,
    and so on for everything `pear train` writes there. The names are class attributes
    (`RunDir.METRICS`); `NAMES` lists them all, `FOLDERS` those that are folders."""

    path: Path

    ARGS = "args.yaml"  # the run's options (TrainConfig.to_dict), written first
    METRICS = "metrics.json"  # the result, written last: a run that has it is finished
    REPORT = "report.json"  # per-position report (methods with Pear adapters)
    PLAN = "plan.json"  # the prune plan (methods that prune)
    HISTORY = "history.json"  # one record per epoch
    LOG = "train.log"
    CHECKPOINT = "checkpoint"  # the final checkpoint (folder)
    STATE = "state"  # the resumable state, rewritten every epoch (folder)
    BEST = "best"  # the best epoch's checkpoint with --select-on (folder)
    TENSORBOARD = "tensorboard"  # event files with --tensorboard (folder)
    BACKBONE = "backbone.safetensors"  # a randomly initialised backbone, as the run drew it
    LOCK = LOCK_FILE
    FOLDERS = (CHECKPOINT, STATE, BEST, TENSORBOARD)
    NAMES = (ARGS, METRICS, REPORT, PLAN, HISTORY, LOG, *FOLDERS, BACKBONE, LOCK)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def args(self) -> Path:
        return self.path / self.ARGS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def plan(self) -> Path:
        return self.path / self.PLAN

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def state(self) -> Path:
        return self.path / self.STATE

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def backbone(self) -> Path:
        return self.path / self.BACKBONE

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def is_run(self) -> bool:
        """Whether a run was started here (its args.yaml is written before anything else)."""
        return self.args.is_file()

    @property
    def finished(self) -> bool:
        """Whether the run here ended (metrics.json is written last)."""
        return self.metrics.is_file()

    def kept_backbone(self) -> Path | None:
        """RUN/backbone.safetensors, when the run kept the backbone it drew at random: drawn
        again from the seed it could have other bits, since torch's CPU random kernels differ
        between machines (vector paths). Ask only for a run on a random backbone
        (`backbones.random_backbone`)."""
        return self.backbone if self.backbone.is_file() else None


# A randomly initialised backbone, as the run drew it (`backbones.random_backbone`).
BACKBONE_FILE = RunDir.BACKBONE
# Everything `pear train` writes into a run folder (a name ending in '/' is a folder).
RUN_FILES = tuple(f"{n}/" if n in RunDir.FOLDERS else n for n in RunDir.NAMES)


@dataclass
class RunFolder:
    """Where a run writes (`path`) and where its result ends up (`dest`); they differ while
    an --overwrite run trains beside the run it replaces."""

    path: Path
    dest: Path
    locks: list[int] = field(default_factory=list)

    @property
    def dir(self) -> RunDir:
        """The layout of the folder the run writes into now (`path`)."""
        return RunDir(self.path)

    @property
    def staged(self) -> bool:
        return self.path != self.dest

    def finish(self) -> None:
        """Put a staged run in place of the old one: one atomic swap (`atomic_dir_write`),
        then the old run is removed."""
        if self.staged:

            def move_in(tmp: Path) -> None:
                for p in list(self.path.iterdir()):  # listed before any entry moves
                    os.replace(p, tmp / p.name)

            atomic_dir_write(self.dest, move_in)
            self.path.rmdir()
            self.path = self.dest

    def close(self) -> None:
        """Release the locks; a staged run that did not finish is removed (the old run stays)."""
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)
        for h in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
            log.removeHandler(h)
            h.close()
        for fd in self.locks:
            unlock(fd)
        self.locks.clear()


def prepare_run_dir(cfg, ctx: D.Context) -> RunFolder:
    """Rank 0 checks, locks and creates the run folder; the other ranks wait for its
    verdict and stop with a one-line error of their own when it failed, instead of
    losing their connection to rank 0 in the next collective."""
    folder, error = None, None
    if ctx.is_main:
        try:
            folder = _make_run_dir(cfg)
        except PearError as exc:
            error = exc
    verdict = D.broadcast_object(None if error is not None else (str(folder.path) if folder else None), ctx)
    if error is not None:
        raise error
    if verdict is None:
        raise PearError(
            f"rank {ctx.rank} stopped: rank 0 could not prepare the run folder {cfg.out} (its error is above)"
        )
    return folder if folder is not None else RunFolder(Path(verdict), Path(cfg.out))


def _make_run_dir(cfg) -> RunFolder:
    out = Path(cfg.out)
    outside_data(out, Path(cfg.data))
    if (out.is_symlink() and not out.is_dir()) or (out.exists() and not out.is_dir()):
        raise PearError(f"run folder {out} exists and is not a folder")
    existing = out.is_dir() and any(out.iterdir())
    if existing and not (cfg.overwrite or cfg.resume):
        raise PearError(f"run folder {out} already exists; pass --resume to continue it or --overwrite to replace it")
    if existing:
        check_replaceable(out, RUN_FILES, "Pear run folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PearError(f"cannot create run folder {out}: {exc.strerror or exc}") from None
    folder = RunFolder(out, out, [lock_folder(out, "run folder")])
    try:
        if cfg.resume:
            check_same_run(out, cfg)
        if existing and cfg.overwrite:
            _remove_stale_stages(out)
            folder.path = out.parent / f".{out.name}.new-{os.getpid()}"
            folder.path.mkdir()
            folder.locks.append(lock_folder(folder.path, "run folder"))
        probe = folder.path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        folder.close()
        raise PearError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
    except PearError:
        folder.close()
        raise
    return folder


def outside_data(out: Path, data: Path, what: str = "a run folder") -> None:
    o, d = out.resolve(), data.resolve()
    if o == d or d.is_relative_to(o) or o.is_relative_to(d):
        raise PearError(
            f"--out {out} is {'the data root' if o == d else 'inside' if o.is_relative_to(d) else 'a parent of'} "
            f"--data {data}; {what} must lie outside the data root, whose files Pear never "
            f"writes or removes"
        )


def _remove_stale_stages(out: Path) -> None:
    """Staging folders of --overwrite runs that were killed (nobody holds their lock)."""
    for stale in out.parent.glob(f".{out.name}.new-*"):
        try:
            fd = lock_folder(stale, "run folder")
        except PearError:
            continue  # a live run: not ours to remove
        unlock(fd)
        shutil.rmtree(stale, ignore_errors=True)


def check_same_run(out: Path, cfg) -> None:
    """--resume continues the run in `out` only with the options it was started with
    (those that change the result); each difference is named."""
    run = RunDir(out)
    args = run.args
    if not args.is_file():
        if run.state.exists() or run.metrics.exists():
            raise PearError(
                f"run folder {out} has no args.yaml, so --resume cannot check that it continues the same "
                f"run; start again with --overwrite"
            )
        return
    try:
        diff = differences(read_mapping(args, "run options"), cfg)
    except PearError as exc:
        raise PearError(f"{args}: {exc}") from None
    if diff:
        raise PearError(
            f"--resume continues the run in {out} with its own options, but these differ: "
            f"{'; '.join(diff)}. Resume with the run's options, or train into another --out"
        )


def log_failure(exc: BaseException) -> None:
    """Write the error that ended the run into train.log (the console already shows it)."""
    for h in log.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (exc,), None))


def write_text(path: Path, text: str) -> None:
    guarded(lambda: atomic_write_text(path, text), path)


def guarded(write, path: Path) -> None:
    """Turn a failed write (disk full, read-only folder) into a clear error; the
    previous complete file or folder is untouched because writes are atomic."""
    try:
        write()
    except OSError as exc:
        raise PearError(
            f"could not write {path}: {exc.strerror or exc}. The previous complete {path.name} (if any) is intact."
        ) from None


class _LogFile(logging.FileHandler):
    """train.log, opened without following a symbolic link planted in its place."""

    def _open(self):
        return open_append(Path(self.baseFilename))


def setup_logging(out: Path, ctx: D.Context) -> None:
    """Rank 0 logs everything to stdout and RUN/train.log; other ranks only warnings,
    tagged with their rank, to stdout (torchrun merges every rank's output)."""
    log.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter(
        "%(asctime)s %(message)s" if ctx.is_main else f"%(asctime)s [rank {ctx.rank}] %(message)s", "%H:%M:%S"
    )
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if ctx.is_main:
        fh = _LogFile(RunDir(out).log, encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
