"""Resumable training state and plain (non-Pear) run checkpoints.

Both are a safetensors file + a JSON file written atomically through
`pear.checkpoint.write_tensor_dir` (safe writes: `pear.atomic`), so no pickle is ever written or read and a crash
while saving leaves the previous complete state in place.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...adapters import unwrap
from ...checkpoint import FORMAT_VERSION, head_name, read_tensor_dir, settings_field, write_tensor_dir
from ...errors import PearError
from ...families import head_names
from ...pruning import PrunePlan, prune_and_share, prune_optimizer

STATE_FORMAT = "pear-train-state"
PLAIN_FORMAT = "pear-plain"
STATE_FILES = ("state.safetensors", "state.json")
PLAIN_FILES = ("weights.safetensors", "run_config.json")


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run must keep of its model: trainable tensors and frozen knowledge
    checkpoints (everything, buffers included, for full fine-tuning). A module shared
    by several positions is stored once, under its first name."""
    base = unwrap(model)
    full = all(p.requires_grad for p in base.parameters())
    seen, out = set(), {}
    for n, t in base.state_dict(keep_vars=True).items():
        keep = full or (isinstance(t, nn.Parameter) and t.requires_grad) or ".frozen." in n
        if keep and id(t) not in seen:
            seen.add(id(t))
            out[n] = t.detach().cpu().contiguous()
    return out


def fill_model(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Load `tensors` (as `model_tensors` names them) into `model`; a PearError naming `where`
    when they do not fit it."""
    want = model_tensors(model)
    if set(want) != set(tensors):
        missing = sorted(set(want) - set(tensors))[:5]
        unexpected = sorted(set(tensors) - set(want))[:5]
        raise PearError(f"{where}: stored tensors do not fit this model: missing {missing}, unexpected {unexpected}")
    bad = [k for k in want if want[k].shape != tensors[k].shape]
    if bad:
        raise PearError(
            f"{where}: tensor {bad[0]!r} has shape {list(tensors[bad[0]].shape)}, "
            f"the model expects {list(want[bad[0]].shape)}"
        )
    unwrap(model).load_state_dict(tensors, strict=False)


# ---------------------------------------------------------------- resumable state


def save_state(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tracker,
    *,
    epoch: int,
    step: int,
    history: list,
    plan: PrunePlan | None,
    best: dict | None,
    precision: dict | None = None,
) -> None:
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    opt = optimizer.state_dict()
    opt_values: dict[str, dict] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                opt_values.setdefault(str(idx), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    # legacy=True is the default, spelled out: numpy's stubs type the call without it as a dict.
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple), "the legacy MT19937 state is a tuple"
    info = {
        "format": STATE_FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "step": step,
        "history": history,
        "best": best,
        "plan": plan.to_dict() if plan else None,
        "precision": precision,
        "tracker": tracker.state_dict() if tracker is not None else None,
        "optim_groups": opt["param_groups"],
        "optim_state_keys": sorted(opt["state"]),
        "optim_values": opt_values,
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *map(_jsonable, np_state[2:])],
    }
    write_tensor_dir(directory, tensors, info, *STATE_FILES)


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    return x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def load_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, tracker, device) -> dict:
    """Restore everything `save_state` wrote; replays the prune plan first so the
    model and optimizer have the structure the tensors were saved from."""
    info, tensors = read_tensor_dir(directory, STATE_FORMAT, *STATE_FILES)
    _check_state_info(info, Path(directory) / STATE_FILES[1])
    try:
        if info.get("plan"):
            prune_and_share(model, PrunePlan.from_dict(info["plan"]))
            prune_optimizer(optimizer, model)
        fill_model(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, directory)
        state = {}
        for idx in info["optim_state_keys"]:
            st = dict(info["optim_values"].get(str(idx), {}))
            prefix = f"optim.{idx}."
            st.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            state[int(idx)] = st
        optimizer.load_state_dict({"state": state, "param_groups": info["optim_groups"]})
        if tracker is not None and info.get("tracker"):
            tracker.load_state_dict(info["tracker"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(_tuplify(info["rng_python"]))
        n = info["rng_numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    except PearError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, RuntimeError, AttributeError) as exc:
        raise PearError(
            f"{directory}: the saved training state is inconsistent ({exc!r}); start again with --overwrite"
        ) from None
    model.to(device)
    # 'precision' (how the run computes) is absent from states written before it was recorded.
    return {**{k: info[k] for k in ("epoch", "step", "history", "plan", "best")}, "precision": info.get("precision")}


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# state.json's fields: what each must hold for `load_state` and the training loop.
_STATE_FIELDS = {
    "epoch": ("a count", _is_count),
    "step": ("a count", _is_count),
    "history": (
        "a list of epoch records (objects of numbers)",
        lambda v: (
            isinstance(v, list)
            and all(isinstance(r, dict) and all(_is_number(x) or x is None for x in r.values()) for r in v)
        ),
    ),
    "best": (
        "null or an object with a count 'epoch' and a number 'val_acc'",
        lambda v: v is None or (isinstance(v, dict) and _is_count(v.get("epoch")) and _is_number(v.get("val_acc"))),
    ),
    "plan": ("null or a prune plan object", lambda v: v is None or isinstance(v, dict)),
    "tracker": ("null or an importance tracker object", lambda v: v is None or isinstance(v, dict)),
    "optim_groups": ("a list of objects", lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v)),
    "optim_state_keys": ("a list of counts", lambda v: isinstance(v, list) and all(_is_count(k) for k in v)),
    "optim_values": (
        "an object of objects",
        lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
    ),
    "rng_python": ("a list", lambda v: isinstance(v, list)),
    "rng_numpy": ("a list", lambda v: isinstance(v, list)),
}


def _check_state_info(info: dict, path: Path) -> None:
    """Types first, so an edited state.json (one written before states were sealed) is
    refused with the field's name instead of failing somewhere in the training loop."""
    for key, (what, ok) in _STATE_FIELDS.items():
        if key not in info:
            raise PearError(f"{path}: has no {key!r}; start again with --overwrite")
        if not ok(info[key]):
            shown = repr(info[key])
            raise PearError(
                f"{path}: {key!r} must be {what}, got {shown[:60] + ('...' if len(shown) > 60 else '')}; "
                f"start again with --overwrite"
            )


# ---------------------------------------------------------------- plain runs


def save_plain(
    model: nn.Module,
    directory: Path,
    *,
    method: str,
    backbone: str | None,
    class_names,
    fingerprint_value: str,
    meta: dict,
) -> None:
    """Checkpoint of a linear / full / lora run: its trainable tensors (all for full)."""
    base = unwrap(model)
    head, names = head_name(base), head_names(base)
    info = {
        "format": PLAIN_FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "backbone": {"name": backbone, "fingerprint": fingerprint_value, **settings_field(base)},
        "head": names if len(names) > 1 else head,
        "num_classes": int(base.get_parameter(f"{head}.weight").shape[0]) if head else None,
        "class_names": class_names,
        "meta": meta,
    }
    write_tensor_dir(directory, model_tensors(base), info, *PLAIN_FILES)


def read_plain(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    return read_tensor_dir(directory, PLAIN_FORMAT, *PLAIN_FILES)
