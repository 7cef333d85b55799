"""Files the user names on the command line (`pear inspect --plot FILE`, `pear suite
--emit-slurm FILE`): one rule for where Pear may write them, `write_output`.

Run folders and datasets have rules of their own (`pear.harness.run.rundir`, the builders);
this is for the single files a command writes where the user points it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_file
from ..errors import PearError
from .run.checkpoint_kinds import MARKERS
from .run.rundir import RunDir
from .run.state import STATE_FILES

# A folder holding one of these is one Pear writes whole (a checkpoint, a saved state).
_PEAR_FOLDER_MARKERS = (*MARKERS.values(), STATE_FILES[1])


@dataclass(frozen=True)
class OutputKind:
    """What a command writes: `name` for messages, and `signature`, the bytes every such file
    starts with (how an earlier file of the same kind is recognised)."""

    name: str
    signature: bytes


PNG = OutputKind("PNG image", b"\x89PNG\r\n\x1a\n")


def write_output(path: str | Path, write, kind: OutputKind, data: str | Path | None = None) -> Path:
    """Write the user-named file `path` with `write(binary_file)`, atomically, under one rule:

    - `path` must name a file in a folder that exists: a folder (or a link to one) is
      refused, and no missing parent folder is made, so a typo never creates a tree;
    - never a symbolic link: Pear does not write through it, nor silently replace it;
    - never inside what Pear writes whole: a run folder's own files and folders
      (checkpoint/, state/, metrics.json ...) or a checkpoint or state folder anywhere,
      nor inside the data root `data` (when the command has one);
    - an existing file is replaced only when it is of the same kind, which its first
      bytes show (`kind.signature`: a PNG for a plot, Pear's own header for a Slurm
      script). Anything else there is the user's and stays as it was.

    The new file is written beside `path` and renamed over it (`pear.atomic`), so a reader
    sees the old file or the whole new one, and the rename replaces a directory entry,
    never what a link that appeared meanwhile points at. Returns `path`."""
    path = Path(path)
    check_output(path, kind, data)
    try:
        atomic_write_file(path, write)
    except OSError as exc:
        raise PearError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_output(path: str | Path, kind: OutputKind, data: str | Path | None = None) -> None:
    """`write_output`'s rule alone: a PearError naming `path` and why, or nothing."""
    path = Path(path)
    if path.is_symlink():
        raise PearError(f"{path} is a symbolic link; Pear will not write a {kind.name} through it. Name a plain file")
    if path.is_dir():
        raise PearError(f"{path} is a folder; name a file for the {kind.name}, e.g. {path / 'out'}")
    if not path.parent.is_dir():
        raise PearError(
            f"folder {path.parent} does not exist; create it first, or name a file in an existing "
            f"folder for the {kind.name}"
        )
    target = path.parent.resolve() / path.name
    if data is not None and target.is_relative_to(Path(data).resolve()):
        raise PearError(f"{path} is inside the data root {data}, whose files Pear never writes; name a file outside it")
    owner = _pear_folder(target)
    if owner is not None:
        raise PearError(f"{path} is inside {owner}, which Pear writes whole; name a file outside it")
    if path.exists() and not (path.is_file() and _starts_with(path, kind.signature)):
        raise PearError(
            f"{path} exists and is not a {kind.name} Pear wrote; Pear will not replace it. Move it "
            f"away or name another file"
        )


def _pear_folder(target: Path) -> Path | None:
    """The checkpoint, state or run-owned folder `target` would lie in, or the run folder
    when `target` is one of a run's own files; None elsewhere."""
    if RunDir(target.parent).is_run and target.name in RunDir.NAMES:
        return target.parent
    for folder in target.parents:
        if any((folder / m).is_file() for m in _PEAR_FOLDER_MARKERS):
            return folder
        if folder.name in RunDir.FOLDERS and RunDir(folder.parent).is_run:
            return folder
    return None


def _starts_with(path: Path, signature: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(signature)) == signature
    except OSError:
        return False
