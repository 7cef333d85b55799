"""Compact task checkpoints: `adapters.safetensors` + `pear_config.json`.

The safetensors file holds each unique adapter once, the head, any frozen
knowledge checkpoints and the gates of shared positions (PearConfig.gate); the JSON
holds everything needed to rebuild the structure (Pear config, positions, share map,
classes, backbone name and weight fingerprint, a SHA-256 of the tensor file). Loading
validates all of it before touching the model, rebuilds adapters and sharing first,
then fills the tensors.

This module saves (`save`, `save_pretrained`) and loads (`load`, `from_pretrained`,
`build_task` + `install` for MultiTaskModel) a task; its parts live beside it and are
re-exported here, the one place to import any of them from:

- `pear.checkpoint_files`: the sealed tensor folder (`write_tensor_dir`,
  `read_tensor_dir`, `seal`), written through `pear.atomic.atomic_dir_write`, so a crash
  never leaves a half-written checkpoint;
- `pear.checkpoint_read`: `read_checkpoint`, the validated `TaskCheckpoint`;
- `pear.checkpoint_backbone`: the backbone's fingerprints, settings and weights record
  (`fingerprint`, `check_backbone`, `save_backbone`, ...).

A name of a part set on this module (a test's monkeypatch of `save_file`, say) is set in
the part that uses it too, so patching it here still takes effect.
"""

from __future__ import annotations

import copy
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoint_backbone, checkpoint_files, checkpoint_read, gates
from .adapters import PearSlot, adapter_modules, attach, gate_params, pear_state, slots, unwrap
from .atomic import atomic_dir_write, atomic_write_file, check_replaceable, sha256_file  # noqa: F401
from .card import CARD_FILE
from .card import render as render_card
from .checkpoint_backbone import (  # noqa: F401
    SETTINGS_ATTR,
    _backbone_name,
    _backbone_tensors,
    _builtin,
    _frozen_backbone,
    _located,
    backbone_settings,
    check_backbone,
    check_settings,
    fingerprint,
    fingerprints,
    recorded_weights,
    save_backbone,
    settings_field,
    tensor_bytes,
    weights_record,
)
from .checkpoint_files import (  # noqa: F401
    CONFIG_FILE,
    FORMAT_VERSION,
    MAX_CONFIG_BYTES,
    MAX_TENSOR_FILE_BYTES,
    READ_VERSIONS,
    TENSORS_FILE,
    SafetensorError,
    _bad,
    _check_seal,
    _no_constant,
    _part_hash,
    load_file,
    read_tensor_dir,
    save_file,
    seal,
    write_tensor_dir,
)
from .checkpoint_read import (  # noqa: F401
    _POSITION_FIELDS,
    _POSITION_REQUIRED,
    _TASK_FIELDS,
    FORMAT,
    TaskCheckpoint,
    _check_info,
    _head_field,
    head_prefixes,
    read_checkpoint,
)
from .config import PearConfig
from .errors import BackboneMismatch, PearError  # noqa: F401
from .families import head_names, heads
from .jsontypes import NONE, checkpoint_problems, recorded_heads, wrong_types  # noqa: F401


def head_name(model: nn.Module) -> str | None:
    """Dotted name of the main classification head module (the first of
    pear.families.heads: 'head' of a distilled DeiT's head and head_dist), or None."""
    return next(iter(head_names(unwrap(model))), None)


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


def save(
    model: nn.Module,
    directory: str | Path,
    *,
    backbone: str | None = None,
    class_names: list[str] | None = None,
    fingerprint_value: str | None = None,
    meta: dict | None = None,
    weights: str | Path | None = None,
) -> Path:
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
        "positions": _positions_field(base),
        "share_map": {n: s.info.source for n, s in slots(base).items() if s.adapter is not None and s.info.source != n},
        "head": head_field,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names else None,
        "backbone": {
            "name": backbone,
            "fingerprint": fingerprint_value or full_fp,
            "weights_fingerprint": weights_fp,
            **weights_record(backbone, weights),
            **settings_field(base),
        },
        "meta": meta or {},
    }

    def card(tmp: Path, written: dict) -> None:
        (tmp / CARD_FILE).write_text(
            render_card(written, file_bytes=(tmp / TENSORS_FILE).stat().st_size), encoding="utf-8"
        )

    write_tensor_dir(directory, tensors, info, extra=card)
    return Path(directory)


