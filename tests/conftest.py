"""Shared tiny models and helpers: every test runs on the CPU in well under a second.

The models are real timm architectures shrunk to toy sizes, so Pear's placement code
sees the very module classes it sees on ViT-B/16 or EfficientNet, at a fraction of the
cost. All of them are created under a fixed seed.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

import pytest

NUM_CLASSES = 5
VIT_IMG = 32
CNN_IMG = 32


def _vit(name: str = "vit_tiny_patch16_224", depth: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, img_size=VIT_IMG,
                             patch_size=8, depth=depth, embed_dim=48, num_heads=3)


def _cnn(name: str = "mobilenetv3_small_050", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)


def make_model(kind: str, depth: int = 3, seed: int = 0) -> nn.Module:
    """'vit' / 'deit' (3 blocks of width 48 at 32 px unless `depth` says otherwise),
    'cnn' (mobilenetv3_small_050), 'lite0' (tf_efficientnet_lite0; slower, use sparingly)."""
    if kind == "vit":
        return _vit("vit_tiny_patch16_224", depth, seed)
    if kind == "deit":
        return _vit("deit_tiny_patch16_224", depth, seed)
    if kind == "cnn":
        return _cnn("mobilenetv3_small_050", seed)
    if kind == "lite0":
        return _cnn("tf_efficientnet_lite0", seed)
    raise KeyError(kind)


def make_batch(kind: str, n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = CNN_IMG if kind in ("cnn", "lite0") else VIT_IMG
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return x, y


def run_steps(model: nn.Module, batch, steps: int, tracker=None, optimizer=None, lr: float = 1e-2) -> list[float]:
    """`steps` AdamW steps on one fixed batch, calling `tracker.update()` between
    backward() and optimizer.step() as Pear documents. Returns the losses."""
    x, y = batch
    model.train()
    if optimizer is None:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if tracker is not None:
            tracker.update()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def tiny_vit() -> nn.Module:
    """Unattached 3-block ViT, width 48, 32 px input, 5 classes."""
    return make_model("vit")


@pytest.fixture
def tiny_deit() -> nn.Module:
    return make_model("deit")


@pytest.fixture
def tiny_cnn() -> nn.Module:
    """Unattached mobilenetv3_small_050 (5 classes), 64 px input; its stages differ in
    width and several blocks have stride 2, so adapter signatures differ across stages."""
    return make_model("cnn")


@pytest.fixture
def vit_batch():
    return make_batch("vit")


@pytest.fixture
def cnn_batch():
    return make_batch("cnn")


@pytest.fixture
def model_factory():
    return make_model


@pytest.fixture
def batch_factory():
    return make_batch


@pytest.fixture
def train_steps():
    """run_steps(model, batch, steps, tracker=None, optimizer=None, lr=1e-2) -> losses."""
    return run_steps
