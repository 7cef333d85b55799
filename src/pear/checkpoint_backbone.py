"""The frozen backbone a checkpoint was trained on: its fingerprints, settings and weights.

A task checkpoint stores no backbone tensors; it records which backbone it needs, so
that loading it on any other is refused: `fingerprint` (a SHA-256 over the frozen
backbone's tensors, head and adapters left out; `fingerprints` gives it with and without
buffers, which tells drifted BatchNorm statistics from other weights), the settings
`pear.harness.backbones.create_backbone` records besides the tensors (`backbone_settings`),
and where its weights came from (`weights_record`, `recorded_weights`). `check_backbone`
compares them with a given backbone; `save_backbone` writes the frozen backbone's tensors.
Import these names from `pear.checkpoint`, which re-exports them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save as tensor_bytes
from torch import nn

from .adapters import adapter_tensor_ids, unwrap
from .atomic import atomic_write_file, sha256_file
from .errors import BackboneMismatch, PearError
from .families import head_names

if TYPE_CHECKING:
    from .checkpoint_read import TaskCheckpoint

# What create_backbone records on a model: the settings besides its tensors that change
# what it computes (input normalisation; a weights folder's architecture options).
SETTINGS_ATTR = "pear_backbone_settings"


def _backbone_name(name: str) -> str:
    """A backbone tensor's name as in the plain timm model (without Pear's/peft's wrappers)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base.", ".").replace(".base_layer.", ".")


def _frozen_backbone(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name in the plain timm model, tensor, is_buffer) for each frozen backbone tensor,
    by name; the head, adapters and LoRA weights left out."""
    model = unwrap(model)
    skip = adapter_tensor_ids(model)
    names = head_names(model)
    items: list[tuple[str, torch.Tensor, bool]] = [
        (n, t, False) for n, t in model.named_parameters(remove_duplicate=True)
    ]
    items += [(n, t, True) for n, t in model.named_buffers()]
    for name, t, is_buffer in sorted(((_backbone_name(n), t, b) for n, t, b in items), key=lambda x: x[0]):
        if id(t) in skip or "lora_" in name or any(name == h or name.startswith(h + ".") for h in names):
            continue
        yield name, t, is_buffer


def _backbone_tensors(model: nn.Module) -> Iterator[tuple[bytes, bytes, bool]]:
    """(header, bytes, is_buffer) to hash for each frozen backbone tensor, by name."""
    for name, t, is_buffer in _frozen_backbone(model):
        yield (
            f"{name}:{tuple(t.shape)}:{t.dtype}".encode(),
            t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
            is_buffer,
        )


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


def backbone_settings(model: nn.Module) -> dict | None:
    """The settings `pear.harness.backbones.create_backbone` recorded on `model`, as JSON
    (lists, not tuples), or None for a model built another way."""
    settings = getattr(unwrap(model), SETTINGS_ATTR, None)
    return json.loads(json.dumps(settings)) if isinstance(settings, dict) else None


def settings_field(model: nn.Module) -> dict:
    """{"settings": ...} for a backbone record, or {} when the model carries none."""
    settings = backbone_settings(model)
    return {} if settings is None else {"settings": settings}


def check_settings(path: Path, saved: dict, model: nn.Module) -> None:
    """PearError naming each setting that differs between the backbone a checkpoint was
    trained on (`saved`: its backbone record) and `model`. Checkpoints from before the
    settings were recorded, and models not built by create_backbone, are not compared."""
    want, got = saved.get("settings"), backbone_settings(model)
    if not isinstance(want, dict) or got is None or want == got:
        return
    diffs = [
        f"{k} was {want.get(k, '(unset)')!r}, now {got.get(k, '(unset)')!r}"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]
    raise PearError(
        f"{path} was trained on a backbone set up otherwise, which would compute other outputs: "
        f"{'; '.join(diffs)}. Pass the weights used in training, unchanged"
    )


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


def _builtin(backbone: str | None) -> Any:
    if not backbone:
        return None
    from .harness.backbones import BUILTIN_WEIGHTS  # timm: only when a checkpoint is saved

    return BUILTIN_WEIGHTS.get(backbone.split(".")[0])


def _located(builtin: Any) -> Path | None:
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


def check_backbone(ckpt: TaskCheckpoint, backbone: nn.Module, backbone_name: str | None = None) -> None:
    """PearError (BackboneMismatch for other weights) unless `backbone` is the one `ckpt`
    was trained on: its name when given, its settings and its fingerprint."""
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
                f"save again"
            )
        source = want.get("weights_source")
        raise BackboneMismatch(
            f"{ckpt.path} was trained on a backbone with weight fingerprint {want['fingerprint']}, but "
            f"{given} has {got}: other weights. Build the backbone with the weights it was trained on"
            + (f" ({source})" if source else "")
            + ", or call pear.from_pretrained(folder) to rebuild it"
        )
