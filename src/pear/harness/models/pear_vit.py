"""The project's own pretrained vision transformer, registered with timm.

`pear_vit_tiny6_patch4_32` is a plain timm `VisionTransformer` (6 blocks, width 192,
3 heads, patch 4, 32 px input: 64 patch tokens + a class token), so every code path that
serves ViT-B/16 serves it: the same `attn`, `mlp` and `attn.qkv` positions. Its weights
were made on this project's CPUs by `scripts/pretrain_vit.py`: distilled from the built-in
ImageNet EfficientNet-Lite0 on unlabelled images (wallpaper photos, Fashion-MNIST images
outside the built-in task's splits, procedural shapes), with no human labels. The file
ships inside the package and is checked against its SHA-256 on every load, also through
`timm.create_model(PEAR_VIT, pretrained=True)`, which reads it from disk (no download).
"""

from __future__ import annotations

from pathlib import Path

from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

__all__ = ["PEAR_VIT", "PEAR_VIT_ARGS", "PEAR_VIT_SHA256", "pear_vit_tiny6_patch4_32", "weights_file"]

PEAR_VIT = "pear_vit_tiny6_patch4_32"
PEAR_VIT_ARGS = dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3)
# SHA-256 of src/pear/weights/pear_vit_tiny6_patch4_32.safetensors, checked on every load.
PEAR_VIT_SHA256: str | None = "536244621c712bd6d05b3ba11d98b7540b0135e3708395088a1ad1f34de4a345"

default_cfgs = generate_default_cfgs(
    {
        f"{PEAR_VIT}.lite0_distilled": dict(
            input_size=(3, 32, 32),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
            crop_pct=1.0,
            num_classes=0,
            first_conv="patch_embed.proj",
            classifier="head",
            license="apache-2.0",
        )
    }
)


def weights_file() -> Path:
    """The shipped weights (timm's own key names, no head)."""
    return Path(__file__).resolve().parents[2] / "weights" / f"{PEAR_VIT}.safetensors"  # src/pear/weights


@register_model
def pear_vit_tiny6_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT, 6 blocks x width 192, patch 4 at 32 px; headless unless num_classes is given.
    pretrained=True loads the shipped file after checking its SHA-256."""
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained and "file" not in overlay:
        from .backbones import check_sha256  # here: backbones imports this module

        check_sha256(weights_file(), PEAR_VIT_SHA256)
        overlay["file"] = str(weights_file())
    return _create_vision_transformer(
        PEAR_VIT, pretrained=pretrained, pretrained_cfg_overlay=overlay or None, **{**PEAR_VIT_ARGS, **kwargs}
    )
