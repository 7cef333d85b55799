"""pear.Pruner does the four manual calls at the right step: the same plan and weights as doing them by hand."""

import pytest
import torch
from torch import nn

import pear
from pear import PearConfig

CFG = dict(init="random", prune_ratio=0.5, share="matched", knowledge="merge")


def _setup(model_factory, knowledge="merge"):
    model = model_factory("vit")
    pear.attach(model, PearConfig(**{**CFG, "knowledge": knowledge}))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, opt


def _step(model, opt, batch, between=lambda: None):
    x, y = batch
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    between()
    opt.step()


def test_pruner_equals_the_four_manual_calls(model_factory, vit_batch):
    by_hand, opt_a = _setup(model_factory)
    tracker = pear.ImportanceTracker(by_hand)
    plans_a = []

    def prune_by_hand():  # at the 3rd step, after its backward and before its optimizer step
        tracker.update()
        plans_a.append(pear.make_plan(tracker.scores(), by_hand.pear_state.config, by_hand))
        pear.prune_and_share(by_hand, plans_a[0])
        pear.prune_optimizer(opt_a, by_hand)

    _step(by_hand, opt_a, vit_batch, tracker.update)
    _step(by_hand, opt_a, vit_batch, tracker.update)
    _step(by_hand, opt_a, vit_batch, prune_by_hand)
    _step(by_hand, opt_a, vit_batch)
    plan_a = plans_a[0]

    model, opt = _setup(model_factory)
    pruner = pear.Pruner(model, opt, prune_step=3)
    plans = []
    for _ in range(4):
        _step(model, opt, vit_batch, lambda: plans.append(pruner.step()))
    assert plans[:2] == [None, None] and plans[3] is None and pruner.pruned
    assert plans[2].to_dict() == plan_a.to_dict() == pruner.plan.to_dict()
    assert plan_a.pruned and plan_a.shares
    live = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == live
    for (na, a), (nb, b) in zip(by_hand.state_dict().items(), model.state_dict().items()):
        assert na == nb
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_distill_needs_batches_and_uses_them(model_factory, vit_batch):
    model, opt = _setup(model_factory, knowledge="distill")
    with pytest.raises(pear.PearError, match="distill_batches"):
        pear.Pruner(model, opt, prune_step=1)
    pruner = pear.Pruner(model, opt, prune_step=1, distill_batches=[vit_batch[0]])
    _step(model, opt, vit_batch, pruner.step)
    assert pruner.pruned and model.pear_state.pruned


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_prune_step_must_be_a_positive_integer(model_factory, bad):
    model, opt = _setup(model_factory)
    with pytest.raises(pear.PearError, match="prune_step"):
        pear.Pruner(model, opt, prune_step=bad)


def test_an_unattached_model_is_refused(tiny_vit):
    with pytest.raises(pear.PearError, match="pear.attach"):
        pear.Pruner(tiny_vit, torch.optim.SGD(tiny_vit.parameters(), lr=0.1), prune_step=1)
