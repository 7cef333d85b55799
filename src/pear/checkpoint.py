"""Compact task checkpoints: `adapters.safetensors` + `pear_config.json`.

The safetensors file holds each unique adapter once, the head, any frozen
knowledge checkpoints and the gates of shared positions (PearConfig.gate); the JSON
holds everything needed to rebuild the structure (Pear config, positions, share map,
classes, backbone name and weight fingerprint, a SHA-256 of the tensor file). Loading
validates all of it before touching the model, rebuilds adapters and sharing first,
then fills the tensors. This module is the format only: the folder is written through
`pear.atomic.atomic_dir_write`, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save as tensor_bytes, save_file
from torch import nn

from . import gates
from .atomic import atomic_dir_write, atomic_write_file, check_replaceable, sha256_file
from .card import CARD_FILE, render as render_card
from .adapters import PearSlot, adapter_modules, attach, gate_params, pear_state, slots, unwrap
from .config import PearConfig
from .errors import BackboneMismatch, PearError
from .families import head_names, heads
from .jsontypes import NONE, checkpoint_problems, recorded_heads, wrong_types

FORMAT = "pear-task"
# Version 2 seals the JSON: `parts_sha256` holds a SHA-256 of each top-level field's
# canonical JSON. Version 1 files (written before) are still read, checked by the
# consistency rules alone.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
TENSORS_FILE = "adapters.safetensors"
CONFIG_FILE = "pear_config.json"
MAX_CONFIG_BYTES = 16 * 2**20
MAX_TENSOR_FILE_BYTES = 8 * 2**30


# ---------------------------------------------------------------- fingerprints

def _backbone_name(name: str) -> str:
    """A backbone tensor's name as in the plain timm model (without Pear's/peft's wrappers)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base.", ".").replace(".base_layer.", ".")


def head_name(model: nn.Module) -> str | None:
    """Dotted name of the main classification head module (the first of
    pear.families.heads: 'head' of a distilled DeiT's head and head_dist), or None."""
    return next(iter(head_names(unwrap(model))), None)


def head_prefixes(info: dict) -> dict[str, str]:
    """Head module name -> prefix of its tensors in a task checkpoint. One head ('head':
    a name) is stored under 'head.', as every checkpoint before several were; several
    ('head': a list of names) each under 'head.<name>.'."""
    names = recorded_heads(info)
    return {n: "head." if len(names) == 1 else f"head.{n}." for n in names}


def _head_field(names: list[str]) -> str | list[str] | None:
    return names[0] if len(names) == 1 else (names or None)


def _frozen_backbone(model: nn.Module):
    """(name in the plain timm model, tensor, is_buffer) for each frozen backbone tensor,
    by name; the head, adapters and LoRA weights left out."""
    model = unwrap(model)
    skip: set[int] = set()  # ids of adapter tensors
    for m in model.modules():
        if isinstance(m, PearSlot):
            for sub in (m.adapter, m.frozen):
                if sub is not None:
                    skip.update(id(t) for t in sub.parameters())
            if m.gate is not None:
                skip.add(id(m.gate))
    names = head_names(model)
    items: list[tuple[str, torch.Tensor, bool]] = [
        (n, t, False) for n, t in model.named_parameters(remove_duplicate=True)]
    items += [(n, t, True) for n, t in model.named_buffers()]
    for name, t, is_buffer in sorted(((_backbone_name(n), t, b) for n, t, b in items), key=lambda x: x[0]):
        if id(t) in skip or "lora_" in name or any(name == h or name.startswith(h + ".") for h in names):
            continue
        yield name, t, is_buffer


def _backbone_tensors(model: nn.Module):
    """(header, bytes, is_buffer) to hash for each frozen backbone tensor, by name."""
    for name, t, is_buffer in _frozen_backbone(model):
        yield f"{name}:{tuple(t.shape)}:{t.dtype}".encode(), \
            t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), is_buffer


