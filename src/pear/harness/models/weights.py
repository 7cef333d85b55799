"""Reading a weights file and fitting its tensors to a timm model.

`.safetensors`, PyTorch state dicts (`.pth` / `.pt` / `.bin`, read with torch's weights_only
unpickler: a file that holds code is refused, nothing in it is run) and Google `.npz` files
(ViTs, BiT). Every way a file can fail to fit the model ends in a `PearError` that names the
file and what is wrong with it. `pear.harness.models.backbones.create_backbone` decides which
file to read; this module reads it.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import model_entrypoint
from torch import nn

from pear.errors import PearError

__all__ = [
    "filter_checkpoint",
    "load_state_dict",
    "load_weights_file",
    "map_in_order",
    "pretrained_cfg",
    "read_state_dict",
    "read_weights",
    "reset_classifier",
    "stored_values",
]

_STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin")
_SUPPORTED_SUFFIXES = (".safetensors", *_STATE_DICT_SUFFIXES, ".npz")
# Training scripts often save {"state_dict": ...} or {"model": ...} next to optimiser state.
_WRAPPER_KEYS = ("state_dict", "model")
_REPORT_LIMIT = 8
_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


def stored_values(path: Path) -> int:
    """How many values a weights file can hold: counted from a .safetensors header, else bounded by its
    size in bytes (no value takes less than one byte)."""
    size = path.stat().st_size
    if path.suffix.lower() != ".safetensors" or size < 8:
        return size
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        try:
            header = json.loads(fh.read(length)) if length <= min(size - 8, _MAX_HEADER_BYTES) else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            header = None
    if not isinstance(header, dict):
        return size  # not readable: reading the tensors names the problem
    shapes = [v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return sum(math.prod(s) for s in shapes if isinstance(s, list) and all(isinstance(d, int) for d in s))


def pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    """The input and head configuration timm records on every model it builds (typed as nn.Module,
    which cannot know the attribute)."""
    return cast(dict[str, Any], model.pretrained_cfg)


def reset_classifier(model: nn.Module, num_classes: int) -> None:
    # Every timm model has reset_classifier; nn.Module's typing cannot know it.
    cast(Callable[[int], None], model.reset_classifier)(num_classes)


def map_in_order(source: dict[str, torch.Tensor], model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Rename the keys of `source` to the model's keys, pairing them by position."""
    target = model.state_dict()
    if len(source) != len(target):
        raise PearError(
            f"built-in weights {path} hold {len(source)} tensors but the model has {len(target)}: "
            "reinstall the weights package, or drop model_kwargs that change the architecture"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise PearError(
                f"built-in weights {path}: {source_key} has shape {tuple(tensor.shape)} but the model's "
                f"{target_key} has shape {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def load_weights_file(model: nn.Module, path: Path, name: str, drop_head: bool) -> None:
    if not path.exists():
        raise PearError(f"weights file {path} does not exist")
    if not path.is_file():
        raise PearError(f"weights path {path} is not a file")
    if path.suffix.lower() == ".npz":
        _load_npz(model, path, name, drop_head)
        return
    load_state_dict(model, filter_checkpoint(read_weights(path), model, name), path, name, drop_head)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or PyTorch state-dict file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise PearError(f"weights file {path} is not a readable .safetensors file: {err}") from err
    if suffix in _STATE_DICT_SUFFIXES:
        return read_state_dict(path)
    raise PearError(f"weights file {path} has suffix {suffix!r}; expected one of {list(_SUPPORTED_SUFFIXES)}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise PearError(f"cannot read weights file {path}: {err.strerror or err}") from None
    # torch.save writes a zip archive (or, before torch 1.6, a pickle, which starts with
    # its protocol byte 0x80); anything else (a text file, an HTML error page) is not one.
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise PearError(
            f"weights file {path} is not a PyTorch checkpoint (it starts with {magic!r}, not a zip "
            f"archive or a pickle); expected a file written by torch.save, or a .safetensors file"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused_pickle(path, str(err)) from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise PearError(f"weights file {path} is not a readable PyTorch checkpoint: {_first_line(err)}") from err
    return _unwrap(checkpoint, path)


# What torch's weights_only unpickler says when it refuses something, and what that means for the user.
_REFUSALS = (
    (
        r"unsupported GLOBAL (\S+) whose module \S+ is blocked",
        "holds code (a call of {}) and was refused: nothing in it was run, since only tensors are loaded (torch.load "
        "with weights_only=True). Do not use this file unless you trust where it came from; a .safetensors file "
        "cannot hold code",
    ),
    (
        r"Unsupported global: GLOBAL (\S+)",
        "holds a pickled {} object; only tensors are loaded (torch.load with weights_only=True), nothing else is "
        "unpickled: save a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file",
    ),
)


def _refused_pickle(path: Path, reason: str) -> PearError:
    for pattern, message in _REFUSALS:
        if found := re.search(pattern, reason):
            return PearError(f"weights file {path} " + message.format(found.group(1)))
    return PearError(f"weights file {path} is damaged or not a PyTorch checkpoint")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _unwrap(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(checkpoint, dict):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), dict)), None)
        if wrapper is None:
            break
        checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise PearError(
            f"weights file {path} holds {type(checkpoint).__name__}; expected a non-empty state dict "
            "(parameter name -> tensor), possibly wrapped as {'state_dict': ...} or {'model': ...}"
        )
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise PearError(
            f"weights file {path}: entries {not_tensors[:_REPORT_LIMIT]} are not tensors; expected a state dict "
            "(parameter name -> tensor), possibly wrapped as {'state_dict': ...} or {'model': ...}"
        )
    # DataParallel / DistributedDataParallel checkpoints prefix every key.
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    return checkpoint


def filter_checkpoint(state_dict: dict[str, torch.Tensor], model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Apply the converter timm uses for this model family's checkpoints (e.g. resampling ViT
    position embeddings to the model's grid) where the family has one."""
    module = import_module(model_entrypoint(name).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return filter_fn(state_dict, model)
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError):
        # The converter expects a checkpoint of its own family; for a foreign one the key
        # comparison that follows names what does not fit far better than its traceback.
        return state_dict


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = pretrained_cfg(model).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{n}." for n in names)


def load_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path, name: str, drop_head: bool
) -> None:
    heads = _head_prefixes(model)
    if drop_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(heads)}
    else:
        _fit_head(model, state_dict, heads)
    expected = model.state_dict()
    missing = [
        k
        for k in expected
        if k not in state_dict
        and not (drop_head and k.startswith(heads))
        # BatchNorm step counters do not affect the forward pass and older checkpoints lack them.
        and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {keys[:_REPORT_LIMIT]}{' ...' if len(keys) > _REPORT_LIMIT else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched))
            if keys
        ]
        raise PearError(f"weights file {path} does not fit the backbone {name!r}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=False)


def _fit_head(model: nn.Module, state_dict: dict[str, torch.Tensor], heads: tuple[str, ...]) -> None:
    """Size the model's head like the checkpoint's, so that num_classes=None keeps whatever head the weights have."""
    head_bias = next((state_dict[f"{h}bias"] for h in heads if f"{h}bias" in state_dict), None)
    if head_bias is not None and head_bias.ndim == 1 and head_bias.shape[0] != model.num_classes:
        reset_classifier(model, head_bias.shape[0])


def _load_npz(model: nn.Module, path: Path, name: str, drop_head: bool) -> None:
    if not hasattr(model, "load_pretrained"):
        raise PearError(
            f"weights file {path} is a Google .npz checkpoint, which timm reads only for ViT and BiT "
            f"(ResNetV2) backbones, not {name!r}: convert it to .safetensors"
        )
    if not zipfile.is_zipfile(path):
        raise PearError(f"weights file {path} is not an .npz archive (a zip of named arrays), or it is truncated")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except unreadable as err:
        raise PearError(f"weights file {path} is not a readable .npz archive: {_first_line(err)}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise PearError(f"weights file {path} holds a single array, not an .npz archive of named arrays")
    with archive:
        try:
            # Reading every member checks the whole archive before timm copies from it.
            shapes = {key: archive[key].shape for key in archive.files}
        except unreadable as err:
            raise PearError(f"weights file {path} is a damaged .npz archive: {_first_line(err)}") from err

    blocks = getattr(model, "blocks", None)
    depth = _npz_depth(shapes)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and depth is not None and depth != len(blocks):
        raise PearError(
            f"weights file {path} has {depth} transformer blocks but the backbone {name!r} has {len(blocks)}"
        )
    embed_dim = getattr(model, "embed_dim", None)
    patch_kernel = next((shape for key, shape in shapes.items() if key.endswith("embedding/kernel")), None)
    if isinstance(embed_dim, int) and patch_kernel is not None and patch_kernel[-1] != embed_dim:
        raise PearError(
            f"weights file {path} has embedding width {patch_kernel[-1]} but the backbone {name!r} has {embed_dim}"
        )
    if not drop_head:
        head_bias = next((shape for key, shape in shapes.items() if key.split("/")[-2:] == ["head", "bias"]), None)
        if head_bias is not None and head_bias[-1] != model.num_classes:
            reset_classifier(model, head_bias[-1])
    try:
        # hasattr-checked above: timm's ViT and ResNetV2 define load_pretrained.
        cast(Callable[[str], None], model.load_pretrained)(str(path))
    except KeyError as err:
        raise PearError(f"weights file {path} does not fit the backbone {name!r}: it lacks the array {err}") from err
    except RuntimeError as err:
        raise PearError(f"weights file {path} does not fit the backbone {name!r}: {_first_line(err)}") from err
    except unreadable as err:
        raise PearError(f"weights file {path} cannot be loaded into {name!r}: {_first_line(err)}") from err


def _npz_depth(shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Number of encoder blocks in a Google ViT checkpoint (per-block keys, or big_vision's stacked layout)."""
    for key, shape in shapes.items():
        if key.endswith("Transformer/encoderblock/LayerNorm_0/scale"):
            return shape[0]
    indices = {int(m.group(1)) for key in shapes if (m := re.search(r"Transformer/encoderblock_(\d+)/", key))}
    return max(indices) + 1 if indices else None
