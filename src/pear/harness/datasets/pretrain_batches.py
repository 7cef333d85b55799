"""The unlabelled batches scripts/pretrain_vit.py distils the built-in ViT on: random crops of
photos, Fashion-MNIST images and procedural shapes, at the teacher's 128 px, each batch a
function of (seed, step) only, so a pretraining run resumes exactly."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MIX", "TEACHER_PX", "fashion_images", "make_batch", "photo_crops", "procedural"]

TEACHER_PX = 128
MIX = (0.5, 0.25, 0.25)  # photos, Fashion-MNIST, procedural


def photo_crops(photos: list[torch.Tensor], n: int, g: torch.Generator) -> torch.Tensor:
    """n random crops of the uint8 CHW `photos`, resized to the teacher's size; a fifth of them grey."""
    out = []
    for _ in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        h, w = img.shape[1:]
        area = h * w * (0.01 + 0.99 * float(torch.rand(1, generator=g)) ** 2)
        ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand(1, generator=g)))
        ch = min(h, max(8, round(math.sqrt(area / ratio))))
        cw = min(w, max(8, round(math.sqrt(area * ratio))))
        top = int(torch.randint(h - ch + 1, (1,), generator=g))
        left = int(torch.randint(w - cw + 1, (1,), generator=g))
        crop = img[:, top : top + ch, left : left + cw].float()[None] / 255
        out.append(
            F.interpolate(crop, size=(TEACHER_PX, TEACHER_PX), mode="bilinear", antialias=True, align_corners=False)
        )
    x = torch.cat(out)
    grey = torch.rand(n, generator=g) < 0.2  # Fashion-MNIST-like grey images are common downstream
    x[grey] = x[grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return x


def fashion_images(fashion: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n of the uint8 28x28 `fashion` images, shifted by up to 3 px, as RGB at the teacher's size."""
    idx = torch.randint(len(fashion), (n,), generator=g)
    x = fashion[idx].float()[:, None] / 255
    x = F.pad(x, (3, 3, 3, 3))
    dy, dx = torch.randint(0, 7, (2,), generator=g).tolist()
    x = x[:, :, dy : dy + 28, dx : dx + 28]
    x = F.interpolate(x, size=(TEACHER_PX, TEACHER_PX), mode="bicubic", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous()


def procedural(n: int, g: torch.Generator) -> torch.Tensor:
    """Random ellipses, rotated rectangles and half-planes, in random colours, on gradients."""
    s = TEACHER_PX
    yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
    c0, c1 = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    a = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
    ramp = (torch.cos(a) * xx + torch.sin(a) * yy).clamp(0, 1)
    img = c0 + (c1 - c0) * ramp
    for _ in range(4):
        present = (torch.rand(n, 1, 1, 1, generator=g) < 0.75).float()
        cx, cy = torch.rand(n, 1, 1, generator=g), torch.rand(n, 1, 1, generator=g)
        rx = 0.05 + 0.3 * torch.rand(n, 1, 1, generator=g)
        ry = 0.05 + 0.3 * torch.rand(n, 1, 1, generator=g)
        th = torch.rand(n, 1, 1, generator=g) * math.pi
        u = (xx - cx) * torch.cos(th) + (yy - cy) * torch.sin(th)
        v = -(xx - cx) * torch.sin(th) + (yy - cy) * torch.cos(th)
        kind = torch.randint(0, 3, (n, 1, 1), generator=g)
        ellipse = (u / rx) ** 2 + (v / ry) ** 2 <= 1
        rect = (u.abs() <= rx) & (v.abs() <= ry)
        band = v.abs() <= ry * 0.2
        mask = torch.where(kind == 0, ellipse, torch.where(kind == 1, rect, band)).float()[:, None]
        colour = torch.rand(n, 3, 1, 1, generator=g)
        img = img * (1 - mask * present) + colour * mask * present
    noise = 0.05 * torch.rand(n, 1, 1, 1, generator=g)
    return (img + noise * torch.randn(img.shape, generator=g)).clamp(0, 1)


def make_batch(step: int, seed: int, batch: int, photos: list[torch.Tensor], fashion: torch.Tensor) -> torch.Tensor:
    """The teacher-resolution images of one step, in [0, 1]; a function of (seed, step) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    n_photo, n_fashion = round(MIX[0] * batch), round(MIX[1] * batch)
    x = torch.cat(
        [
            photo_crops(photos, n_photo, g),
            fashion_images(fashion, n_fashion, g),
            procedural(batch - n_photo - n_fashion, g),
        ]
    )
    flip = torch.rand(batch, generator=g) < 0.5
    x[flip] = x[flip].flip(-1)
    return x[torch.randperm(batch, generator=g)]
