"""A transformers ViT under timm's names: the timm model name its sizes have, and its state dict
under timm VisionTransformer keys. `pear.harness.models.hub` reads the folders (and re-exports
`transformers_vit_to_timm`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where tensors are mapped: option parsing names a folder's model without it
    import torch

# timm's ViT names by (width, depth, heads), to name a transformers ViT the way timm would.
_TIMM_VIT_SIZES = {
    (192, 12, 3): "tiny",
    (384, 12, 6): "small",
    (768, 12, 12): "base",
    (1024, 24, 16): "large",
    (1280, 32, 16): "huge",
}
_GENERIC_VIT = "vit_base_patch16_224"

# transformers ViT key prefix -> timm VisionTransformer key prefix; q, k and v are joined separately.
_HF_VIT_RENAMES = (
    (r"embeddings\.cls_token$", "cls_token"),
    (r"embeddings\.position_embeddings$", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"layernorm\.", "norm."),
    (r"classifier\.", "head."),
)
_HF_VIT_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")
# The pooler (a tanh layer that PEFT on ViTs does not use) and the masked-image-modelling token have no timm twin.
_HF_VIT_DROPPED = re.compile(r"pooler\.|embeddings\.mask_token$")


def timm_vit_name(width: int, depth: int, heads: int, patch: int, image: int) -> tuple[str, str]:
    """(name to record, timm entry point to build): timm's name for these sizes, twice
    (vit_base_patch16_224 for google/vit-base-patch16-224-in21k); where timm has no such model,
    a name that says the sizes (vit_w64_d2_h2_patch4_32) and a generic ViT entry point, whose
    sizes the config's override."""
    import timm  # here, not at import: option parsing calls default_backbone

    size = _TIMM_VIT_SIZES.get((width, depth, heads))
    name = f"vit_{size}_patch{patch}_{image}"
    if size and timm.is_model(name):
        return name, name
    return f"vit_w{width}_d{depth}_h{heads}_patch{patch}_{image}", _GENERIC_VIT


def transformers_vit_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ViTModel / ViTForImageClassification state dict under timm VisionTransformer keys.

    q, k and v are concatenated into timm's qkv; the pooler and the mask token are dropped. A key
    that has no counterpart keeps its name, so the key check that follows reports it as unexpected.
    """
    import torch

    mapped: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        key = key.removeprefix("vit.")
        if _HF_VIT_DROPPED.match(key):
            continue
        if m := _HF_VIT_QKV.fullmatch(key):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = tensor
            continue
        for pattern, replacement in _HF_VIT_RENAMES:
            new_key, hit = re.subn("^" + pattern, replacement, key, count=1)
            if hit:
                key = new_key
                break
        mapped[key] = tensor
    for (block, kind), parts in qkv.items():
        if parts.keys() == {"query", "key", "value"}:
            mapped[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:  # incomplete: leave the parts under their own names for the error message
            mapped.update({f"encoder.layer.{block}.attention.attention.{p}.{kind}": t for p, t in parts.items()})
    return mapped
