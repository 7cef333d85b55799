"""The input normalisation of a weights folder: per-channel mean and std from a timm folder's
pretrained_cfg or a transformers folder's preprocessor_config.json, as Pear's transforms apply
them to images in [0, 1]."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pear.errors import PearError
from pear.jsontypes import has_type

# transformers' ViT image processor's defaults.
HF_MEAN = HF_STD = (0.5, 0.5, 0.5)


def channels(path: Path, field: str, value: Any, default: tuple[float, ...], positive: bool = False) -> tuple:
    """A per-channel normalisation value: 3 finite numbers (one number: the same for each channel)."""
    if value is None or value == []:
        return default
    values = [value] * 3 if has_type(value, (int, float)) else value
    if not (
        isinstance(values, list | tuple)
        and len(values) == 3
        and all(has_type(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive) for v in values)
    ):
        file, _, key = field.partition(":")
        raise PearError(
            f"weights folder {path}: {file}'s {key} is {value!r}; expected 3 finite numbers"
            f"{' above 0' if positive else ''} (one per RGB channel)"
        )
    return tuple(float(v) for v in values)


def hf_normalisation(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    processor = path / "preprocessor_config.json"
    if not processor.is_file():
        return HF_MEAN, HF_STD
    try:
        cfg = json.loads(processor.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise PearError(f"weights folder {path}: preprocessor_config.json is not readable JSON ({err})") from err
    if not isinstance(cfg, dict):
        raise PearError(f"weights folder {path}: preprocessor_config.json holds a {type(cfg).__name__}, not an object")
    mean = channels(path, "preprocessor_config.json:image_mean", cfg.get("image_mean"), HF_MEAN)
    std = channels(path, "preprocessor_config.json:image_std", cfg.get("image_std"), HF_STD, positive=True)
    for key in ("do_normalize", "do_rescale"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise PearError(
                f"weights folder {path}: preprocessor_config.json's {key} is {cfg[key]!r}; expected true or false"
            )
    if cfg.get("do_normalize") is False:  # the model saw the rescaled pixels as they are
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # Pear's images are in [0, 1] (pixel / 255) before they are normalised; the model's were
    # pixel * rescale_factor (default 1/255), or the raw pixels with do_rescale false.
    factor = cfg.get("rescale_factor", 1 / 255)
    if not (has_type(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise PearError(
            f"weights folder {path}: preprocessor_config.json's rescale_factor is {factor!r}; expected a number above 0"
        )
    k = 255.0 * factor if cfg.get("do_rescale", True) else 255.0
    if k != 1.0:
        mean, std = tuple(m / k for m in mean), tuple(s / k for s in std)
    return mean, std
