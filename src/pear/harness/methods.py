"""The training methods a run can use, and how each one prepares a backbone.

linear: head only. full: everything. adapter: Pear adapters, never pruned.
pear: adapters + prune-and-share + knowledge checkpoint. prune: pear with share=none
(the ablation). peft-lora: HuggingFace peft's LoRA on the same backbone (the peer
baseline; not Pear's own `PearConfig(adapter="lora")`), also accepted as 'lora'.
"""

from __future__ import annotations

import torch
from torch import nn

from ..adapters import attach, is_transformer
from ..checkpoint import head_name
from ..config import PearConfig
from ..errors import PearError
from ..norms import freeze_norm_stats  # noqa: F401  (its home before pear.freeze_norm_stats)

METHODS = ("linear", "full", "adapter", "pear", "prune", "peft-lora")
METHOD_ALIASES = {"lora": "peft-lora"}  # earlier names, still accepted
PEAR_METHODS = ("adapter", "pear", "prune")
PRUNING_METHODS = ("pear", "prune")


def canonical_method(method: str) -> str:
    """A method's name, an earlier alias ('lora') resolved."""
    return METHOD_ALIASES.get(method, method)


def pear_config_for(method: str, config: PearConfig) -> PearConfig:
    """The Pear config a method trains with: 'adapter' never prunes, 'prune' never shares."""
    d = config.to_dict()
    if method == "adapter":
        d["prune_ratio"] = 0.0
    elif method == "prune":
        d["share"] = "none"
    return PearConfig.from_dict(d)


def prepare(model: nn.Module, method: str, config: PearConfig) -> nn.Module:
    """Freeze / wrap `model` for `method`; returns the model to train."""
    method = canonical_method(method)
    if method not in METHODS:
        raise PearError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    head = head_name(model)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "linear":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_submodule(head).parameters():
            p.requires_grad_(True)
        return model
    if method == "peft-lora":
        return _lora(model, config, head)
    return attach(model, pear_config_for(method, config))


def lora_targets(model: nn.Module) -> str:
    """peft target regex: qkv of every ViT block, or the 1x1 projection convs of a CNN."""
    if is_transformer(model):
        return r".*blocks\.\d+\.attn\.qkv"
    return r".*blocks\.\d+\.\d+\.(conv_pwl|conv_pw)"


def _lora(model: nn.Module, config: PearConfig, head: str) -> nn.Module:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise PearError("method 'peft-lora' needs the optional package peft: pip install 'pear-peft[lora]'") from None
    lcfg = LoraConfig(r=config.rank, lora_alpha=config.rank, target_modules=lora_targets(model),
                      lora_dropout=0.0, bias="none")
    model = inject_adapter_in_model(lcfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    for p in model.get_submodule(head).parameters():
        p.requires_grad_(True)
    return model



def build_model(backbone: str, num_classes: int, method: str = "pear", config: PearConfig | None = None, *,
                weights: str | None = None, img_size: int | None = None, model_kwargs: dict | None = None,
                device: str | torch.device = "cpu") -> tuple[nn.Module, dict, str]:
    """A timm backbone prepared for `method`: (model on `device`, its data config, the
    frozen backbone's fingerprint, taken before any adapter goes in)."""
    from ..checkpoint import fingerprint
    from .backbones import create_backbone  # timm: imported only when a model is built

    model, data_cfg = create_backbone(backbone, num_classes, weights, img_size=img_size,
                                      model_kwargs=model_kwargs or {})
    fp = fingerprint(model)
    model = prepare(model, method, config or PearConfig())
    return model.to(device), data_cfg, fp
