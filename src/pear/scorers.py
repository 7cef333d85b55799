"""Importance scorers: what `ImportanceTracker` adds up per adapter, one class each.

A scorer is a `Scorer` subclass registered with `@SCORERS.register("name", help=...)`;
`PearConfig(importance="name")`, `pear train --importance name` and the suite's
`pear-imp-name` then take it. The tracker (`pear.importance`) holds per adapter position a
float64 sum on the device (`tracker.sums`), the adapters' parameters in order
(`tracker.params`) and which position owns each (`tracker.owner`); a scorer adds to the sums
in `update()` (once per step, after backward) or from forward hooks, and `scores()` reports
their mean over the steps unless the scorer's `scores()` says otherwise.

This module is imported by `PearConfig`'s validation and `pear --help`, which run without
torch, so torch is imported inside the methods that compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import Registry

if TYPE_CHECKING:
    from .importance import ImportanceTracker

SCORERS: Registry[type[Scorer]] = Registry("importance scorer", "PearConfig.importance")


class Scorer:
    """One importance criterion for one tracker; the default adds nothing (override `update`)."""

    def __init__(self, tracker: ImportanceTracker) -> None:
        self.tracker = tracker

    def hooks(self, adapters: list[Any]) -> list[Any]:
        """Forward hooks to register on the adapters (removed by `tracker.close()`)."""
        return []

    def update(self) -> None:
        """Called once per optimisation step, after backward() and before optimizer.step()."""

    def scores(self) -> list[float] | None:
        """The final score per position, or None for the mean of the tracker's sums."""
        return None


def _with_grads(t: ImportanceTracker):
    """(params, their grads, owner index) of the parameters that have a gradient; None if none has."""
    idx = [i for i, p in enumerate(t.params) if p.grad is not None]
    if not idx:
        return None
    params = [t.params[i] for i in idx]
    owner = t.owner if len(idx) == len(t.params) else t.owner[idx]
    return params, [p.grad for p in params], owner


def _add_l1(t: ImportanceTracker, tensors, owner) -> None:
    import torch

    t.sums.index_add_(0, owner, torch.stack(torch._foreach_norm(tensors, 1)).double())


class _FromGrads(Scorer):
    """A scorer of this step's gradients: `add` gets the parameters that have one."""

    def update(self) -> None:
        found = _with_grads(self.tracker)
        if found is not None:
            self.add(*found)

    def add(self, params: list, grads: list, owner) -> None:
        raise NotImplementedError


@SCORERS.register("taylor", help="sum |theta * grad|")
class Taylor(_FromGrads):
    """First-order Taylor, the paper's: the estimated loss change if the adapter were removed."""

    def add(self, params: list, grads: list, owner) -> None:
        import torch

        _add_l1(self.tracker, torch._foreach_mul(params, grads), owner)


@SCORERS.register("magnitude", help="sum |theta|")
class Magnitude(Scorer):
    def update(self) -> None:
        _add_l1(self.tracker, self.tracker.params, self.tracker.owner)


@SCORERS.register("gradient", help="gradient L2 norm")
class Gradient(_FromGrads):
    def add(self, params: list, grads: list, owner) -> None:
        import torch

        sums = self.tracker.sums
        sq = torch.stack(torch._foreach_norm(grads, 2)).double() ** 2
        sums += torch.zeros_like(sums).index_add_(0, owner, sq).sqrt()


@SCORERS.register("output", help="mean ||s * adapter(x)||")
class Output(Scorer):
    """The norm of what each adapter adds, gathered by forward hooks over training forwards."""

    def hooks(self, adapters: list[Any]) -> list[Any]:
        return [a.register_forward_hook(self._hook(i)) for i, a in enumerate(adapters)]

    def _hook(self, i: int):
        import torch

        def hook(module, inputs, output) -> None:
            if module.training and torch.is_grad_enabled():
                dim = 1 if output.dim() == 4 else -1  # channels of a feature map, features of a token
                self.tracker.sums[i] += output.detach().float().norm(dim=dim).mean().double()

        return hook


@SCORERS.register("random", help="seeded control")
class Random(Scorer):
    """Seeded uniform scores (`PearConfig.seed`): a control that needs no training step."""

    def scores(self) -> list[float]:
        import torch

        g = torch.Generator().manual_seed(self.tracker.seed)
        return torch.rand(len(self.tracker.names), generator=g, dtype=torch.float64).tolist()
