"""The training methods a run can use, and how each one prepares a backbone.

linear: head only. full: everything. adapter: Pear adapters, never pruned.
pear: adapters + prune-and-share + knowledge checkpoint. prune: pear with share=none
(the ablation). lora: HuggingFace peft's LoRA on the same backbone (the peer baseline).
"""

from __future__ import annotations

from torch import nn

from ..adapters import attach, is_transformer
from ..checkpoint import head_name
from ..config import PearConfig
from ..errors import PearError

METHODS = ("linear", "full", "adapter", "pear", "prune", "lora")
PEAR_METHODS = ("adapter", "pear", "prune")


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
    if method == "lora":
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
        raise PearError("method 'lora' needs the optional package peft: pip install 'pear-peft[lora]'") from None
    lcfg = LoraConfig(r=config.rank, lora_alpha=config.rank, target_modules=lora_targets(model),
                      lora_dropout=0.0, bias="none")
    model = inject_adapter_in_model(lcfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    for p in model.get_submodule(head).parameters():
        p.requires_grad_(True)
    return model


def freeze_norm_stats(model: nn.Module) -> None:
    """Keep frozen BatchNorm layers in eval mode: a frozen backbone must not drift
    through its running statistics while the adapters train."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
