"""Safe file writing, for every writer in Pear: a reader finds the old version or the
whole new one, never half of one, and a crash leaves nothing it cannot clean up.

`atomic_write_file` / `atomic_write_text` replace one file (temporary file, fsync,
rename); `atomic_dir_write` replaces a whole folder (a checkpoint, a dataset) with one
atomic exchange where Linux offers it (renameat2), else two renames that
`recover_dir` can undo. Files and folders get the mode the user's umask gives a plain
open()/mkdir(), not mkstemp's private one. `sha256_file` hashes a file in chunks.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import PearError


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # read it the portable way (and put it back at once)
    os.umask(mask)
    return mask


def default_mode(path: Path, is_dir: bool = False) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (private: 0600/0700) the mode a plain
    open()/mkdir() would have given it, so a saved checkpoint is as readable as any
    other file the user writes."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_dir_write(dest: Path, write) -> None:
    """Call `write(tmp_dir)`, then move tmp_dir to `dest`, replacing an older `dest`.
    The old version stays intact until the new one is complete. One writer per
    `dest` at a time (leftovers of an earlier, crashed writer are cleaned up)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    old = None
    try:
        default_mode(tmp, is_dir=True)
        write(tmp)
        for f in tmp.iterdir():
            if f.is_file() and not f.is_symlink():  # chmod and open would act on a link's target
                default_mode(f)  # some writers (safetensors) make their files private
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if dest.exists() and _exchange(tmp, dest):
            old = tmp  # now holds the previous version
        else:
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
            os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE), so readers
    never find `dest` missing, as they could between two plain renames. False where
    the OS or file system cannot; the caller then falls back to two renames."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def recover_dir(dest: Path) -> None:
    """Undo what a writer killed inside `atomic_dir_write` left behind: between its two
    renames `dest` is missing and the previous complete version sits in
    `.<name>.old-<pid>`, which is moved back; half-written temporary folders and
    superseded old versions are removed. Only real folders count: a link under such a
    name was not made by a writer here, and is neither moved into place nor followed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    olds = sorted(_own_dirs(dest, "old"), key=lambda p: p.lstat().st_mtime)
    if olds and not dest.exists() and not dest.is_symlink():
        os.replace(olds.pop(), dest)
    for leftover in [*olds, *_own_dirs(dest, "tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _own_dirs(dest: Path, kind: str) -> list[Path]:
    """`atomic_dir_write`'s hidden `.NAME.<kind>-*` folders beside `dest` (real folders only)."""
    return [p for p in dest.parent.glob(f".{glob.escape(dest.name)}.{kind}-*") if not p.is_symlink() and p.is_dir()]


def check_replaceable(dest: Path, names, what: str) -> None:
    """Refuse to replace `dest` unless it is missing or a folder of the kind Pear writes
    there: `names` lists what such a folder holds (a name ending in '/' is a folder).
    Anything else is the user's and is never deleted: the error names it, and so is a
    symlink under one of those names (Pear writes no links; appending to a linked train.log
    would write into its target). Hidden leftovers of Pear's own interrupted writes
    (`.NAME.tmp-*`, `.NAME.old-*`) are allowed."""
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise PearError(f"{dest} exists and is not a folder; Pear will not replace it with a {what}")
    allowed = {n.rstrip("/") for n in names}
    foreign = sorted(
        p.name
        for p in dest.iterdir()
        if p.is_symlink()
        or (p.name not in allowed and not (p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)))
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PearError(
            f"{dest} holds files Pear did not write there ({shown}); it is not a {what}, so Pear will "
            f"not replace it. Move them away or choose another folder"
        )


def atomic_write_file(path: Path, write) -> None:
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it over
    `path`: a reader sees the old file or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        default_mode(Path(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_file(path, lambda fh: fh.write(text.encode("utf-8")))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_append(path: Path):
    """`path` opened for appending text (created if missing), never through a symbolic link:
    a log a process keeps open cannot be written atomically, but it must not follow a link
    someone planted in its place."""
    try:
        return open(
            path, "a", encoding="utf-8", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PearError(f"{path} is a symbolic link; Pear does not write through links it did not make") from None
        raise
