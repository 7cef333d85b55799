import pytest
import torch
from torch import nn

import pear
from pear import ImportanceTracker, PearConfig
from pear.adapters import adapter_modules


def _attached(model_factory, kind, **cfg):
    # Random init: with the default zero-initialised up projection every Taylor term of
    # the first step is 0 (theta_up = 0 and dL/dtheta_down = 0), which would make a
    # hand check vacuous.
    model = model_factory(kind)
    pear.attach(model, PearConfig(init="random", **cfg))
    return model


def _hand(model, method):
    """Per-adapter score of the current parameters and .grad, computed in float64."""
    out = {}
    for name, a in adapter_modules(model).items():
        ps = list(a.parameters())
        if method == "taylor":
            out[name] = sum((p.double() * p.grad.double()).abs().sum().item() for p in ps)
        elif method == "magnitude":
            out[name] = sum(p.double().abs().sum().item() for p in ps)
        elif method == "gradient":
            out[name] = sum((p.grad.double() ** 2).sum().item() for p in ps) ** 0.5
        else:
            raise KeyError(method)
    return out


def _step(model, batch, optimizer, tracker, method):
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    hand = _hand(model, method)
    tracker.update()
    optimizer.step()
    return hand


def _close(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rtol, abs=1e-12), k


@pytest.mark.parametrize("kind", ["vit", "cnn"])
@pytest.mark.parametrize("method", ["taylor", "magnitude", "gradient"])
def test_score_is_the_mean_of_the_hand_computed_per_step_scores(model_factory, batch_factory, kind, method):
    model = _attached(model_factory, kind, importance=method)
    batch = batch_factory(kind)
    tracker = ImportanceTracker(model)
    assert tracker.method == method
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    h1 = _step(model, batch, opt, tracker, method)
    assert all(v > 0 for v in h1.values())
    _close(tracker.scores(), h1)
    h2 = _step(model, batch, opt, tracker, method)
    assert h2 != h1  # the parameters moved, so the second step scores differently
    _close(tracker.scores(), {k: (h1[k] + h2[k]) / 2 for k in h1})
    assert tracker.steps == 2


@pytest.mark.parametrize("method", ["taylor", "gradient"])
def test_positions_without_gradient_score_zero_for_that_step(tiny_vit, vit_batch, method):
    model = tiny_vit
    pear.attach(model, PearConfig(init="random"))
    tracker = ImportanceTracker(model, method=method)
    x, y = vit_batch
    nn.functional.cross_entropy(model(x), y).backward()
    hand = _hand(model, method)
    silent = "blocks.1.attn"  # e.g. a position whose adapter got no gradient this step
    for p in adapter_modules(model)[silent].parameters():
        p.grad = None
    hand[silent] = 0.0
    tracker.update()
    _close(tracker.scores(), hand)


def test_zero_init_gives_zero_taylor_scores_on_the_first_step(tiny_vit, vit_batch):
    """Documents a property of the method with the default init: the first step of the
    window carries no Taylor signal (it only dilutes the mean uniformly)."""
    model = tiny_vit
    pear.attach(model)
    tracker = ImportanceTracker(model)
    x, y = vit_batch
    nn.functional.cross_entropy(model(x), y).backward()
    tracker.update()
    assert set(tracker.scores().values()) == {0.0}


