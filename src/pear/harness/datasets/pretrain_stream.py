"""What scripts/pretrain_vit.py's DataLoader worker makes: the image pools (wallpaper photos,
the Fashion-MNIST training images outside the built-in task), the frozen teacher
(EfficientNet-Lite0) and its targets, and the stream of (step, student input, teacher targets)
that pretraining consumes, each batch a function of (seed, step) (`pretrain_batches`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import IterableDataset

from pear.atomic import atomic_write_file
from pear.errors import PearError

from ..models.backbones import create_backbone
from ..run.precision import Precision, hold_frozen_bf16
from .builders import FASHION_MNIST_DIR, N_TRAIN, N_VAL, _balanced_order, _load_fashion_split
from .pretrain_batches import make_batch

WALLPAPER_DIRS = ("/usr/share/backgrounds", "/usr/share/wallpapers")
STUDENT_PX = 32
PHOTO_SHORT_SIDE = 320


# ---------------------------------------------------------------- image pools
def load_photos(cache: Path) -> list[torch.Tensor]:
    """Every wallpaper photo, downscaled to a short side of 320 px, uint8 CHW (cached as .npz)."""
    if cache.is_file():
        with np.load(cache) as z:
            return [torch.from_numpy(z[k]) for k in sorted(z.files)]
    paths = sorted(
        {
            p.resolve()
            for d in WALLPAPER_DIRS
            if Path(d).is_dir()
            for p in Path(d).rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and p.is_file()
        }
    )
    photos, seen = [], set()
    for p in paths:
        try:
            with Image.open(p) as opened:
                img = opened.convert("RGB")
                s = PHOTO_SHORT_SIDE / min(img.size)
                if s < 1:
                    img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BICUBIC)
                arr = np.asarray(img).transpose(2, 0, 1).copy()
        except OSError:
            continue
        key = arr[:, ::16, ::16].tobytes()  # the same picture shipped at several sizes counts once
        if key in seen or min(arr.shape[1:]) < 64:
            continue
        seen.add(key)
        photos.append(arr)
    if not photos:
        raise PearError(
            f"no wallpaper photos under {WALLPAPER_DIRS}: apt-get install gnome-backgrounds "
            "mate-backgrounds plasma-workspace-wallpapers"
        )
    arrays: dict[str, Any] = {f"{i:04d}": a for i, a in enumerate(photos)}
    atomic_write_file(cache, lambda fh: np.savez(fh, **arrays))
    return [torch.from_numpy(a) for a in photos]


def load_fashion() -> torch.Tensor:
    """Fashion-MNIST training images that are not in the built-in task's splits (seed 0 picks)."""
    images, labels = _load_fashion_split(FASHION_MNIST_DIR, "train")
    picked = _balanced_order(labels, np.random.default_rng(0))[: N_TRAIN + N_VAL]
    keep = np.setdiff1d(np.arange(len(images)), picked)
    return torch.from_numpy(images[keep].copy())  # labels are never used


# ---------------------------------------------------------------- teacher
def make_teacher(precision: Precision) -> nn.Module:
    """The frozen built-in EfficientNet-Lite0, its Linear/Conv weights in bf16 when the precision says so."""
    teacher, _ = create_backbone("tf_efficientnet_lite0", num_classes=None)
    teacher.eval().requires_grad_(False)
    if precision.frozen_bf16:
        hold_frozen_bf16(teacher)
    return teacher


def teacher_targets(teacher: nn.Module, x: torch.Tensor, amp: bool = False) -> dict[str, torch.Tensor]:
    """The teacher's targets for the 128 px images `x`, in fp32 (computed under bf16 autocast with `amp`)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = _teacher_forward(teacher, x)
    return {k: v.float() for k, v in out.items()}


def _teacher_forward(teacher: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """timm's EfficientNet-Lite0 (`teacher`), its stage 4 kept as "mid"."""
    t = teacher.bn1(teacher.conv_stem((x - 0.5) / 0.5))
    mid = None
    for i, stage in enumerate(teacher.blocks):
        t = stage(t)
        if i == 4:
            mid = t  # 112 channels at stride 16: 8x8 at 128 px
    fmap = teacher.bn2(teacher.conv_head(t))  # 1280 channels, 4x4
    pooled = fmap.mean((2, 3))
    assert mid is not None
    return {"logits": teacher.classifier(pooled), "pooled": pooled, "fmap": fmap, "mid": mid}


class Stream(IterableDataset):
    """Steps start..steps-1: the student's 32 px inputs with the teacher's targets."""

    def __init__(self, start: int, steps: int, seed: int, batch: int, photo_cache: Path, precision: Precision):
        self.start, self.steps, self.seed, self.batch, self.photo_cache = start, steps, seed, batch, photo_cache
        self.precision = precision

    def __iter__(self):
        torch.set_num_threads(1)
        photos, fashion = load_photos(self.photo_cache), load_fashion()
        teacher = make_teacher(self.precision)
        for step in range(self.start, self.steps):
            x = make_batch(step, self.seed, self.batch, photos, fashion)
            student_x = F.interpolate(
                x, size=(STUDENT_PX, STUDENT_PX), mode="bilinear", antialias=True, align_corners=False
            )
            yield step, (student_x - 0.5) / 0.5, teacher_targets(teacher, x, self.precision.amp)
