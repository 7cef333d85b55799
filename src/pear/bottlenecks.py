"""The adapter modules themselves: a bottleneck `scale * up(act(down(x)))` on tokens
(linear layers) or on feature maps (1x1 convolutions)."""

from __future__ import annotations

import math

import torch
from torch import nn

_ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}


class Bottleneck(nn.Module):
    """`scale * up(act(down(x)))` on the last dimension (tokens)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        scale: float,
        act: str = "relu",
        zero_init: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(in_dim, rank, bias=bias)
        self.act = _ACTS[act]()
        self.up = nn.Linear(rank, out_dim, bias=bias)
        self.scale = scale
        _init_pair(self.down, self.up, zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x))) * self.scale


class ConvBottleneck(nn.Module):
    """The same bottleneck for feature maps: 1x1 convolutions; `down` carries the
    block's stride so the adapter's output matches the block's output shape."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        rank: int,
        scale: float,
        stride: int = 1,
        act: str = "relu",
        zero_init: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_ch, rank, kernel_size=1, stride=stride, bias=bias)
        self.act = _ACTS[act]()
        self.up = nn.Conv2d(rank, out_ch, kernel_size=1, bias=bias)
        self.scale = scale
        _init_pair(self.down, self.up, zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x))) * self.scale


def _init_pair(down: nn.Linear | nn.Conv2d, up: nn.Linear | nn.Conv2d, zero_init: bool) -> None:
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    if down.bias is not None:
        nn.init.zeros_(down.bias)
    if zero_init:
        nn.init.zeros_(up.weight)
    else:
        nn.init.kaiming_uniform_(up.weight, a=math.sqrt(5))
    if up.bias is not None:
        nn.init.zeros_(up.bias)