def _output_hand(model, batch, steps, optimizer, tracker):
    """Mean over training forwards of mean_token ||s * adapter(x)|| (features of a token,
    channels of a feature-map pixel), recomputed from each adapter's captured input."""
    ads = adapter_modules(model)
    inputs = {}
    hooks = [a.register_forward_pre_hook(lambda m, i, n=n: inputs.__setitem__(n, i[0].detach()))
             for n, a in ads.items()]
    sums = dict.fromkeys(ads, 0.0)
    x, y = batch
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for n, a in ads.items():
                h = inputs[n].double()
                down = a.down.weight.double()
                up = a.up.weight.double()
                if h.dim() == 4:  # 1x1 convolutions (with the block's stride) on NCHW
                    s = a.down.stride[0]
                    h = h[:, :, ::s, ::s]
                    z = torch.relu(torch.einsum("rc,nchw->nrhw", down[:, :, 0, 0], h) + a.down.bias.double()[:, None, None])
                    o = (torch.einsum("cr,nrhw->nchw", up[:, :, 0, 0], z) + a.up.bias.double()[:, None, None]) * a.scale
                    sums[n] += o.norm(dim=1).mean().item()
                else:
                    z = torch.relu(h @ down.T + a.down.bias.double())
                    o = (z @ up.T + a.up.bias.double()) * a.scale
                    sums[n] += o.norm(dim=-1).mean().item()
        tracker.update()
        optimizer.step()
    for h in hooks:
        h.remove()
    return {n: v / steps for n, v in sums.items()}


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_output_score_is_the_mean_adapter_output_norm(model_factory, batch_factory, kind):
    model = _attached(model_factory, kind, importance="output").train()
    batch = batch_factory(kind)
    tracker = ImportanceTracker(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    hand = _output_hand(model, batch, 2, opt, tracker)
    assert all(v > 0 for v in hand.values())
    _close(tracker.scores(), hand, rtol=1e-4)

    # Evaluation forwards (eval mode, or no grad) are not part of the score.
    before = tracker.scores()
    model.eval()
    model(batch[0])
    model.train()
    with torch.no_grad():
        model(batch[0])
    assert tracker.scores() == before

    # close() removes the hooks.
    tracker.close()
    model(batch[0])
    assert tracker.scores() == before


def test_random_scores_are_seeded(tiny_vit):
    model = tiny_vit
    pear.attach(model, PearConfig(importance="random", seed=3))
    a = ImportanceTracker(model).scores()  # needs no update()
    b = ImportanceTracker(model).scores()
    c = ImportanceTracker(model, seed=4).scores()
    d = ImportanceTracker(model, seed=3).scores()
    assert a == b == d
    assert a != c
    assert list(a) == pear.positions(model)
    assert all(0.0 <= v < 1.0 for v in a.values())
    assert len(set(a.values())) == len(a)


@pytest.mark.parametrize("method", ["taylor", "magnitude", "gradient", "output"])
def test_scores_before_any_update_raise(tiny_vit, method):
    model = tiny_vit
    pear.attach(model)
    with pytest.raises(ValueError, match="update"):
        ImportanceTracker(model, method=method).scores()


def test_unknown_method_raises(tiny_vit):
    model = tiny_vit
    pear.attach(model)
    with pytest.raises(ValueError, match="fisher"):
        ImportanceTracker(model, method="fisher")


def test_tracker_on_unattached_model_raises(tiny_vit):
    with pytest.raises(ValueError, match="attach"):
        ImportanceTracker(tiny_vit)


def test_tracker_after_pruning_raises(tiny_vit):
    model = tiny_vit
    pear.attach(model, PearConfig(importance="random"))
    scores = ImportanceTracker(model).scores()
    pear.prune_and_share(model, pear.make_plan(scores, pear.PearConfig(), model))
    with pytest.raises(ValueError, match="before pruning"):
        ImportanceTracker(model)


@pytest.mark.parametrize("method", ["taylor", "output"])
def test_state_dict_round_trip(tiny_vit, vit_batch, train_steps, method):
    model = tiny_vit
    pear.attach(model, PearConfig(init="random", importance=method))
    a = ImportanceTracker(model)
    train_steps(model, vit_batch, 2, tracker=a)
    state = a.state_dict()
    a.close()
    b = ImportanceTracker(model)
    b.load_state_dict(state)
    assert b.steps == 2
    assert b.scores() == a.scores()
    assert b.state_dict() == state

    with pytest.raises(ValueError):
        ImportanceTracker(model, method="magnitude").load_state_dict(state)
    bad = dict(state, names=state["names"][:-1])
    with pytest.raises(ValueError):
        ImportanceTracker(model).load_state_dict(bad)
    b.close()


def test_update_runs_no_forward_or_backward_and_leaves_grads_alone(tiny_vit, vit_batch):
    model = tiny_vit
    pear.attach(model, PearConfig(init="random"))
    tracker = ImportanceTracker(model)
    x, y = vit_batch
    nn.functional.cross_entropy(model(x), y).backward()

    calls = {"forward": 0, "backward": 0}
    hooks = [m.register_forward_pre_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
             for m in model.modules()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    hooks += [p.register_hook(lambda g: calls.__setitem__("backward", calls["backward"] + 1)) for p in trainable]
    grads = [p.grad.clone() for p in trainable]
    params = [p.detach().clone() for p in trainable]
    tracker.update()
    for h in hooks:
        h.remove()
    assert calls == {"forward": 0, "backward": 0}
    assert all(torch.equal(p.grad, g) for p, g in zip(trainable, grads))
    assert all(torch.equal(p, q) for p, q in zip(trainable, params))
