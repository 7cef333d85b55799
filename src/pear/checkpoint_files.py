"""The sealed tensor folder every Pear checkpoint is: one safetensors file + one JSON file.

`write_tensor_dir` writes the tensors and a JSON record of them (their names, shapes and
dtypes, the file's SHA-256) as one folder, atomically (`pear.atomic.atomic_dir_write`, so
a crash never leaves a half-written checkpoint), and seals the JSON: `parts_sha256` holds
a SHA-256 of each top-level field's canonical JSON, so a field edited by hand is refused
by name. `read_tensor_dir` checks all of that before anything is used. Task checkpoints
(`pear.checkpoint`), the harness's training state and plain run checkpoints are written
in this form. Import these names from `pear.checkpoint`, which re-exports them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir_write, check_replaceable, sha256_file
from .card import CARD_FILE
from .errors import PearError

# Version 2 seals the JSON: `parts_sha256` holds a SHA-256 of each top-level field's
# canonical JSON. Version 1 files (written before) are still read, checked by the
# consistency rules alone.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
TENSORS_FILE = "adapters.safetensors"
CONFIG_FILE = "pear_config.json"
MAX_CONFIG_BYTES = 16 * 2**20
MAX_TENSOR_FILE_BYTES = 8 * 2**30


def write_tensor_dir(
    directory: str | Path,
    tensors: dict[str, torch.Tensor],
    info: dict,
    tensors_file: str = TENSORS_FILE,
    info_file: str = CONFIG_FILE,
    extra: Callable[[Path, dict], None] | None = None,
) -> None:
    """Atomically write `tensors` (safetensors) and `info` (JSON, with the tensors'
    names, shapes and file hash added) as one folder; `extra(tmp, info)` may add the
    model card (CARD_FILE) to it."""
    info = dict(info)
    info["tensors"] = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()
    }

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / tensors_file), metadata={"format": str(info.get("format"))})
        info["tensors_sha256"] = sha256_file(tmp / tensors_file)
        (tmp / info_file).write_text(json.dumps(seal(info), indent=1, allow_nan=False), encoding="utf-8")
        if extra is not None:
            extra(tmp, info)

    check_replaceable(Path(directory), {tensors_file, info_file, CARD_FILE}, "checkpoint folder")
    atomic_dir_write(Path(directory), write)


def _part_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def seal(info: dict) -> dict:
    """`info` with `parts_sha256`: the SHA-256 of each top-level field's canonical JSON
    (sorted keys, no spaces), so any edit is refused and the refusal names the field."""
    info = {k: v for k, v in info.items() if k != "parts_sha256"}
    info["parts_sha256"] = {k: _part_hash(v) for k, v in info.items()}
    return info


def _check_seal(info: dict, cfg_path: Path) -> None:
    recorded = info.get("parts_sha256")
    if not isinstance(recorded, dict):
        raise _bad(
            cfg_path,
            "has no valid 'parts_sha256' (the hashes of its fields): it was edited by hand or "
            "written by another program",
        )
    fields = set(info) - {"parts_sha256"}
    changed = sorted(k for k in fields & set(recorded) if recorded[k] != _part_hash(info[k]))
    added, removed = sorted(fields - set(recorded)), sorted(set(recorded) - fields)
    if changed or added or removed:
        parts = [
            f"{what} {', '.join(map(repr, keys))}"
            for what, keys in (("changed", changed), ("added", added), ("removed", removed))
            if keys
        ]
        raise _bad(
            cfg_path,
            f"was edited after it was saved ({'; '.join(parts)} differ from the recorded "
            f"SHA-256 of each field); restore the original file or save the checkpoint again",
        )


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _bad(path: Path, what: str) -> PearError:
    return PearError(f"{path}: {what}")


def read_tensor_dir(
    directory: str | Path, fmt: str, tensors_file: str = TENSORS_FILE, info_file: str = CONFIG_FILE
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a folder written by `write_tensor_dir`, checking format, version, file hash
    and every tensor's name and shape; PearError says exactly what is wrong."""
    d = Path(directory)
    cfg_path, t_path = d / info_file, d / tensors_file
    if not d.is_dir():
        raise PearError(f"checkpoint folder {d} does not exist")
    for f in (cfg_path, t_path):
        if not f.is_file():
            raise PearError(f"checkpoint folder {d} has no {f.name}; is it a Pear checkpoint?")
    info = _read_info(cfg_path, fmt)
    return info, _read_tensors(t_path, info, info_file)


def _read_info(cfg_path: Path, fmt: str) -> dict:
    """The folder's JSON record, of format `fmt` and a version this Pear reads, its seal checked."""
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise _bad(cfg_path, f"is larger than {MAX_CONFIG_BYTES} bytes; not a Pear config")
    try:
        info = json.loads(cfg_path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(cfg_path, f"is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise _bad(cfg_path, f"field 'format' must be {fmt!r}; this is not that kind of Pear checkpoint")
    version = info.get("format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise _bad(
            cfg_path,
            f"format_version {version!r} is not supported (this Pear reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})",
        )
    if version >= 2:
        _check_seal(info, cfg_path)
    declared, expected_sha = info.get("tensors"), info.get("tensors_sha256")
    if (
        not isinstance(declared, dict)
        or not isinstance(expected_sha, str)
        or not all(isinstance(v, dict) for v in declared.values())
    ):
        raise _bad(
            cfg_path,
            "is malformed: 'tensors' must be an object of {shape, dtype} entries and 'tensors_sha256' a string",
        )
    return info


def _read_tensors(t_path: Path, info: dict, info_file: str) -> dict[str, torch.Tensor]:
    """The tensors of `t_path`, once its size, hash, names and shapes agree with `info`."""
    declared = info["tensors"]
    size = t_path.stat().st_size
    if size > MAX_TENSOR_FILE_BYTES:
        raise _bad(t_path, f"is {size} bytes, larger than any Pear checkpoint should be")
    if sha256_file(t_path) != info["tensors_sha256"]:
        raise _bad(
            t_path,
            f"does not match the SHA-256 recorded in {info_file}: the file is truncated, "
            "edited or from another checkpoint",
        )
    try:
        tensors = load_file(str(t_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _bad(t_path, f"is not a readable safetensors file ({exc})") from None
    if set(tensors) != set(declared):
        missing = sorted(set(declared) - set(tensors))[:5]
        unexpected = sorted(set(tensors) - set(declared))[:5]
        raise _bad(t_path, f"tensors do not match {info_file}: missing {missing}, unexpected {unexpected}")
    for k, v in tensors.items():
        if list(v.shape) != declared[k].get("shape"):
            raise _bad(t_path, f"tensor {k!r} has shape {list(v.shape)}, {info_file} says {declared[k].get('shape')}")
    return tensors
