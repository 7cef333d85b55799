"""Frozen normalisation statistics: a frozen backbone must stay the backbone it was."""

from __future__ import annotations

from torch import nn


def freeze_norm_stats(model: nn.Module) -> None:
    """Keep frozen BatchNorm layers in eval mode: a frozen backbone must not drift
    through its running statistics while the adapters train. Call it after each
    `model.train()`; a task checkpoint saved after the statistics drifted is refused
    on the original backbone."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