def save_backbone(model: nn.Module, path: str | Path) -> None:
    """Write the frozen backbone's tensors (those its state dict holds, under the plain
    timm model's names, head and adapters left out) to the .safetensors file `path`,
    atomically: a weights file that `create_backbone` loads back with the same fingerprint."""
    model = unwrap(model)
    kept = {_backbone_name(n) for n in model.state_dict()}
    tensors = {n: t.detach().cpu().contiguous() for n, t, _ in _frozen_backbone(model) if n in kept}
    data = tensor_bytes(tensors, metadata={"format": "pear-backbone"})
    atomic_write_file(Path(path), lambda fh: fh.write(data))


def fingerprint(model: nn.Module, buffers: bool = True) -> str:
    """SHA-256 over the frozen backbone's tensors (names, shapes, bytes), head and
    adapters excluded, so a task checkpoint can refuse a different backbone.
    buffers=False: parameters only (tells drifted BatchNorm statistics from other weights)."""
    h = hashlib.sha256()
    for header, data, is_buffer in _backbone_tensors(model):
        if buffers or not is_buffer:
            h.update(header)
            h.update(data)
    return h.hexdigest()[:32]


def fingerprints(model: nn.Module) -> tuple[str, str]:
    """(fingerprint(model), fingerprint(model, buffers=False)) in one pass over the tensors."""
    full, params = hashlib.sha256(), hashlib.sha256()
    for header, data, is_buffer in _backbone_tensors(model):
        for h in (full, params) if not is_buffer else (full,):
            h.update(header)
            h.update(data)
    return full.hexdigest()[:32], params.hexdigest()[:32]


# What create_backbone records on a model: the settings besides its tensors that change
# what it computes (input normalisation; a weights folder's architecture options).
SETTINGS_ATTR = "pear_backbone_settings"


def backbone_settings(model: nn.Module) -> dict | None:
    """The settings `pear.harness.backbones.create_backbone` recorded on `model`, as JSON
    (lists, not tuples), or None for a model built another way."""
    settings = getattr(unwrap(model), SETTINGS_ATTR, None)
    return json.loads(json.dumps(settings)) if isinstance(settings, dict) else None


