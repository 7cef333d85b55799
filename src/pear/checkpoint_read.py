"""Reading a task checkpoint: `read_checkpoint` gives a validated `TaskCheckpoint`.

On top of the sealed folder's own checks (`pear.checkpoint_files.read_tensor_dir`), every
field that loading, `pear inspect` and `pear predict` use is checked here before anything
is applied: the Pear config, each position's record and how the positions share, the
tensors stored for them, the gates and the head. A bad field is a PearError naming the
file and the field. Import these names from `pear.checkpoint`, which re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import gates
from .checkpoint_files import CONFIG_FILE, _bad, read_tensor_dir
from .config import PearConfig
from .jsontypes import NONE, checkpoint_problems, recorded_heads, wrong_types

FORMAT = "pear-task"


@dataclass
class TaskCheckpoint:
    """A validated checkpoint in memory: JSON info + tensors, nothing applied yet."""

    path: Path
    info: dict
    config: PearConfig
    tensors: dict[str, torch.Tensor]

    @property
    def class_names(self) -> list[str] | None:
        return self.info.get("class_names")

    @property
    def num_classes(self) -> int | None:
        return self.info.get("num_classes")


def head_prefixes(info: dict) -> dict[str, str]:
    """Head module name -> prefix of its tensors in a task checkpoint. One head ('head':
    a name) is stored under 'head.', as every checkpoint before several were; several
    ('head': a list of names) each under 'head.<name>.'."""
    names = recorded_heads(info)
    return {n: "head." if len(names) == 1 else f"head.{n}." for n in names}


def _head_field(names: list[str]) -> str | list[str] | None:
    return names[0] if len(names) == 1 else (names or None)


def read_checkpoint(directory: str | Path) -> TaskCheckpoint:
    """Read and validate a Pear task checkpoint folder (nothing is applied yet)."""
    info, tensors = read_tensor_dir(directory, FORMAT)
    cfg_path = Path(directory) / CONFIG_FILE
    try:
        config = PearConfig.from_dict(info["pear_config"])
        _check_info(info, tensors)
        shared = [p["name"] for p in info["positions"] if p["source"] not in (None, p["name"])]
        gates.check_stored(config.gate, shared, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(cfg_path, f"is malformed: {exc}") from None
    return TaskCheckpoint(Path(directory), info, config, tensors)


_POSITION_FIELDS = {
    "name": str,
    "kind": str,
    "depth": int,
    "signature": list,
    "pruned": bool,
    "frozen": bool,
    "source": (str, NONE),
    "importance": (int, float, NONE),
}
_POSITION_REQUIRED = [k for k in _POSITION_FIELDS if k != "importance"]
_TASK_FIELDS = {"pruned": bool, "unpruned_adapter_params": int}


def _check_info(info: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Every field that loading, `pear inspect` and `pear predict` use: types, and
    agreement with each other and with the stored tensors."""
    positions = _positions(info)
    _check_sharing(positions, tensors)
    _check_stored_for(positions, tensors)
    share_map = info.get("share_map")
    if share_map is not None:
        derived = {n: p["source"] for n, p in positions.items() if p["source"] not in (None, n)}
        if share_map != derived:
            wrong = sorted(set(share_map.items()) ^ set(derived.items()) if isinstance(share_map, dict) else [])
            raise ValueError(
                f"'share_map' disagrees with the positions' sources (first difference: {wrong[:1] or share_map!r})"
            )
    for p in positions.values():
        imp = p.get("importance")
        if isinstance(imp, float) and not math.isfinite(imp):
            raise ValueError(f"position {p['name']!r} has importance {imp}")
    problems = wrong_types(info, _TASK_FIELDS) + checkpoint_problems(info)
    if problems:
        raise TypeError("; ".join(problems))
    _check_head(info, tensors)


def _positions(info: dict) -> dict[str, dict[str, Any]]:
    """Position name -> its record, each of the right types and listed once."""
    if not isinstance(info.get("positions"), list) or not all(isinstance(p, dict) for p in info["positions"]):
        raise TypeError("'positions' must be a list of objects")
    positions: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(info["positions"]):
        problems = wrong_types(p, _POSITION_FIELDS, f"positions[{i}].", _POSITION_REQUIRED)
        if problems:
            raise TypeError("; ".join(problems))
        if p["name"] in positions:
            raise ValueError(f"position {p['name']!r} is listed twice")
        positions[p["name"]] = p
    return positions


def _check_sharing(positions: dict[str, dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
    """Each position is pruned or owns or shares an adapter, and has the tensors that needs."""
    for name, p in positions.items():
        src = p["source"]
        if p["pruned"] == (src == name):
            raise ValueError(f"position {name!r} is {'pruned' if p['pruned'] else 'kept'} but its source is {src!r}")
        if src is not None and src not in positions:
            raise ValueError(f"position {name!r} shares unknown position {src!r}")
        if src is not None and positions[src]["source"] != src:
            raise ValueError(f"position {name!r} shares {src!r}, which does not own an adapter")
        if src == name and not any(k.startswith(f"adapters.{name}.") for k in tensors):
            raise ValueError(f"position {name!r} owns an adapter but no tensors are stored for it")
        if p["frozen"] and not any(k.startswith(f"frozen.{name}.") for k in tensors):
            raise ValueError(f"position {name!r} keeps a frozen knowledge checkpoint but no tensors are stored for it")


def _check_stored_for(positions: dict[str, dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
    """Every adapter or frozen tensor belongs to a position that has one."""
    for key in tensors:
        kind, _, rest = key.partition(".")
        pos = max((n for n in positions if rest.startswith(n + ".")), key=len, default=None)
        if kind == "adapters" and (pos is None or positions[pos]["source"] != pos):
            raise ValueError(f"tensor {key!r} is stored for a position that owns no adapter")
        if kind == "frozen" and (pos is None or not positions[pos]["frozen"]):
            raise ValueError(f"tensor {key!r} is stored for a position without a frozen knowledge checkpoint")


def _check_head(info: dict, tensors: dict[str, torch.Tensor]) -> None:
    """num_classes agrees with the main head's stored weight."""
    main = next(iter(head_prefixes(info).values()), "head.")
    n, head = info.get("num_classes"), tensors.get(main + "weight")
    if n is not None and (n < 1 or (head is not None and (head.ndim == 0 or head.shape[0] != n))):
        raise ValueError(
            f"num_classes {n} does not match the stored head {list(head.shape) if head is not None else '(none)'}"
        )
