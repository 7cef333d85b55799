"""The VTAB-1k recipe's schedule: AdamW (no weight decay on biases and norm scales), the learning
rate warmed up linearly, then decayed along a cosine to zero, set per optimisation step."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, per optimisation step."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm scales (1-d tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    # On CUDA the fused kernel does the whole update in one launch (same maths, same state).
    params = decay + no_decay
    fused = (bool(params) and all(p.is_cuda and p.dtype == torch.float32 for p in params)) or None
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused)
