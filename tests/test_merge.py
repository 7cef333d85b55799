"""merge_and_unload folds linear (LoRA-kind) adapters into the backbone: same logits, no slots left."""

import pytest
import torch
from torch import nn

import pear
from pear import PearConfig
from pear.adapters import PearSlot


def _trained(model, cfg, knowledge="none"):
    """Attach, give the adapters non-zero weights and biases, prune half and share."""
    pear.attach(model, PearConfig(init="random", scale=0.7, prune_ratio=0.5, knowledge=knowledge, **cfg))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    scores = {n: float(i) for i, n in enumerate(pear.positions(model))}
    pear.prune_and_share(model, pear.make_plan(scores, model.pear_state.config, model))
    return model.eval()


@pytest.mark.parametrize("knowledge", ["none", "frozen"])
def test_merged_model_gives_the_same_logits_with_no_adapters_left(model_factory, vit_batch, knowledge):
    x, _ = vit_batch
    model = _trained(model_factory("vit"), dict(adapter="lora"), knowledge)
    shared = {n: s.info.source for n, s in pear.slots(model).items() if s.adapter is not None and s.info.source != n}
    assert shared and (knowledge == "none") != any(s.frozen is not None for s in pear.slots(model).values())
    # (the fold must add a shared adapter at each position that runs it)
    with torch.no_grad():
        before = model(x)
        merged = pear.merge_and_unload(model)
        after = merged(x)
    assert merged is model
    assert not any(isinstance(m, PearSlot) for m in merged.modules())
    assert isinstance(merged.blocks[0].attn.qkv, nn.Linear) and not hasattr(merged, "pear_state")
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", [dict(adapter="parallel"), dict(adapter="sequential", act="identity")])
def test_nonlinear_or_sublayer_adapters_are_refused_and_left_intact(model_factory, vit_batch, cfg):
    model = model_factory("vit")
    pear.attach(model, PearConfig(**cfg))
    n = len(pear.slots(model))
    with pytest.raises(pear.PearError, match="folds only linear adapters.*blocks.0.attn"):
        pear.merge_and_unload(model)
    assert len(pear.slots(model)) == n and hasattr(model, "pear_state")


def test_cnn_adapters_are_refused(tiny_cnn):
    pear.attach(tiny_cnn)
    with pytest.raises(pear.PearError, match="folds only linear adapters"):
        pear.merge_and_unload(tiny_cnn)
