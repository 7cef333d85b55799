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
from .config import IMPORTANCE_METHODS


class ImportanceTracker:
    """Accumulates one score per adapter position; `scores()` returns the mean.

    methods: taylor (default), magnitude `sum |theta|`, gradient (L2 norm of the
    gradient), output (mean `||s * adapter(x)||` over training forwards), random
    (seeded uniform: a control).
    """

    def __init__(self, model: nn.Module, method: str | None = None, seed: int | None = None) -> None:
        state = pear_state(model)
        self.method = method or state.config.importance
        if self.method not in IMPORTANCE_METHODS:
            raise ValueError(f"importance method must be one of {', '.join(IMPORTANCE_METHODS)}; got {self.method!r}")
        self.seed = state.config.seed if seed is None else seed
        adapters = adapter_modules(model)
        if state.pruned or len(adapters) != len(state.positions):
            raise ValueError("ImportanceTracker needs every position to own its adapter: create it before pruning")
        self.names = list(adapters)
        self._params: list[torch.Tensor] = []
        owner: list[int] = []
        for i, a in enumerate(adapters.values()):
            for p in a.parameters():
                self._params.append(p)
                owner.append(i)
        device = self._params[0].device
        self._owner = torch.tensor(owner, device=device)
        self._sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.steps = 0
        self._hooks = []
        if self.method == "output":
            self._hooks = [a.register_forward_hook(self._output_hook(i)) for i, a in enumerate(adapters.values())]

    def _output_hook(self, i: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                dim = 1 if output.dim() == 4 else -1  # channels of a feature map, features of a token
                self._sums[i] += output.detach().float().norm(dim=dim).mean().double()
        return hook

    @torch.no_grad()
    def update(self) -> None:
        """Call once per optimisation step, after backward() and before optimizer.step()."""
        self.steps += 1
        if self.method in ("output", "random"):
            return  # output norms are gathered by forward hooks; random needs nothing
        if self.method == "magnitude":
            tensors, owner = self._params, self._owner
        else:
            idx = [i for i, p in enumerate(self._params) if p.grad is not None]
            if not idx:
                return
            params = [self._params[i] for i in idx]
            grads = [p.grad for p in params]
            tensors = torch._foreach_mul(params, grads) if self.method == "taylor" else grads
            owner = self._owner if len(idx) == len(self._params) else self._owner[idx]
        if self.method == "gradient":
            sq = torch.stack(torch._foreach_norm(tensors, 2)).double() ** 2
            self._sums += torch.zeros_like(self._sums).index_add_(0, owner, sq).sqrt()
        else:
            l1 = torch.stack(torch._foreach_norm(tensors, 1)).double()
            self._sums.index_add_(0, owner, l1)

    def scores(self) -> dict[str, float]:
        """Mean score per position over the update() calls so far (all-reduced across
        ranks when torch.distributed is initialised, so every rank plans alike)."""
        if self.method == "random":
            g = torch.Generator().manual_seed(self.seed)
            values = torch.rand(len(self.names), generator=g, dtype=torch.float64).tolist()
            return dict(zip(self.names, values))
        if self.steps == 0:
            raise ValueError("ImportanceTracker.scores(): update() was never called, there is nothing to score")
        mean = self._sums / self.steps
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
        return {"method": self.method, "steps": self.steps, "sums": self._sums.cpu().tolist(), "names": self.names}

    def load_state_dict(self, state: dict) -> None:
        if state.get("names") != self.names or state.get("method") != self.method:
            raise ValueError("importance tracker state does not match this model's positions or method")
        self.steps = int(state["steps"])
        self._sums.copy_(torch.tensor(state["sums"], dtype=torch.float64))

