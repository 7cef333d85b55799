"""VTAB-1k in the folder format the field uses (NOAH, FacT, RepAdapter, Lily).

Layout::

    <root>/<task>/train800.txt  val200.txt  train800val200.txt  test.txt  [classes.txt]
    <root>/<task>/images/<split>/000000.jpg ...

Each list line is ``<relative image path> <integer label>``. Every list file is read
strictly: whatever is wrong with it is reported as a `PearError` naming ``file:line``
and the offending value, because these files are hand-made or converted by scripts and
a silent mislabel would only show up as a mysteriously bad accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from pear.errors import PearError

from .images import build_transform, load_image  # noqa: F401  (build_transform: importable here, as before)
from .vtab_tasks import TASK_ALIASES, VTAB_GROUPS, VTAB_TASKS  # noqa: F401  (re-exported)

SPLITS = ("train800", "val200", "train800val200", "test")

# A real VTAB-1k list is well under 1 MB; the cap only stops a wrong path (a video, a
# disk image) from being read into memory whole.
MAX_LIST_BYTES = 200 * 1024 * 1024

_INT_RE = re.compile(r"-?[0-9]+")
# Longer digit strings are out of range for any real class count; not converting them
# avoids Python's int-from-string digit limit error.
_MAX_LABEL_DIGITS = 18
# A task without classes.txt has as many classes as its largest label + 1; a stray big
# label would otherwise ask for a classifier head too large to allocate.
MAX_INFERRED_CLASSES = 100_000


@dataclass(frozen=True)
class TaskInfo:
    """What a task folder holds: its canonical name, folder and classes."""

    name: str
    dir: Path
    num_classes: int
    class_names: list[str] | None


def read_at_most(fh, limit: int) -> bytes:
    """Up to `limit` bytes of `fh`, read in 1 MiB chunks: `fh.read(limit)` would
    allocate all `limit` bytes up front, however small the file."""
    chunks, size = [], 0
    while size < limit:
        chunk = fh.read(min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _quote(text: str, limit: int = 40) -> str:
    """A short, escaped snippet of a line for an error message: list files may be large
    or hostile, and a message should point at the problem, not reprint the file."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _inside(path: Path, task_root: Path, what: str, where: str = "") -> Path:
    """`path` resolved, refused unless it lies inside the (resolved) task folder: a list
    or classes.txt that is a symlink to /etc/passwd is never read. `what` names the path in
    the message, `where` (a list's file:line) comes first."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop on Python < 3.13
        raise PearError(f"{where}cannot resolve {what}: {e}") from None
    if not resolved.is_relative_to(task_root):
        raise PearError(
            f"{where}{what} resolves to {resolved}, outside the task folder {task_root}; Pear reads "
            f"only files inside the task folder"
        )
    return resolved


def _read_text(path: Path, what: str, task_root: Path) -> str:
    path = _inside(path, task_root, f"{what} {path}")
    try:
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise PearError(
                f"{path}: {what} is {size} bytes; expected a text file under "
                f"{MAX_LIST_BYTES} bytes (is this the right file?)"
            )
        with path.open("rb") as fh:
            # stat size can lie (pipes, /proc), so the read itself is capped too.
            raw = read_at_most(fh, MAX_LIST_BYTES + 1)
    except FileNotFoundError:
        raise PearError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise PearError(f"{what} {path} is a directory; expected a text file") from None
    except OSError as e:
        raise PearError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(raw) > MAX_LIST_BYTES:
        raise PearError(f"{path}: {what} is larger than {MAX_LIST_BYTES} bytes; expected a small text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        bad = raw[e.start : e.end]
        raise PearError(f"{path}:{line}: byte(s) {bad[:8]!r} are not valid UTF-8; expected a UTF-8 text file") from None


def _lines(text: str) -> list[str]:
    # str.splitlines also breaks on form feeds, \x1c, \u2028 ...; counting only \n keeps
    # reported line numbers equal to what editors show.
    return [line.rstrip("\r") for line in text.split("\n")]


def _parse_label(field: str, where: str, num_classes: int | None) -> int:
    if not _INT_RE.fullmatch(field):
        raise PearError(
            f"{where}: label {_quote(field)} is not an integer; expected '<relative image path> <integer label>'"
        )
    expected = "a label >= 0" if num_classes is None else f"a label in [0, {num_classes})"
    digits = field.lstrip("-")
    if len(digits) > _MAX_LABEL_DIGITS:
        raise PearError(f"{where}: label {field[:30]}... is out of range; expected {expected}")
    label = int(field)
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise PearError(f"{where}: label {label} is out of range; expected {expected}")
    return label


def _resolve_image(rel: str, where: str, task_root: Path) -> Path:
    if "\x00" in rel:
        raise PearError(f"{where}: image path {_quote(rel)} contains a NUL byte")
    if Path(rel).is_absolute():
        raise PearError(
            f"{where}: image path {_quote(rel)} is absolute; expected a path relative to the task folder {task_root}"
        )
    resolved = _inside(task_root / rel, task_root, f"image path {_quote(rel)}", f"{where}: ")
    try:
        is_file = resolved.is_file()
    except OSError as e:
        raise PearError(f"{where}: cannot access image {_quote(rel)}: {e.strerror or e}") from None
    if not is_file:
        raise PearError(f"{where}: image {resolved} (listed as {_quote(rel)}) does not exist or is not a file")
    return resolved


def _task_root(task_dir: Path) -> Path:
    try:
        return task_dir.resolve(strict=True)
    except (OSError, RuntimeError):
        raise PearError(f"task folder {task_dir} does not exist") from None


def _parse_list(path: Path, task_dir: Path, num_classes: int | None) -> list[tuple[Path, int]]:
    task_root = _task_root(task_dir)
    text = _read_text(path, "list file", task_root)
    items: list[tuple[Path, int]] = []
    for lineno, line in enumerate(_lines(text), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            raise PearError(
                f"{where}: {len(fields)} field(s) in {_quote(line)}; expected "
                "'<relative image path> <integer label>' (paths may not contain spaces)"
            )
        label = _parse_label(fields[1], where, num_classes)
        items.append((_resolve_image(fields[0], where, task_root), label))
    if not items:
        raise PearError(f"{path}: list file has no entries; expected lines of '<relative image path> <integer label>'")
    return items


def read_list(path: str | Path, task_dir: str | Path, num_classes: int) -> list[tuple[Path, int]]:
    """Parse a VTAB list file into ``(resolved image path, label)`` pairs.

    Blank lines are skipped. Every listed image must exist and lie inside `task_dir`
    (after resolving symlinks), and every label must be in ``[0, num_classes)``;
    anything else raises `PearError` naming ``file:line`` and the value.
    """
    return _parse_list(Path(path), Path(task_dir), num_classes)


def _read_class_names(path: Path, task_dir: Path) -> list[str]:
    lines = _lines(_read_text(path, "class names file", _task_root(task_dir)))
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise PearError(
                f"{path}:{lineno}: empty class name; expected one class name per line (line n names label n-1)"
            )
        if name in seen:
            raise PearError(
                f"{path}:{lineno}: class name {_quote(name)} repeats line {seen[name]}; expected distinct names"
            )
        seen[name] = lineno
        names.append(name)
    if not names:
        raise PearError(f"{path}: class names file is empty; expected one name per line")
    return names


def _task_folder_name(task: str) -> str:
    if not task or task in (".", "..") or "/" in task or "\\" in task or "\x00" in task:
        raise PearError(
            f"task {task!r} is not a folder name; expected the name of a folder inside the data root, e.g. 'cifar'"
        )
    return task


def _available_tasks(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# train800val200 and test are what the default protocol reads (and what a custom
# task's class count is inferred from); train800/val200 are checked when used.
_REQUIRED_LISTS = ("train800val200.txt", "test.txt")


def task_info(root: str | Path, task: str) -> TaskInfo:
    """Locate `task` under `root` and work out its class count.

    Built-in VTAB tasks (or their aliases, in either direction) use the standard class
    count. Any other folder uses ``classes.txt`` if present, else the largest label in
    train800val200.txt and test.txt plus one.
    """
    root = Path(root)
    if not root.is_dir():
        raise PearError(f"data root {root} does not exist or is not a folder")
    task = _task_folder_name(task)
    canonical = TASK_ALIASES.get(task, task)
    spellings = [task, canonical] + [a for a, c in TASK_ALIASES.items() if c == canonical]
    task_dir = next((root / s for s in dict.fromkeys(spellings) if (root / s).is_dir()), None)
    if task_dir is None:
        available = _available_tasks(root)
        listing = ", ".join(available) if available else "none"
        raise PearError(f"task folder {root / task} does not exist; task folders in {root}: {listing}")
    for list_name in _REQUIRED_LISTS:
        if not (task_dir / list_name).is_file():
            raise PearError(
                f"task folder {task_dir} has no {list_name}; expected the VTAB "
                f"list files {', '.join(s + '.txt' for s in SPLITS)}"
            )
    classes_file = task_dir / "classes.txt"
    class_names = _read_class_names(classes_file, task_dir) if classes_file.is_file() else None
    if canonical in VTAB_TASKS:
        num_classes = VTAB_TASKS[canonical]
        if class_names is not None and len(class_names) != num_classes:
            raise PearError(f"{classes_file} names {len(class_names)} classes; VTAB task {canonical} has {num_classes}")
    elif class_names is not None:
        num_classes = len(class_names)
    else:
        num_classes = 1 + max(
            label for name in _REQUIRED_LISTS for _, label in _parse_list(task_dir / name, task_dir, None)
        )
        if num_classes > MAX_INFERRED_CLASSES:
            raise PearError(
                f"task folder {task_dir}: its largest label, {num_classes - 1}, would make "
                f"{num_classes} classes (more than {MAX_INFERRED_CLASSES}); labels are class "
                f"indices from 0. If there really are that many classes, name them in "
                f"{task_dir / 'classes.txt'}"
            )
    return TaskInfo(name=canonical, dir=task_dir, num_classes=num_classes, class_names=class_names)


class VtabDataset(Dataset):
    """One split of one VTAB-format task; images are decoded lazily per item."""

    def __init__(self, root: str | Path, task: str, split: str, transform: Callable[[Image.Image], torch.Tensor]):
        if split not in SPLITS:
            raise PearError(f"split {split!r} is unknown; expected one of {', '.join(SPLITS)}")
        self.info = task_info(root, task)
        list_path = self.info.dir / f"{split}.txt"
        if not list_path.is_file():
            raise PearError(f"task folder {self.info.dir} has no {split}.txt, needed for split {split!r}")
        self.split = split
        self.samples = read_list(list_path, self.info.dir, self.info.num_classes)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.transform), label