def check_settings(path: Path, saved: dict, model: nn.Module) -> None:
    """PearError naming each setting that differs between the backbone a checkpoint was
    trained on (`saved`: its backbone record) and `model`. Checkpoints from before the
    settings were recorded, and models not built by create_backbone, are not compared."""
    want, got = saved.get("settings"), backbone_settings(model)
    if not isinstance(want, dict) or got is None or want == got:
        return
    diffs = [f"{k} was {want.get(k, '(unset)')!r}, now {got.get(k, '(unset)')!r}"
             for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    raise PearError(f"{path} was trained on a backbone set up otherwise, which would compute other outputs: "
                    f"{'; '.join(diffs)}. Pass the weights used in training, unchanged")


# ---------------------------------------------------------------- save

def task_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a Pear task stores: unique adapters, frozen checkpoints, gates, head."""
    model = unwrap(model)
    out = {}
    for pos, a in adapter_modules(model).items():
        out.update({f"adapters.{pos}.{n}": t for n, t in a.state_dict().items()})
    for pos, s in slots(model).items():
        if s.frozen is not None:
            out.update({f"frozen.{pos}.{n}": t for n, t in s.frozen.state_dict().items()})
    out.update({gates.PREFIX + pos: g for pos, g in gate_params(model).items()})
    for head, prefix in head_prefixes({"head": _head_field(head_names(model))}).items():
        out.update({f"{prefix}{n}": t for n, t in model.get_submodule(head).state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save(model: nn.Module, directory: str | Path, *, backbone: str | None = None,
         class_names: list[str] | None = None, fingerprint_value: str | None = None,
         meta: dict | None = None, weights: str | Path | None = None) -> Path:
    """Write the task checkpoint of a Pear model to `directory` (atomically), with its
    model card (README.md). `backbone` (the timm name) and `weights` (the file, folder,
    'builtin' or 'random' it was built with) name the base model: the weights' source
    and SHA-256 are recorded, so that `from_pretrained` rebuilds it when they are found."""
    state = pear_state(model)
    base = unwrap(model)
    tensors = task_tensors(base)
    full_fp, weights_fp = fingerprints(base)
    head = head_name(base)
    num_classes = None
    if head:
        w = base.get_submodule(head).state_dict().get("weight")
        num_classes = int(w.shape[0]) if w is not None else None
    head_field = _head_field(head_names(base))
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pear_config": state.config.to_dict(),
        "pruned": state.pruned,
        "unpruned_adapter_params": state.unpruned_adapter_params,
        "positions": [
            {"name": n, "kind": s.info.kind, "depth": s.info.depth, "signature": list(s.info.signature),
             "pruned": s.info.pruned, "source": s.info.source if s.adapter is not None else None,
             "frozen": s.frozen is not None, "importance": s.info.importance}
            for n, s in slots(base).items()
        ],
        "share_map": {n: s.info.source for n, s in slots(base).items()
                      if s.adapter is not None and s.info.source != n},
        "head": head_field,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names else None,
        "backbone": {"name": backbone, "fingerprint": fingerprint_value or full_fp,
                     "weights_fingerprint": weights_fp, **weights_record(backbone, weights), **settings_field(base)},

        "meta": meta or {},
    }

    def card(tmp: Path, written: dict) -> None:
        (tmp / CARD_FILE).write_text(render_card(written, file_bytes=(tmp / TENSORS_FILE).stat().st_size),
                                     encoding="utf-8")

    write_tensor_dir(directory, tensors, info, extra=card)
    return Path(directory)


def weights_record(backbone: str | None, weights: str | Path | None) -> dict:
    """{weights_source, weights_sha256} of the base model's weights: an absolute path (a
    folder's hash is its model.safetensors'), 'builtin' (Pear's shipped file) or 'random'."""
    if weights is None or weights == "random":  # None: not known
        return {"weights_source": weights, "weights_sha256": None}
    builtin = _builtin(backbone)
    if weights == "builtin" or (builtin is not None and Path(weights).resolve() == _located(builtin)):
        return {"weights_source": "builtin", "weights_sha256": builtin.sha256 if builtin else None}
    path = Path(weights).resolve()
    hashed = path / "model.safetensors" if path.is_dir() else path
    return {"weights_source": str(path), "weights_sha256": sha256_file(hashed) if hashed.is_file() else None}


def _builtin(backbone: str | None):
    if not backbone:
        return None
    from .harness.backbones import BUILTIN_WEIGHTS  # timm: only when a checkpoint is saved

    return BUILTIN_WEIGHTS.get(backbone.split(".")[0])


def _located(builtin) -> Path | None:
    try:
        return builtin.locate().resolve()
    except PearError:  # its package is not installed: then a file given is not that one
        return None


def recorded_weights(info: dict) -> str | None:
    """The weights a checkpoint was trained with, when they are still where it says and
    hash the same: 'builtin', 'random' or a path; None otherwise."""
    bb = info.get("backbone") or {}
    source, sha = bb.get("weights_source"), bb.get("weights_sha256")
    if source in ("builtin", "random") or not source:
        return source or None
    path = Path(source)
    hashed = path / "model.safetensors" if path.is_dir() else path
    if not path.exists() or (sha is not None and (not hashed.is_file() or sha256_file(hashed) != sha)):
        return None
    return source


def settings_field(model: nn.Module) -> dict:
    """{"settings": ...} for a backbone record, or {} when the model carries none."""
    settings = backbone_settings(model)
    return {} if settings is None else {"settings": settings}



def write_tensor_dir(directory: str | Path, tensors: dict[str, torch.Tensor], info: dict,
                     tensors_file: str = TENSORS_FILE, info_file: str = CONFIG_FILE, extra=None) -> None:
    """Atomically write `tensors` (safetensors) and `info` (JSON, with the tensors'
    names, shapes and file hash added) as one folder; `extra(tmp, info)` may add the
    model card (CARD_FILE) to it."""
    info = dict(info)
    info["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                       for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / tensors_file), metadata={"format": str(info.get("format"))})
        info["tensors_sha256"] = sha256_file(tmp / tensors_file)
        (tmp / info_file).write_text(json.dumps(seal(info), indent=1, allow_nan=False), encoding="utf-8")
        if extra is not None:
            extra(tmp, info)

    check_replaceable(Path(directory), {tensors_file, info_file, CARD_FILE}, "checkpoint folder")
    atomic_dir_write(Path(directory), write)


def _part_hash(value) -> str:
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
        raise _bad(cfg_path, "has no valid 'parts_sha256' (the hashes of its fields): it was edited by hand or "
                             "written by another program")
    fields = set(info) - {"parts_sha256"}
    changed = sorted(k for k in fields & set(recorded) if recorded[k] != _part_hash(info[k]))
    added, removed = sorted(fields - set(recorded)), sorted(set(recorded) - fields)
    if changed or added or removed:
        parts = [f"{what} {', '.join(map(repr, keys))}" for what, keys in
                 (("changed", changed), ("added", added), ("removed", removed)) if keys]
        raise _bad(cfg_path, f"was edited after it was saved ({'; '.join(parts)} differ from the recorded "
                             f"SHA-256 of each field); restore the original file or save the checkpoint again")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------- load

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


def _bad(path: Path, what: str) -> PearError:
    return PearError(f"{path}: {what}")


def read_tensor_dir(directory: str | Path, fmt: str, tensors_file: str = TENSORS_FILE,
                    info_file: str = CONFIG_FILE) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a folder written by `write_tensor_dir`, checking format, version, file hash
    and every tensor's name and shape; PearError says exactly what is wrong."""
    d = Path(directory)
    cfg_path, t_path = d / info_file, d / tensors_file
    if not d.is_dir():
        raise PearError(f"checkpoint folder {d} does not exist")
    for f in (cfg_path, t_path):
        if not f.is_file():
            raise PearError(f"checkpoint folder {d} has no {f.name}; is it a Pear checkpoint?")
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
        raise _bad(cfg_path, f"format_version {version!r} is not supported (this Pear reads versions "
                             f"{', '.join(map(str, READ_VERSIONS))})")
    if version >= 2:
        _check_seal(info, cfg_path)
    declared, expected_sha = info.get("tensors"), info.get("tensors_sha256")
    if not isinstance(declared, dict) or not isinstance(expected_sha, str) or not all(
            isinstance(v, dict) for v in declared.values()):
        raise _bad(cfg_path, "is malformed: 'tensors' must be an object of {shape, dtype} entries and "
                             "'tensors_sha256' a string")
    size = t_path.stat().st_size
    if size > MAX_TENSOR_FILE_BYTES:
        raise _bad(t_path, f"is {size} bytes, larger than any Pear checkpoint should be")
    if sha256_file(t_path) != expected_sha:
        raise _bad(t_path, f"does not match the SHA-256 recorded in {info_file}: the file is truncated, "
                           "edited or from another checkpoint")
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
    return info, tensors


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


_POSITION_FIELDS = {"name": str, "kind": str, "depth": int, "signature": list, "pruned": bool, "frozen": bool,
                    "source": (str, NONE), "importance": (int, float, NONE)}
_POSITION_REQUIRED = [k for k in _POSITION_FIELDS if k != "importance"]
_TASK_FIELDS = {"pruned": bool, "unpruned_adapter_params": int}


def _check_info(info: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Every field that loading, `pear inspect` and `pear predict` use: types, and
    agreement with each other and with the stored tensors."""
    if not isinstance(info.get("positions"), list) or not all(isinstance(p, dict) for p in info["positions"]):
        raise TypeError("'positions' must be a list of objects")
    positions = {}
    for i, p in enumerate(info["positions"]):
        problems = wrong_types(p, _POSITION_FIELDS, f"positions[{i}].", _POSITION_REQUIRED)
        if problems:
            raise TypeError("; ".join(problems))
        if p["name"] in positions:
            raise ValueError(f"position {p['name']!r} is listed twice")
        positions[p["name"]] = p
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
    for key in tensors:
        kind, _, rest = key.partition(".")
        pos = max((n for n in positions if rest.startswith(n + ".")), key=len, default=None)
        if kind == "adapters" and (pos is None or positions[pos]["source"] != pos):
            raise ValueError(f"tensor {key!r} is stored for a position that owns no adapter")
        if kind == "frozen" and (pos is None or not positions[pos]["frozen"]):
            raise ValueError(f"tensor {key!r} is stored for a position without a frozen knowledge checkpoint")
    share_map = info.get("share_map")
    if share_map is not None:
        derived = {n: p["source"] for n, p in positions.items() if p["source"] not in (None, n)}
        if share_map != derived:
            wrong = sorted(set(share_map.items()) ^ set(derived.items()) if isinstance(share_map, dict) else [])
            raise ValueError(f"'share_map' disagrees with the positions' sources (first difference: "
                             f"{wrong[:1] or share_map!r})")
    for p in positions.values():
        imp = p.get("importance")
        if isinstance(imp, float) and not math.isfinite(imp):
            raise ValueError(f"position {p['name']!r} has importance {imp}")
    problems = wrong_types(info, _TASK_FIELDS) + checkpoint_problems(info)
    if problems:
        raise TypeError("; ".join(problems))
    main = next(iter(head_prefixes(info).values()), "head.")
    n, head = info.get("num_classes"), tensors.get(main + "weight")
    if n is not None and (n < 1 or (head is not None and (head.ndim == 0 or head.shape[0] != n))):
        raise ValueError(f"num_classes {n} does not match the stored head "
                         f"{list(head.shape) if head is not None else '(none)'}")


def check_backbone(ckpt: TaskCheckpoint, backbone: nn.Module, backbone_name: str | None = None) -> None:
    want = ckpt.info.get("backbone") or {}
    if backbone_name and want.get("name") and backbone_name != want["name"]:
        raise PearError(f"{ckpt.path} was trained on backbone {want['name']!r}, not {backbone_name!r}")
    check_settings(ckpt.path, want, backbone)
    got = fingerprint(backbone)
    if want.get("fingerprint") and got != want["fingerprint"]:
        given = f"the given backbone{' ' + repr(backbone_name) if backbone_name else ''}"
        if want.get("weights_fingerprint") and fingerprint(backbone, buffers=False) == want["weights_fingerprint"]:
            raise PearError(
                f"{ckpt.path}: {given} has the same parameters as the one it was saved with, but other "
                f"buffers (fingerprint {got}, saved {want['fingerprint']}). Usually these are BatchNorm "
                f"running statistics that training in model.train() mode updated, so the saved model "
                f"depended on them. Keep the frozen backbone's norm layers in eval mode while training "
                f"(pear.freeze_norm_stats(model) after model.train()), then train and "
                f"save again")
        source = want.get("weights_source")
        raise BackboneMismatch(
            f"{ckpt.path} was trained on a backbone with weight fingerprint {want['fingerprint']}, but "
            f"{given} has {got}: other weights. Build the backbone with the weights it was trained on"
            + (f" ({source})" if source else "") + ", or call pear.from_pretrained(folder) to rebuild it"
        )


def _submodule_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def build_task(ckpt: TaskCheckpoint, model: nn.Module,
               templates: Mapping[str, nn.Module] | None = None) -> "TaskModules":
    """Fresh adapter / frozen / head modules for one task, filled with its tensors.
    `model` must already carry slots at the checkpoint's positions; each adapter is a copy of
    `templates[position]`, by default the slot's own adapter (which another task installed
    in the slot may have left empty: MultiTaskModel keeps the adapters attach made)."""
    sl = slots(model)
    missing = [p["name"] for p in ckpt.info["positions"] if p["name"] not in sl]
    if missing:
        raise PearError(f"{ckpt.path}: positions {missing[:3]} do not exist in this backbone")
    template = templates if templates is not None else \
        {n: s.adapter for n, s in sl.items() if s.adapter is not None}
    owned, frozen = {}, {}
    try:
        for p in ckpt.info["positions"]:
            n = p["name"]
            if p["source"] == n:
                owned[n] = _filled(template[n], _submodule_state(ckpt.tensors, f"adapters.{n}."))
            if p["frozen"]:
                frozen[n] = _filled(template[n], _submodule_state(ckpt.tensors, f"frozen.{n}."))
                frozen[n].requires_grad_(False)
        task_heads = {name: _filled(_head_template(model, ckpt, name, prefix), _submodule_state(ckpt.tensors, prefix))
                 for name, prefix in head_prefixes(ckpt.info).items()}
        task_gates = {n: gates.load(ckpt.config.gate, ckpt.tensors[gates.PREFIX + n], owned[src],
                                    f"{ckpt.path}: tensor {gates.PREFIX + n!r}")
                      for n, (src, _) in _layout(ckpt).items() if gates.PREFIX + n in ckpt.tensors}
    except (RuntimeError, KeyError, AttributeError) as exc:
        raise PearError(f"{ckpt.path}: tensors do not fit this backbone ({' '.join(str(exc).split())})") from None
    return TaskModules(owned, frozen, task_heads, _layout(ckpt), task_gates)


def _layout(ckpt: TaskCheckpoint) -> dict[str, tuple[str | None, bool]]:
    """Position -> (the position whose adapter it calls, or None; whether it is pruned)."""
    return {p["name"]: (p["source"], p["pruned"]) for p in ckpt.info["positions"]}


def _head_template(model: nn.Module, ckpt: TaskCheckpoint, name: str, prefix: str) -> nn.Module:
    """The model's head module `name`, resized to the checkpoint's class count if it is linear."""
    head = unwrap(model).get_submodule(name)
    w = ckpt.tensors.get(prefix + "weight")
    if isinstance(head, nn.Linear) and w is not None and tuple(w.shape) != tuple(head.weight.shape):
        return nn.Linear(w.shape[1], w.shape[0], bias=prefix + "bias" in ckpt.tensors).to(head.weight.device)
    return head


def _filled(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    module = copy.deepcopy(template)
    ref = next(iter(module.parameters()), None)
    module.load_state_dict({k: v.to(ref.device if ref is not None else "cpu") for k, v in state.items()},
                           strict=True)
    return module


@dataclass
class TaskModules:
    """One task's trainable parts, ready to be installed into slots."""

    adapters: dict[str, nn.Module]
    frozen: dict[str, nn.Module]
    heads: dict[str, nn.Module]  # head module name -> its trained module
    layout: dict[str, tuple[str | None, bool]]  # position -> (source position or None, pruned)
    gates: dict[str, nn.Parameter] = field(default_factory=dict)  # shared position -> its gate (PearConfig.gate)


def install(model: nn.Module, task: TaskModules, slot_map: dict[str, PearSlot] | None = None) -> None:
    """Point every slot at this task's adapters (pointer swaps only) and set its heads."""
    base = unwrap(model)
    for n, s in (slot_map or slots(base)).items():
        src, pruned = task.layout.get(n, (None, True))
        s.adapter = task.adapters[src] if src is not None else None
        s.frozen = task.frozen.get(n)
        s.gate = task.gates.get(n)
        s.info.source = src or n
        s.info.pruned = pruned
    for head, module in task.heads.items():
        parent, _, attr = head.rpartition(".")
        setattr(base.get_submodule(parent) if parent else base, attr, module)


def skeleton_config(ckpt: TaskCheckpoint) -> PearConfig:
    """The checkpoint's config, restricted to exactly its positions."""
    d = ckpt.config.to_dict()
    d["target"] = "^(" + "|".join(re.escape(p["name"]) for p in ckpt.info["positions"]) + ")$"
    d["blocks"] = None
    return PearConfig.from_dict(d)


def load(directory: str | Path, backbone: nn.Module, *, backbone_name: str | None = None) -> nn.Module:
    """Rebuild a Pear task for `backbone` (a plain timm model with the same weights it
    was trained on) and return the adapted model. Validates everything first, then
    builds on a deep copy of the backbone, which is returned: `backbone` itself is never
    modified, so nothing is half-loaded when the tensors do not fit, at the price of
    holding the backbone twice in memory while loading (drop your reference to
    `backbone` afterwards if you no longer need it)."""
    ckpt = read_checkpoint(directory)
    check_backbone(ckpt, backbone, backbone_name)
    base = unwrap(backbone)
    trial = copy.deepcopy(base)  # build on a copy first: nothing half-loaded if the tensors do not fit
    n_cls = ckpt.num_classes
    main = next(iter(heads(trial).values()), None)
    weight, reset = getattr(main, "weight", None), getattr(trial, "reset_classifier", None)
    if n_cls is not None and reset is not None and weight is not None and weight.shape[0] != n_cls:
        reset(n_cls)
    try:
        attach(trial, skeleton_config(ckpt))
    except ValueError as exc:
        raise PearError(f"{ckpt.path}: its adapters do not fit this backbone ({exc})") from None
    task = build_task(ckpt, trial)
    install(trial, task)
    state = pear_state(trial)
    state.pruned = bool(ckpt.info.get("pruned"))
    state.unpruned_adapter_params = int(ckpt.info.get("unpruned_adapter_params", state.unpruned_adapter_params))
    for p in ckpt.info["positions"]:
        slots(trial)[p["name"]].info.importance = p.get("importance")
    setattr(trial, "pear_checkpoint", ckpt.info)  # nn.Module's typing takes only tensors and modules as attributes
    return trial


# ---------------------------------------------------------------- peft-style names

def save_pretrained(model: nn.Module, directory: str | Path, *, backbone: str | None = None,
                    weights: str | Path | None = None, class_names: list[str] | None = None,
                    meta: dict | None = None) -> Path:
    """`save` as peft users call it: the base model's timm name and weights file default
    to what the model itself records (timm's pretrained_cfg: its architecture and, for
    `timm.create_model(..., pretrained=True)` from a local file such as Pear's built-in
    ViT, that file)."""
    cfg = getattr(unwrap(model), "pretrained_cfg", None) or {}
    return save(model, directory, backbone=backbone or cfg.get("architecture"),
                weights=weights if weights is not None else cfg.get("file"), class_names=class_names, meta=meta)


def from_pretrained(directory: str | Path, backbone: nn.Module | str | None = None, *,
                    weights: str | Path | None = None) -> nn.Module:
    """A saved task on its backbone. `backbone` is the plain model (see `load`), or a timm
    name, or None for the recorded one; without a module the backbone is built from
    `weights`, or from the recorded weights when they are still there with the same
    SHA-256 (the fingerprint check refuses any other). Rebuilt models come in eval mode."""
    if isinstance(backbone, nn.Module):
        return load(directory, backbone)
    from .harness.runs import rebuild  # timm, data configs: only when the backbone is built here

    return rebuild(directory, backbone=backbone, weights=None if weights is None else str(weights))[0]
