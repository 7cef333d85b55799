"""Knowledge checkpoints: what becomes of a pruned adapter's weights, one class each.

A knowledge checkpoint is a `Knowledge` subclass registered with
`@KNOWLEDGE.register("name", help=...)`; `PearConfig(knowledge="name")`, `pear train
--knowledge name` and the suite's `pear-kc-name` then take it. At the prune step,
`pear.prune_and_share` calls `absorb` once per kept adapter that pruned positions will
share (its donors: the pruned adapters), and keeps each pruned adapter as a frozen residual
when `keeps_pruned` is set. `needs_inputs` asks for the adapter inputs at the sharing
positions (`pear.capture_inputs`, which the harness and `pear.Pruner` then capture);
`check` refuses configs the mode cannot serve, when the config is made.

`PearConfig`'s validation imports this module without torch, so torch is imported inside
the methods that compute.
"""

from __future__ import annotations

from typing import Any

from .adapter_kinds import kind_of
from .errors import PearError
from .registry import Registry

KNOWLEDGE: Registry[type[Knowledge]] = Registry("knowledge checkpoint", "PearConfig.knowledge")


class Knowledge:
    """The default keeps nothing of the pruned adapters. Entries are the classes; callers make
    an instance to call `check` or `absorb`."""

    needs_inputs = False
    keeps_pruned = False

    def check(self, config: Any) -> None:
        """Raise PearError when `config` (a PearConfig) cannot use this mode."""

    def absorb(
        self, target: Any, donors: list[Any], weights: list[float], inputs: list[Any] | None, config: Any
    ) -> None:
        """Fold `donors` (pruned adapters) into `target`, the kept adapter they will share.
        weights: normalised importance of [target, *donors]; inputs: what each of them is fed
        at its own position (only with needs_inputs)."""


@KNOWLEDGE.register("none", help="discard pruned weights")
class _Discard(Knowledge):
    pass


@KNOWLEDGE.register("merge", help="importance-weighted average of parameters into the shared adapter, storage-free")
class Merge(Knowledge):
    def absorb(self, target, donors, weights, inputs, config) -> None:
        """theta_k <- (I_k theta_k + sum_p I_p theta_p) / (I_k + sum_p I_p)."""
        modules = [target, *donors]
        for name, t in target.named_parameters():
            params = [dict(m.named_parameters())[name] for m in modules]
            t.copy_(sum(wi * p for wi, p in zip(weights, params)))


@KNOWLEDGE.register("frozen", help="keep pruned adapter as a frozen residual; costs storage")
class Frozen(Knowledge):
    keeps_pruned = True


@KNOWLEDGE.register(
    "distill",
    help="ours: the shared adapter is fitted, for distill_steps steps at the prune "
    "step, to reproduce both its own output and each pruned adapter's output at "
    "their positions; storage-free",
)
class Distill(Knowledge):
    needs_inputs = True

    def absorb(self, target, donors, weights, inputs, config) -> None:
        _distill_into(target, list(zip(inputs, weights)), donors, config.distill_steps)


@KNOWLEDGE.register(
    "svd",
    help="ours, for adapters without a nonlinearity: importance-weighted sum of "
    "up @ down, truncated back to rank r by SVD",
)
class Svd(Knowledge):
    def check(self, config) -> None:
        if not kind_of(config).linear(config):
            raise PearError(
                f"PearConfig.knowledge='svd' merges adapters in product space (up @ down), which only keeps what "
                f"they compute without a nonlinearity: use adapter='lora' or act='identity', not act={config.act!r}"
            )

    def absorb(self, target, donors, weights, inputs, config) -> None:
        _svd_merge_into(target, donors, weights)


def _svd_merge_into(target, donors: list, weights: list[float]) -> None:
    """Product-space merge of linear bottlenecks: W = sum_i w_i up_i @ down_i (and the bias each
    computes, up_i @ b_down_i + b_up_i), then W truncated back to the adapter's rank by SVD,
    split evenly (sqrt of the singular values) between up and down. Exact when the sum of
    products has rank <= r; otherwise the best rank-r approximation (Eckart-Young)."""
    import torch

    modules = [target, *donors]
    product = sum(w * (_2d(m.up.weight) @ _2d(m.down.weight)).double() for w, m in zip(weights, modules))
    bias = None
    if target.up.bias is not None:
        bias = sum(w * (_2d(m.up.weight) @ m.down.bias + m.up.bias).double() for w, m in zip(weights, modules))
    rank = target.down.weight.shape[0]
    u, sv, vh = torch.linalg.svd(product, full_matrices=False)
    root = sv[:rank].sqrt()
    target.up.weight.copy_((u[:, :rank] * root).reshape(target.up.weight.shape))
    target.down.weight.copy_((root[:, None] * vh[:rank]).reshape(target.down.weight.shape))
    if bias is not None:
        target.down.bias.zero_()
        target.up.bias.copy_(bias)


def _2d(weight):
    """A linear layer's or 1x1 convolution's weight as an (out, in) matrix."""
    return weight.reshape(weight.shape[0], weight.shape[1])


def _distill_into(target, inputs: list[tuple[Any, float]], donors: list, steps: int) -> None:
    """Fit `target` to reproduce, at its own position, what it computes now and, at each pruned
    position it will serve, what the pruned adapter there computes: the importance-weighted sum
    of squared errors, relative to the targets' power. Full batch, L-BFGS (no learning rate to
    tune: adapters' weights differ in scale by orders of magnitude)."""
    import torch
    import torch.nn.functional as F

    with torch.enable_grad():
        examples = [(x, w, m(x).detach().float()) for (x, w), m in zip(inputs, [target, *donors])]
        power = sum(w * y.pow(2).mean() for _, w, y in examples).clamp_min(1e-20)
        params = list(target.parameters())
        was = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.LBFGS(
            params,
            max_iter=steps,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = sum(w * F.mse_loss(target(x).float(), y) for x, w, y in examples) / power
            loss.backward()
            return loss

        opt.step(closure)
        for p, r in zip(params, was):
            p.grad = None
            p.requires_grad_(r)
