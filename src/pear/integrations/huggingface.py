"""A HuggingFace `transformers.Trainer` callback that prunes and shares Pear adapters.

    from pear.integrations.huggingface import PearCallback
    pear.attach(model, cfg)
    trainer = Trainer(model=wrapper, args=args, train_dataset=ds, callbacks=[PearCallback(model, prune_step=100)])

`model` is the Pear-attached model (it may sit inside the module the Trainer trains, e.g.
one that computes the loss). The callback runs a `pear.Pruner` on the Trainer's own
optimizer, after gradient clipping and before each optimizer step. Needs
`pip install "pear-peft[transformers]"`.
"""

from __future__ import annotations

from torch import nn

from ..errors import PearError
from ..trainer import Pruner

try:
    from transformers import TrainerCallback
except ImportError as err:  # the extra is optional: say which one
    raise PearError("pear.integrations.huggingface needs transformers: pip install 'pear-peft[transformers]'") from err


class PearCallback(TrainerCallback):
    """Score the adapters over the first `prune_step` optimizer steps, then prune and share them."""

    def __init__(self, model: nn.Module, *, prune_step: int, distill_batches=None) -> None:
        self.model, self.prune_step, self.distill_batches = model, prune_step, distill_batches
        self.pruner: Pruner | None = None

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self.pruner is None:  # the Trainer makes its optimizer when training starts
            if optimizer is None:
                raise PearError("PearCallback: the Trainer passed no optimizer")
            self.pruner = Pruner(
                self.model, optimizer, prune_step=self.prune_step, distill_batches=self.distill_batches
            )
        self.pruner.step()
        return control
