"""Per-adapter importance, accumulated over the scoring window.

The paper's criterion is first-order Taylor: `I_i = sum_j |theta_ij * dL/dtheta_ij|`,
the estimated loss change if adapter i were removed. It reuses the gradients the
training step already computed, so `update()` is a handful of fused kernels after
`backward()` and before `optimizer.step()`; there is no extra forward or backward
pass and no host sync (sums stay on the device until `scores()`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .adapters import adapter_modules, pear_state
from .errors import PearError
from .scorers import SCORERS


class ImportanceTracker:
    """Accumulates one score per adapter position; `scores()` returns the mean.

    methods: the registered importance scorers (`pear.scorers.SCORERS`): taylor (default),
    magnitude `sum |theta|`, gradient (L2 norm of the gradient), output (mean
    `||s * adapter(x)||` over training forwards), random (seeded uniform: a control).
    """

    def __init__(self, model: nn.Module, method: str | None = None, seed: int | None = None) -> None:
        state = pear_state(model)
        self.method = method or state.config.importance
        try:
            scorer_cls = SCORERS.get(self.method)
        except PearError:
            raise ValueError(f"importance method must be one of {', '.join(SCORERS)}; got {self.method!r}") from None
        self.seed = state.config.seed if seed is None else seed
        adapters = adapter_modules(model)
        if state.pruned or len(adapters) != len(state.positions):
            raise ValueError("ImportanceTracker needs every position to own its adapter: create it before pruning")
        self.names = list(adapters)
        self.params: list[torch.Tensor] = []  # every adapter parameter, in order ...
        owner: list[int] = []  # ... and the index of the position that owns it
        for i, a in enumerate(adapters.values()):
            for p in a.parameters():
                self.params.append(p)
                owner.append(i)
        device = self.params[0].device
        self.owner = torch.tensor(owner, device=device)
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.steps = 0
        self.scorer = scorer_cls(self)
        self._hooks = self.scorer.hooks(list(adapters.values()))

    @torch.no_grad()
    def update(self) -> None:
        """Call once per optimisation step, after backward() and before optimizer.step()."""
        self.steps += 1
        self.scorer.update()

    def scores(self) -> dict[str, float]:
        """Mean score per position over the update() calls so far (all-reduced across
        ranks when torch.distributed is initialised, so every rank plans alike), unless the
        scorer gives its own (random)."""
        own = self.scorer.scores()
        if own is not None:
            return dict(zip(self.names, own))
        if self.steps == 0:
            raise ValueError("ImportanceTracker.scores(): update() was never called, there is nothing to score")
        mean = self.sums / self.steps
        if dist.is_available() and dist.is_initialized():
            mean = mean.clone()
            dist.all_reduce(mean, op=dist.ReduceOp.SUM)
            mean /= dist.get_world_size()
        return dict(zip(self.names, mean.tolist()))

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def state_dict(self) -> dict:
        return {"method": self.method, "steps": self.steps, "sums": self.sums.cpu().tolist(), "names": self.names}

    def load_state_dict(self, state: dict) -> None:
        if state.get("names") != self.names or state.get("method") != self.method:
            raise ValueError("importance tracker state does not match this model's positions or method")
        self.steps = int(state["steps"])
        self.sums.copy_(torch.tensor(state["sums"], dtype=torch.float64))
