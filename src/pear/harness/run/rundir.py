"""The run folder: validated before anything is created or removed, held by one writer
at a time (an flock the kernel drops when the process dies), written only through
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

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import atomic_dir_write, atomic_write_text, check_replaceable, open_append
from ...errors import PearError
from ..files import read_mapping
from . import distributed as D
from .options import differences

log = logging.getLogger("pear")

LOCK_FILE = ".pear-lock"
_PID_LINE = re.compile(rb"(\d+\n?)?")  # what a lock file holds: nothing yet, or its last holder's PID


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


# A randomly initialised backbone, as the run drew it (`runs.random_backbone`).
BACKBONE_FILE = RunDir.BACKBONE
# Everything `pear train` writes into a run folder (a name ending in '/' is a folder).
RUN_FILES = tuple(f"{n}/" if n in RunDir.FOLDERS else n for n in RunDir.NAMES)


def lock_folder(folder: Path, what: str, shared: bool = False) -> int:
    """Hold `folder` for this process (flock on FOLDER/.pear-lock, which records the PID)
    and return the lock's file descriptor; a folder another live process holds is refused
    at once, naming it. A killed holder's lock is gone with it, so it never blocks.

    shared: several processes may hold the folder together (`pear suite --index` on one
    suite folder), but not while one holds it alone, nor it while they do."""
    path = RunDir(folder).lock
    fd = _open_lock(path, what, folder)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        holder = (os.pread(fd, 64, 0).decode("ascii", "replace").split() or ["unknown"])[0]
        sharers = not shared and _shared_by_others(fd)
        os.close(fd)
        if sharers:
            raise PearError(
                f"{what} {folder} is in use by other Pear processes that share it (PID {holder} among "
                f"them, e.g. `pear suite --index` runs); wait for them to end or stop them, or choose "
                f"another folder"
            ) from None
        raise PearError(
            f"{what} {folder} is in use by another Pear process (PID {holder}); wait for it to end or "
            f"stop it, or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _open_lock(path: Path, what: str, folder: Path) -> int:
    """Open (or create) the lock file without following a symlink, and only if it is one
    Pear made: a plain file with one link, empty or holding a PID. Anything else planted
    under that name (a link to the user's notes, a FIFO, someone's file) is refused
    untouched, since the lock truncates the file and writes its PID into it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PearError(
                f"{path} is a symbolic link; Pear will not write its lock through it. Remove it (it "
                f"is not Pear's) and try again"
            ) from None
        raise PearError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    head = os.pread(fd, 64, 0) if stat.S_ISREG(st.st_mode) else b""
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not _PID_LINE.fullmatch(head):
        os.close(fd)
        raise PearError(
            f"{path} is not a lock file Pear made (a lock file is a plain file holding a PID); "
            f"Pear will not write over it. Move it away and try again"
        )
    return fd


def _shared_by_others(fd: int) -> bool:
    """Whether the processes holding `fd`'s lock file hold it shared (a shared lock is granted)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


@contextmanager
def waiting_for(folder: Path, what: str):
    """Hold `folder` alone for the `with` block, waiting while another process holds it (it
    says so first): an flock on the folder itself, so nothing is written into it (a data
    root), and the kernel drops it when its holder dies."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PearError(f"cannot open {folder} for {what}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"pear: waiting for another Pear process's {what} in {folder}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


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
