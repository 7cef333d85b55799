"""The training methods a run can use, and how each one prepares a backbone (the methods
are registered in `method_names`, whose functions call the torch helpers here).

linear: head only. full: everything. adapter: Pear adapters, never pruned.
pear: adapters + prune-and-share + knowledge checkpoint. prune: pear with share=none
(the ablation). peft-lora: HuggingFace peft's LoRA on the same backbone (the peer
baseline; not Pear's own `PearConfig(adapter="lora")`), also accepted as 'lora', at
rank `PearConfig.rank`. peft-lora-eq: the same LoRA at the rank whose trainable
parameters come closest to the unpruned `adapter` method's on this backbone (an
equal-budget baseline).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from ...adapters import attach, pear_state
from ...config import PearConfig
from ...errors import PearError
from ...families import family_of, heads
from ...norms import freeze_norm_stats  # noqa: F401  (its home before pear.freeze_norm_stats)
from .method_names import (  # noqa: F401  (their home until option parsing had to do without torch)
    LORA_METHODS,
    METHOD_ALIASES,
    METHODS,
    PEAR_METHODS,
    PRUNING_METHODS,
    TRAINING_METHODS,
    canonical_method,
    pear_config_for,
)


def prepare(model: nn.Module, method: str, config: PearConfig, lora_alpha: float | None = None) -> nn.Module:
    """Freeze / wrap `model` for `method` (a registered training method, `method_names`) with
    the Pear config it trains with (`TrainingMethod.config` of `config`); returns the model to
    train. lora_alpha: peft LoRA's alpha (default: its rank, a scale of 1)."""
    method = canonical_method(method)
    if method not in METHODS:
        raise PearError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    entry = TRAINING_METHODS.get(method)
    return entry.prepare(model, entry.config(config), lora_alpha)


def train_head(model: nn.Module) -> None:
    """Every task head trains (head and head_dist on a distilled DeiT)."""
    for head in heads(model).values():
        head.requires_grad_(True)


def lora_targets(model: nn.Module) -> str:
    """peft target regex, as the model's family says (pear.families): qkv of every ViT
    block, or the 1x1 projection convs of a CNN."""
    return family_of(model).lora_targets


def lora_rank(model: nn.Module, config: PearConfig) -> int:
    """The LoRA rank whose trainable parameters come closest to those of the unpruned Pear
    adapters that `config` would attach to `model` (counted on a copy)."""
    trial = copy.deepcopy(model)
    attach(trial, pear_config_for("adapter", config))
    budget = pear_state(trial).unpruned_adapter_params
    pattern = lora_targets(model)
    per_rank = 0  # LoRA adds r * (fan-in + fan-out) per targeted layer
    for name, m in model.named_modules():
        if re.fullmatch(pattern, name):
            if isinstance(m, nn.Linear):
                per_rank += m.in_features + m.out_features
            elif isinstance(m, nn.Conv2d):
                per_rank += m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels
    if per_rank == 0:
        raise PearError(f"peft-lora-eq: no layer of {type(model).__name__} matches the LoRA targets {pattern!r}")
    return max(1, round(budget / per_rank))


def peft_lora(model: nn.Module, rank: int, alpha: float | None) -> nn.Module:
    """peft's LoRA of `rank` on the model's LoRA targets; only it and the head train."""

    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise PearError("method 'peft-lora' needs the optional package peft: pip install 'pear-peft[lora]'") from None
    # peft annotates lora_alpha as int, but only divides by it (scaling = lora_alpha / r): a float is as good.
    lcfg = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,  # type: ignore[arg-type]
        target_modules=lora_targets(model),
        lora_dropout=0.0,
        bias="none",
    )
    model = inject_adapter_in_model(lcfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    train_head(model)

    return model


def build_model(
    backbone: str | None,
    num_classes: int,
    method: str = "pear",
    config: PearConfig | None = None,
    *,
    weights: str | None = None,
    img_size: int | None = None,
    model_kwargs: dict | None = None,
    device: str | torch.device = "cpu",
    lora_alpha: float | None = None,
) -> tuple[nn.Module, dict, str]:
    """A timm backbone prepared for `method`: (model on `device`, its data config, the
    frozen backbone's fingerprint, taken before any adapter goes in)."""
    from ...checkpoint import fingerprint
    from .backbones import create_backbone  # timm: imported only when a model is built

    model, data_cfg = create_backbone(
        backbone, num_classes, weights, img_size=img_size, model_kwargs=model_kwargs or {}
    )
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if img_size is not None and patch is not None and img_size < max(patch):
        raise PearError(
            f"--img-size {img_size} is smaller than the patch size {max(patch)} of {backbone}: the image "
            f"would give no tokens; use at least {max(patch)} (the backbone is made for "
            f"{data_cfg.get('input_size', ['?'])[-1]})"
        )
    fp = fingerprint(model)
    model = prepare(model, method, config or PearConfig(), lora_alpha)
    return model.to(device), data_cfg, fp
