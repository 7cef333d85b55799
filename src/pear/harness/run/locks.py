"""Folder locks: a run folder or a suite folder held by one writer at a time, or shared by
`pear suite --index` runs (an flock on FOLDER/.pear-lock, `RunDir.LOCK`, that records the
holder's PID and that the kernel drops when the process dies), and `waiting_for`, which waits
its turn on a folder that nothing is written into (a data root being built).

`pear.harness.run.rundir` re-exports these names."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

from ...errors import PearError

LOCK_FILE = ".pear-lock"
_PID_LINE = re.compile(rb"(\d+\n?)?")  # what a lock file holds: nothing yet, or its last holder's PID


def lock_folder(folder: Path, what: str, shared: bool = False) -> int:
    """Hold `folder` for this process (flock on FOLDER/.pear-lock, which records the PID)
    and return the lock's file descriptor; a folder another live process holds is refused
    at once, naming it. A killed holder's lock is gone with it, so it never blocks.

    shared: several processes may hold the folder together (`pear suite --index` on one
    suite folder), but not while one holds it alone, nor it while they do."""
    path = Path(folder) / LOCK_FILE
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
