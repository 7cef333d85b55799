"""Shared tiny models and helpers: every test runs on the CPU in well under a second.

The models are real timm architectures shrunk to toy sizes, so Pear's placement code
sees the very module classes it sees on ViT-B/16 or EfficientNet, at a fraction of the
cost. All of them are created under a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

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
    """'vit' / 'deit' / 'deit_distilled' (3 blocks of width 48 at 32 px unless `depth` says otherwise),
    'cnn' (mobilenetv3_small_050), 'lite0' (tf_efficientnet_lite0; slower, use sparingly)."""
    if kind == "vit":
        return _vit("vit_tiny_patch16_224", depth, seed)
    if kind == "deit":
        return _vit("deit_tiny_patch16_224", depth, seed)
    if kind == "deit_distilled":
        return _vit("deit_tiny_distilled_patch16_224", depth, seed)
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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Every model here is far too small to gain from intra-op threads, and on a busy
    machine OpenMP threads spinning against other processes slow a test 10-100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ---------------------------------------------------------------- tiny VTAB-format data

# A 2-block ViT of width 32 at 32 px: a whole `pear train` run of a few epochs on the
# datasets below takes about a second of compute.
TINY_VIT_ARGS = ["--backbone", "vit_tiny_patch16_224", "--img-size", "32",
                 "--model-kwargs", '{"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}']


def write_vtab_task(root, name: str = "toy", train: int = 30, val: int = 10, test: int = 40,
                    classes: int = 3, seed: int = 0):
    """A VTAB-1k folder `root/name` of 16 px PNGs: each class tints one colour channel
    under noise strong enough that a few epochs do not reach 100% test accuracy."""

    import numpy as np
    from PIL import Image

    task = Path(root) / name
    rng = np.random.default_rng(seed)
    lines: dict[str, list[str]] = {}
    for split, n in (("train800", train), ("val200", val), ("test", test)):
        lines[split] = []
        for i in range(n):
            label = i % classes
            img = rng.integers(0, 200, (16, 16, 3)).astype(np.int32)
            img[..., label % 3] += 40 + 15 * (label // 3)
            img = np.clip(img, 0, 255).astype(np.uint8)
            rel = f"images/{split}/{i:06d}.png"
            (task / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(task / rel)
            lines[split].append(f"{rel} {label}\n")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (task / f"{split}.txt").write_text("".join(entries))
    return task


@pytest.fixture(scope="session")
def tiny_vtab(tmp_path_factory):
    """Data root holding task 'toy': 30 train800 + 10 val200 (40 train800val200), 40
    test, 3 classes. Shared by the whole session: copy it before changing anything."""
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root)
    return root


@pytest.fixture
def vtab_factory():
    """write_vtab_task(root, name='toy', train=30, val=10, test=40, classes=3, seed=0) -> task folder."""
    return write_vtab_task


@pytest.fixture(scope="session")
def tiny_vit_args():
    """`pear train` flags for the tiny ViT: backbone, --img-size and --model-kwargs."""
    return tuple(TINY_VIT_ARGS)


@pytest.fixture(scope="session")
def load_script():
    """load_script('benchmarks/name.py') -> that file of the repository, loaded as a module
    (scripts/ and benchmarks/ are not packages)."""
    import importlib.util

    def load(relative: str):
        path = Path(__file__).resolve().parents[1] / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
