"""Checkpoint folders as the hubs hand them out: HuggingFace `transformers` ViTs and timm exports.

A `transformers` ViT folder (`config.json` with model_type "vit" + `model.safetensors`, e.g.
google/vit-base-patch16-224-in21k as downloaded) is mapped key by key onto timm's
VisionTransformer, built with the sizes its config.json gives. A timm hub folder
(`config.json` with "architecture" + `model.safetensors`) already has timm's keys. Either
folder names its architecture, so no model name has to be given with it.

Reading a folder needs no timm (`default_backbone` is cheap enough for option parsing);
building and loading the model is `pear.harness.models.backbones.create_backbone`'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear.errors import PearError
from pear.jsontypes import NONE, wrong_types

from .hub_normalisation import HF_MEAN, HF_STD, channels, hf_normalisation
from .hub_vit import timm_vit_name, transformers_vit_to_timm

if TYPE_CHECKING:  # torch only where tensors are mapped: option parsing reads folders without it
    import torch

__all__ = ["HubFolder", "default_backbone", "default_img_size", "read_folder", "transformers_vit_to_timm"]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LISTED_FILES = 12
# transformers' ViTConfig defaults, for keys a config.json leaves out.
_HF_VIT_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
}
# transformers activation name -> timm's (timm.layers.get_act_layer).
_HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "quick_gelu": "quick_gelu",
}
_TIMM_LAYER_NORM_EPS = 1e-6
_NUMBER = (int, float)
# The types of the config.json fields read, for messages that name the field (jsontypes.wrong_types).
_HF_FIELDS = {
    "hidden_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "layer_norm_eps": _NUMBER,
    "num_channels": int,
    "qkv_bias": bool,
}
_TIMM_FIELDS = {"architecture": str, "model_args": (dict, NONE), "num_classes": int, "pretrained_cfg": (dict, NONE)}
_TIMM_PRETRAINED_FIELDS = {"mean": (list, *_NUMBER, NONE), "std": (list, *_NUMBER, NONE)}
_TYPE_WORDS = {
    int: "an integer",
    str: "a string",
    _NUMBER: "a number",
    bool: "true or false",
    (dict, NONE): "an object",
    (list, *_NUMBER, NONE): "a list of 3 numbers",
}
# Generous upper bounds (ViT-22B: width 6144, 48 layers): a config beyond them is damaged, and timm would
# try to allocate whatever it asks for.
_HF_MAX_SIZES = {
    "hidden_size": 16384,
    "num_hidden_layers": 256,
    "num_attention_heads": 1024,
    "intermediate_size": 65536,
    "num_channels": 64,
    "patch_size": 1024,
    "image_size": 8192,
}
_MAX_SIZE = 65536
_MAX_DEPTH = 256
_DEPTH_WORDS = ("depth", "layers", "blocks")
# ViTImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD) when no preprocessor_config.json is there.


@dataclass(frozen=True)
class HubFolder:
    """What a checkpoint folder says about its model.

    kind: "transformers" or "timm". architecture: the timm model name to build.
    model_kwargs: timm.create_model arguments that give the checkpoint's shapes.
    mean, std: the input normalisation the weights were trained with.
    settings: what the folder's files say that changes what the weights compute (architecture options,
        normalisation), as "FILE:FIELD": JSON value; a task checkpoint records them to refuse an edited folder.
    name: the name a run records; the architecture's unless timm has no name for the
        folder's sizes. img_size: the resolution the weights were made at, where the folder says.

    """

    path: Path
    kind: str
    architecture: str
    weights_file: Path
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = HF_MEAN
    std: tuple[float, ...] = HF_STD
    settings: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    img_size: int | None = None

    @property
    def recorded_name(self) -> str:
        return self.name or self.architecture

    def to_timm(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of `weights_file` under timm's key names."""
        return transformers_vit_to_timm(tensors) if self.kind == "transformers" else tensors


def default_backbone(weights: str | Path | None) -> str:
    """The backbone to build when none is named: the architecture of a `weights` checkpoint
    folder (its name as a run records it), otherwise the built-in EfficientNet-Lite0."""
    if weights is not None and Path(weights).is_dir():
        return read_folder(weights).recorded_name
    return DEFAULT_BACKBONE