def _positions_field(base: nn.Module) -> list[dict]:
    """The checkpoint's "positions": each slot's kind, depth, signature, pruning, source and importance."""
    return [
        {
            "name": n,
            "kind": s.info.kind,
            "depth": s.info.depth,
            "signature": list(s.info.signature),
            "pruned": s.info.pruned,
            "source": s.info.source if s.adapter is not None else None,
            "frozen": s.frozen is not None,
            "importance": s.info.importance,
        }
        for n, s in slots(base).items()
    ]


def _submodule_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def build_task(ckpt: TaskCheckpoint, model: nn.Module, templates: Mapping[str, nn.Module] | None = None) -> TaskModules:
    """Fresh adapter / frozen / head modules for one task, filled with its tensors.
    `model` must already carry slots at the checkpoint's positions; each adapter is a copy of
    `templates[position]`, by default the slot's own adapter (which another task installed
    in the slot may have left empty: MultiTaskModel keeps the adapters attach made)."""
    sl = slots(model)
    missing = [p["name"] for p in ckpt.info["positions"] if p["name"] not in sl]
    if missing:
        raise PearError(f"{ckpt.path}: positions {missing[:3]} do not exist in this backbone")
    template = templates if templates is not None else {n: s.adapter for n, s in sl.items() if s.adapter is not None}
    owned, frozen = {}, {}
    try:
        for p in ckpt.info["positions"]:
            n = p["name"]
            if p["source"] == n:
                owned[n] = _filled(template[n], _submodule_state(ckpt.tensors, f"adapters.{n}."))
            if p["frozen"]:
                frozen[n] = _filled(template[n], _submodule_state(ckpt.tensors, f"frozen.{n}."))
                frozen[n].requires_grad_(False)
        task_heads = {
            name: _filled(_head_template(model, ckpt, name, prefix), _submodule_state(ckpt.tensors, prefix))
            for name, prefix in head_prefixes(ckpt.info).items()
        }
        task_gates = {
            n: gates.load(
                ckpt.config.gate,
                ckpt.tensors[gates.PREFIX + n],
                owned[src],
                f"{ckpt.path}: tensor {gates.PREFIX + n!r}",
            )
            for n, (src, _) in _layout(ckpt).items()
            if gates.PREFIX + n in ckpt.tensors
        }
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
    module.load_state_dict({k: v.to(ref.device if ref is not None else "cpu") for k, v in state.items()}, strict=True)
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


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    *,
    backbone: str | None = None,
    weights: str | Path | None = None,
    class_names: list[str] | None = None,
    meta: dict | None = None,
) -> Path:
    """`save` as peft users call it: the base model's timm name and weights file default
    to what the model itself records (timm's pretrained_cfg: its architecture and, for
    `timm.create_model(..., pretrained=True)` from a local file such as Pear's built-in
    ViT, that file)."""
    cfg = getattr(unwrap(model), "pretrained_cfg", None) or {}
    return save(
        model,
        directory,
        backbone=backbone or cfg.get("architecture"),
        weights=weights if weights is not None else cfg.get("file"),
        class_names=class_names,
        meta=meta,
    )


def from_pretrained(
    directory: str | Path, backbone: nn.Module | str | None = None, *, weights: str | Path | None = None
) -> nn.Module:
    """A saved task on its backbone. `backbone` is the plain model (see `load`), or a timm
    name, or None for the recorded one; without a module the backbone is built from
    `weights`, or from the recorded weights when they are still there with the same
    SHA-256 (the fingerprint check refuses any other). Rebuilt models come in eval mode."""
    if isinstance(backbone, nn.Module):
        return load(directory, backbone)
    from .harness.runs import rebuild  # timm, data configs: only when the backbone is built here

    return rebuild(directory, backbone=backbone, weights=None if weights is None else str(weights))[0]


class _Checkpoint(types.ModuleType):
    """`pear.checkpoint` itself: setting one of its names sets it, too, in each part
    (`checkpoint_files`, `checkpoint_backbone`, `checkpoint_read`) that holds the same
    object under that name, so that the part's own code sees it."""

    def __setattr__(self, name: str, value: object) -> None:
        missing = object()
        old = self.__dict__.get(name, missing)
        for part in _PARTS:
            if old is not missing and part.__dict__.get(name, missing) is old:
                setattr(part, name, value)
        super().__setattr__(name, value)


_PARTS = (checkpoint_files, checkpoint_backbone, checkpoint_read)
sys.modules[__name__].__class__ = _Checkpoint
