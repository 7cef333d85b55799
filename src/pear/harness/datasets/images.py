"""Images as a model sees them: any PIL mode converted to RGB, resized and normalised.

Training (`VtabDataset`), evaluation and `pear predict` all go through `load_image` and
`build_transform`, so grey, RGBA, palette and 16-bit images of any size come out exactly
as the training images did.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from pear.errors import PearError

# PIL's own conversion clips 16-bit grey at 255 (a white image) and turns float images
# black, so those modes are rescaled to 8 bits explicitly.
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")

# Everything PIL raises for a file it cannot decode (truncated streams, bad chunks,
# decompression bombs, unsupported conversions).
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(img, dtype=np.float64) / 257.0, 0, 255)
        return Image.fromarray(np.rint(grey).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        img = img.convert("L")
    elif img.mode == "P" and "transparency" in img.info:
        # PIL warns when a palette image with transparency skips RGBA on its way to RGB.
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_image(image: str | Path | Image.Image, transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """Open (if a path) and convert any PIL mode to RGB, then apply `transform`.

    Training and prediction both go through here so they see identical pixels.
    """
    name = "<in-memory image>" if isinstance(image, Image.Image) else str(image)
    try:
        if isinstance(image, Image.Image):
            rgb = _to_rgb(image)
        else:
            with Image.open(image) as img:
                img.load()
                rgb = _to_rgb(img)
    except FileNotFoundError:
        raise PearError(f"image {name} does not exist") from None
    except _IMAGE_ERRORS as e:
        raise PearError(
            f"cannot read image {name}: {type(e).__name__}: {e}; expected a readable image file (PNG, JPEG, ...)"
        ) from None
    return transform(rgb)


def build_transform(img_size: int, mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """Bicubic resize to exactly ``img_size`` x ``img_size``, to tensor, normalise.

    No augmentation: the VTAB-1k recipe the paper follows trains without it.
    """
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise PearError(f"image size {img_size!r} is invalid; expected a positive integer")
    mean, std = list(mean), list(std)
    if len(mean) != 3 or len(std) != 3:
        raise PearError(f"normalisation mean {mean} / std {std}: expected 3 values each (RGB)")
    if any(not s > 0 for s in std):
        raise PearError(f"normalisation std {std} has a value <= 0; expected positive values")
    return transforms.Compose(
        [
            transforms.Resize((img_size, img_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
