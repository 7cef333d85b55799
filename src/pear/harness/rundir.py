"""The run folder: created once by rank 0, written only through guarded atomic writes,
and `train.log` beside the console output."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import PearError
from . import distributed as D

log = logging.getLogger("pear")


def prepare_run_dir(cfg, ctx: "D.Context") -> Path:
    """Rank 0 checks and creates the run folder `cfg.out`; the other ranks wait for its
    verdict and stop with a one-line error of their own when it failed, instead of
    losing their connection to rank 0 in the next collective."""
    out = Path(cfg.out)
    error = None
    if ctx.is_main:
        try:
            _make_run_dir(out, overwrite=cfg.overwrite, resume=cfg.resume)
        except PearError as exc:
            error = exc
    failed = D.broadcast_object(error is not None, ctx)
    if error is not None:
        raise error
    if failed:
        raise PearError(f"rank {ctx.rank} stopped: rank 0 could not prepare the run folder {out} (its error is above)")
    return out


def _make_run_dir(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PearError(f"run folder {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise PearError(f"run folder {out} already exists; pass --resume to continue it or --overwrite to replace it")
    if out.exists() and overwrite and not resume:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PearError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> None:
    guarded(lambda: atomic_write_text(path, text), path)


def guarded(write, path: Path) -> None:
    """Turn a failed write (disk full, read-only folder) into a clear error; the
    previous complete file or folder is untouched because writes are atomic."""
    try:
        write()
    except OSError as exc:
        raise PearError(f"could not write {path}: {exc.strerror or exc}. The previous complete "
                        f"{path.name} (if any) is intact.") from None


def setup_logging(out: Path, ctx: "D.Context") -> None:
    """Rank 0 logs everything to stdout and RUN/train.log; other ranks only warnings,
    tagged with their rank, to stdout (torchrun merges every rank's output)."""
    log.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s" if ctx.is_main else f"%(asctime)s [rank {ctx.rank}] %(message)s",
                            "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if ctx.is_main:
        fh = logging.FileHandler(out / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
