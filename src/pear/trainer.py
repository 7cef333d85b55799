"""`Pruner`: Pear in your own training loop, from the training step.

Pear's four calls (an `ImportanceTracker` updated after each backward, `make_plan`,
`prune_and_share`, `prune_optimizer`) must happen at the right steps. A `Pruner` makes
them from one call per step:

    pear.attach(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    pruner = pear.Pruner(model, opt, prune_step=100)
    for x, y in batches:
        loss = loss_fn(model(x), y)
        opt.zero_grad(); loss.backward()
        pruner.step()                # scores steps 1..100; prunes and shares at step 100
        opt.step()
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .adapters import pear_state
from .errors import PearError
from .importance import ImportanceTracker
from .knowledge import KNOWLEDGE
from .pruning import PrunePlan, capture_inputs, make_plan, prune_and_share, prune_optimizer


class Pruner:
    """Scores the adapters over the first `prune_step` steps, then prunes and shares them
    and drops the pruned parameters from `optimizer`.

    Call `step()` once per optimisation step, after `loss.backward()` and before
    `optimizer.step()` (the scores need that step's gradients). The `prune_step`-th call
    prunes right after scoring, so that step's `optimizer.step()` already updates only the
    surviving adapters (shared ones keep their optimizer state, as with `prune_optimizer`). With the 'distill'
    knowledge checkpoint, `distill_batches` are input batches whose adapter inputs the
    shared adapters are fitted to (a few, e.g. the first training batches)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        prune_step: int,
        distill_batches: Iterable[torch.Tensor] | None = None,
    ) -> None:
        if isinstance(prune_step, bool) or not isinstance(prune_step, int) or prune_step < 1:
            raise PearError(f"Pruner prune_step must be a positive integer (the step that prunes), got {prune_step!r}")
        state = pear_state(model)
        if state.pruned:
            raise PearError("Pruner: this model was already pruned")
        if KNOWLEDGE.get(state.config.knowledge).needs_inputs and distill_batches is None:
            raise PearError(f"Pruner: knowledge={state.config.knowledge!r} needs distill_batches (a few input batches)")
        self.model, self.optimizer, self.prune_step = model, optimizer, prune_step
        self.distill_batches = distill_batches
        self.tracker: ImportanceTracker | None = ImportanceTracker(model)
        self.steps = 0
        self.plan: PrunePlan | None = None

    @property
    def pruned(self) -> bool:
        return self.plan is not None

    def step(self) -> PrunePlan | None:
        """Score this step; at `prune_step`, prune and share. Returns the plan on the step that pruned."""
        self.steps += 1
        if self.tracker is None:
            return None
        self.tracker.update()
        return self.prune() if self.steps >= self.prune_step else None

    def prune(self) -> PrunePlan:
        """Prune and share now, from the scores so far (`step()` calls this at `prune_step`)."""
        if self.tracker is None:
            raise PearError("Pruner.prune: already pruned")
        scores = self.tracker.scores()
        self.tracker.close()
        self.tracker = None
        config = pear_state(self.model).config
        plan = make_plan(scores, config, self.model)
        needs_inputs = KNOWLEDGE.get(config.knowledge).needs_inputs
        inputs = capture_inputs(self.model, self.distill_batches) if needs_inputs else None
        prune_and_share(self.model, plan, inputs=inputs)
        # A wrapped optimizer (accelerate's, in transformers' Trainer) holds the torch one as .optimizer.
        inner = (
            self.optimizer
            if isinstance(self.optimizer, torch.optim.Optimizer)
            else getattr(self.optimizer, "optimizer", self.optimizer)
        )
        prune_optimizer(inner, self.model)
        self.plan = plan
        return plan
