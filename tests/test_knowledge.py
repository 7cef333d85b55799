"""The knowledge checkpoint modes that keep what a pruned adapter computes (ours): 'svd', a
product-space merge of linear adapters, and 'distill', a fit of the shared adapter to the
outputs at the positions it serves. Both are storage-free."""

import pytest
import torch

import pear
from pear import PearConfig
from pear.checkpoint import task_tensors
from pear.pruning import _svd_merge_into, _weights



def _attached(model_factory, **cfg):
    model = model_factory("vit")
    pear.attach(model, PearConfig(init="random", **cfg))
    return model


def _scores(model):
    return {n: float(i + 1) for i, n in enumerate(pear.slots(model))}


def _halve_rank(adapter):
    """Zero half the hidden units, so that a sum of two such adapters has rank <= r."""
    r = adapter.down.weight.shape[0]
    with torch.no_grad():
        adapter.down.weight[r // 2:] = 0
        if adapter.down.bias is not None:
            adapter.down.bias[r // 2:] = 0


@pytest.mark.parametrize("cfg", [dict(adapter="lora"), dict(act="identity")])
def test_svd_merge_is_the_weighted_sum_of_what_the_adapters_compute(cfg, model_factory):
    model = _attached(model_factory, knowledge="svd", **cfg)
    a, b = list(pear.slots(model).values())[:2]
    for ad in (a.adapter, b.adapter):
        _halve_rank(ad)
    x = torch.randn(7, a.adapter.down.in_features, dtype=torch.float64)
    a64, b64 = a.adapter.double(), b.adapter.double()
    w = _weights([3.0, 1.0])
    expected = w[0] * a64(x) + w[1] * b64(x)
    with torch.no_grad():
        _svd_merge_into(a64, [b64], w)
    torch.testing.assert_close(a64(x), expected, rtol=1e-9, atol=1e-12)


def test_svd_merge_truncates_to_the_adapters_rank(model_factory):
    model = _attached(model_factory, knowledge="svd", adapter="lora")
    a, b = list(pear.slots(model).values())[:2]
    rank = a.adapter.down.weight.shape[0]
    with torch.no_grad():
        _svd_merge_into(a.adapter, [b.adapter], [0.5, 0.5])
    assert a.adapter.down.weight.shape[0] == rank
    product = a.adapter.up.weight @ a.adapter.down.weight
    assert torch.linalg.matrix_rank(product.double(), rtol=1e-5).item() <= rank  # float32 round-off


def test_svd_needs_linear_adapters():
    with pytest.raises(ValueError, match="act='identity'"):
        PearConfig(knowledge="svd", act="relu")
    PearConfig(knowledge="svd", adapter="lora")  # LoRA has no nonlinearity


def _objective(model, plan, inputs, before):
    """The importance-weighted relative squared error that 'distill' minimises, per kept adapter."""
    sl = pear.slots(model)
    total = 0.0
    receivers = {}
    for p, k in plan.shares.items():
        receivers.setdefault(k, []).append(p)
    for k, ps in receivers.items():
        names = [k, *ps]
        w = _weights([plan.scores[n] for n in names])
        power = sum(wi * before[n].pow(2).mean() for wi, n in zip(w, names))
        err = sum(wi * (sl[k].adapter(inputs[n]) - before[n]).pow(2).mean() for wi, n in zip(w, names))
        total += (err / power).item()
    return total


@torch.no_grad()
def test_distill_fits_the_shared_adapter_to_the_outputs_it_replaces(model_factory, batch_factory):
    x, _ = batch_factory("vit")
    results = {}
    for mode in ("none", "merge", "distill"):
        model = _attached(model_factory, knowledge=mode)
        plan = pear.make_plan(_scores(model), model.pear_state.config, model)
        inputs = pear.capture_inputs(model, [x])
        before = {n: s.adapter(inputs[n]) for n, s in pear.slots(model).items()}
        pear.prune_and_share(model, plan, inputs=inputs if mode == "distill" else None)
        results[mode] = _objective(model, plan, inputs, before)
        assert not any(k.startswith("frozen.") for k in task_tensors(model))  # storage-free
    # 'none' leaves each shared adapter as it was; distill starts there and only descends.
    assert results["distill"] < 0.9 * results["none"]
    assert results["distill"] < results["merge"]


def test_distill_without_inputs_names_capture_inputs(model_factory):
    model = _attached(model_factory, knowledge="distill")
    plan = pear.make_plan(_scores(model), model.pear_state.config, model)
    with pytest.raises(ValueError, match="capture_inputs"):
        pear.prune_and_share(model, plan)


def test_distill_leaves_no_gradients_and_keeps_requires_grad(model_factory, batch_factory):
    x, _ = batch_factory("vit")
    model = _attached(model_factory, knowledge="distill", distill_steps=5)
    plan = pear.make_plan(_scores(model), model.pear_state.config, model)
    pear.prune_and_share(model, plan, inputs=pear.capture_inputs(model, [x]))
    live = [p for p in model.parameters() if p.requires_grad]
    assert live and all(p.grad is None for p in live)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".base." in n)


@pytest.mark.parametrize("adapter", ["parallel", "sequential"])
def test_capture_inputs_records_what_each_adapter_is_fed(adapter, model_factory, batch_factory):
    model = _attached(model_factory, adapter=adapter)
    x, _ = batch_factory("vit", n=3)
    seen = {}
    hooks = [s.adapter.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0].reshape(-1, a[0].shape[-1])))
             for n, s in pear.slots(model).items()]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    captured = pear.capture_inputs(model, [x])
    assert captured.keys() == seen.keys()
    for n in seen:
        torch.testing.assert_close(captured[n], seen[n])
    thinned = pear.capture_inputs(model, [x], max_rows=10)
    assert all(len(t) == 10 for t in thinned.values())


def test_distill_on_a_cnn_with_strided_adapters(model_factory, batch_factory):
    model = model_factory("cnn")
    pear.attach(model, PearConfig(init="random", knowledge="distill", distill_steps=5, prune_scope="group"))
    x, _ = batch_factory("cnn")
    plan = pear.make_plan(_scores(model), model.pear_state.config, model)
    assert plan.shares
    pear.prune_and_share(model, plan, inputs=pear.capture_inputs(model, [x]))
    assert torch.isfinite(model(x)).all()