def default_img_size(weights: str | Path | None) -> int | None:
    """The resolution a `weights` checkpoint folder's config.json gives; None for anything else."""
    if weights is not None and Path(weights).is_dir():
        return read_folder(weights).img_size
    return None


def read_folder(path: str | Path) -> HubFolder:
    """Read a transformers ViT folder or a timm hub folder; anything else is a PearError that says
    what the folder holds."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise _not_a_checkpoint_folder(path, "it has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _not_a_checkpoint_folder(path, f"its config.json is not readable JSON ({err})") from err
    if not isinstance(config, dict):
        raise _not_a_checkpoint_folder(path, f"its config.json holds a {type(config).__name__}, not an object")

    if "architecture" in config:
        kind = "timm"
    elif config.get("model_type") == "vit":
        kind = "transformers"
    elif "model_type" in config:
        raise _not_a_checkpoint_folder(
            path,
            f"its config.json describes a transformers {config['model_type']!r} model "
            f"({_architectures(config.get('architectures'))}); "
            "only model_type 'vit' (ViTModel, ViTForImageClassification) is mapped onto timm",
        )
    else:
        keys = sorted(config)
        raise _not_a_checkpoint_folder(
            path,
            f"its config.json has neither 'architecture' (timm) nor 'model_type' (transformers); "
            f"its keys: {keys[:_LISTED_FILES]}{' ...' if len(keys) > _LISTED_FILES else ''}",
        )

    weights_file = next((path / name for name in _WEIGHT_FILES if (path / name).is_file()), None)
    if weights_file is None:
        raise _not_a_checkpoint_folder(
            path, f"its config.json is a {kind} one but there is no {' or '.join(_WEIGHT_FILES)}"
        )
    if kind == "timm":
        return _timm_folder(path, config, weights_file)
    return _transformers_folder(path, config, weights_file)


def _architectures(listed: Any) -> str:
    if not listed:
        return "no architectures listed"
    return ", ".join(map(str, listed)) if isinstance(listed, list) else str(listed)


def _not_a_checkpoint_folder(path: Path, reason: str) -> PearError:
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()) if path.is_dir() else []
    listing = f"{found[:_LISTED_FILES]}{' ...' if len(found) > _LISTED_FILES else ''}" if found else "nothing"
    return PearError(
        f"weights folder {path} is neither a HuggingFace transformers ViT folder (config.json with model_type "
        f"'vit' + model.safetensors) nor a timm hub folder (config.json with 'architecture' + model.safetensors): "
        f"{reason}; found {listing}"
    )


def _timm_folder(path: Path, config: dict, weights_file: Path) -> HubFolder:
    # timm writes the input config under "pretrained_cfg"; older exports kept it at the top level.
    pretrained = config.get("pretrained_cfg") or config
    _check_fields(path, "config.json", config, _TIMM_FIELDS)
    _check_fields(
        path,
        "config.json",
        pretrained,
        _TIMM_PRETRAINED_FIELDS,
        "pretrained_cfg." if "pretrained_cfg" in config else "",
    )
    model_args = config.get("model_args") or {}
    _check_model_args(path, model_args)
    extra = {}
    if "num_classes" in config:
        extra["num_classes"] = config["num_classes"]
    prefix = "config.json:" + ("pretrained_cfg." if "pretrained_cfg" in config else "")
    mean = channels(path, prefix + "mean", pretrained.get("mean"), HF_MEAN)
    std = channels(path, prefix + "std", pretrained.get("std"), HF_STD, positive=True)
    settings = {
        "config.json:architecture": config["architecture"],
        "config.json:model_args": model_args,
        prefix + "mean": list(mean),
        prefix + "std": list(std),
    }
    input_size = pretrained.get("input_size") if isinstance(pretrained, dict) else None
    size = model_args.get("img_size", input_size[-1] if isinstance(input_size, list | tuple) and input_size else None)
    return HubFolder(
        path=path,
        kind="timm",
        architecture=config["architecture"],
        weights_file=weights_file,
        model_kwargs={**extra, **model_args},
        mean=mean,
        std=std,
        settings=settings,
        img_size=_square(size, "img_size", path) if size is not None else None,
    )


def _check_fields(path: Path, file: str, data: dict, types: dict, where: str = "") -> None:
    for key, expected in types.items():
        if wrong_types(data, {key: expected}):
            raise PearError(
                f"weights folder {path}: {file}'s {where}{key} is {data[key]!r}; expected {_TYPE_WORDS[expected]}"
            )


def _check_model_args(path: Path, model_args: dict) -> None:
    """Integers in model_args (depth, embed_dim, ...) within sane bounds: timm builds whatever it is given."""
    for key, value in model_args.items():
        values = value if isinstance(value, list | tuple) else [value]
        # Counts of blocks decide how many modules are made before any size is checked: bounded tighter.
        bound = _MAX_DEPTH if any(word in key for word in _DEPTH_WORDS) else _MAX_SIZE
        for v in values:
            if isinstance(v, int | float) and not isinstance(v, bool) and not (-bound <= v <= bound):
                raise PearError(
                    f"weights folder {path}: config.json's model_args.{key} is {value!r}, "
                    f"beyond any real model (at most {bound})"
                )


def _transformers_folder(path: Path, config: dict, weights_file: Path) -> HubFolder:
    cfg = {**_HF_VIT_DEFAULTS, **config}
    _check_fields(path, "config.json", cfg, _HF_FIELDS)
    width, depth, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    patch, image = _square(cfg["patch_size"], "patch_size", path), _square(cfg["image_size"], "image_size", path)
    _check_hf_sizes(path, cfg, patch, image)
    act = _HF_ACTIVATIONS.get(cfg["hidden_act"])
    if act is None:
        raise PearError(
            f"weights folder {path}: config.json's hidden_act {cfg['hidden_act']!r} has no timm "
            f"counterpart here; known: {sorted(_HF_ACTIVATIONS)}"
        )
    # timm sizes the MLP as int(width * mlp_ratio); the half keeps that exact for any intermediate_size.
    inner = cfg["intermediate_size"]
    mlp_ratio = inner / width if int(width * (inner / width)) == inner else (inner + 0.5) / width
    kwargs: dict[str, Any] = {
        "embed_dim": width,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": mlp_ratio,
        "patch_size": patch,
        "img_size": image,
        "in_chans": cfg["num_channels"],
        "qkv_bias": cfg["qkv_bias"],
    }
    if act != "gelu":
        kwargs["act_layer"] = act
    if cfg["layer_norm_eps"] != _TIMM_LAYER_NORM_EPS:
        from functools import partial

        from timm.layers import LayerNorm

        kwargs["norm_layer"] = partial(LayerNorm, eps=float(cfg["layer_norm_eps"]))
    mean, std = hf_normalisation(path)
    settings = {f"config.json:{k}": cfg[k] for k in _HF_VIT_DEFAULTS}
    settings.update(
        {"preprocessor_config.json:image_mean": list(mean), "preprocessor_config.json:image_std": list(std)}
    )
    name, architecture = timm_vit_name(width, depth, heads, patch, image)
    return HubFolder(
        path=path,
        kind="transformers",
        architecture=architecture,
        weights_file=weights_file,
        model_kwargs=kwargs,
        mean=mean,
        std=std,
        settings=settings,
        name=name,
        img_size=image,
    )


def _check_hf_sizes(path: Path, cfg: dict, patch: int, image: int) -> None:
    """Every size positive and within what a real ViT has, so that no config asks for a model that
    cannot be allocated; the heads must divide the width."""
    sizes = {
        k: cfg[k]
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_channels")
    }
    for key, value in {**sizes, "patch_size": patch, "image_size": image}.items():
        if not 1 <= value <= _HF_MAX_SIZES[key]:
            raise PearError(
                f"weights folder {path}: config.json's {key} is {value}; expected 1 to {_HF_MAX_SIZES[key]}"
            )
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise PearError(
            f"weights folder {path}: config.json's num_attention_heads {cfg['num_attention_heads']} "
            f"does not divide its hidden_size {cfg['hidden_size']}"
        )
    if patch > image:
        raise PearError(
            f"weights folder {path}: config.json's patch_size {patch} is larger than its image_size {image}"
        )
    eps = cfg["layer_norm_eps"]
    if not (math.isfinite(eps) and 0 < eps < 1):
        raise PearError(
            f"weights folder {path}: config.json's layer_norm_eps is {eps!r}; expected a small "
            "positive number such as 1e-12"
        )


def _square(value: Any, key: str, path: Path) -> int:
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PearError(f"weights folder {path}: config.json's {key} is {value!r}; expected one integer (square)")
    return value
