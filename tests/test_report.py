import json

import pytest

import pear
from pear import PearConfig
from pear.adapters import pear_state

S6 = {
    "blocks.0.attn": 0.6, "blocks.0.mlp": 0.1,
    "blocks.1.attn": 0.5, "blocks.1.mlp": 0.3,
    "blocks.2.attn": 0.2, "blocks.2.mlp": 0.9,
}
PRUNED = {"blocks.0.mlp", "blocks.1.mlp", "blocks.2.attn"}
D, R = 48, 8
PER_ADAPTER = 2 * D * R + R + D  # down + up weights and biases
HEAD = D * 5 + 5


def _pruned_vit(model_factory, **cfg):
    model = model_factory("vit")
    pear.attach(model, PearConfig(**cfg))
    plan = pear.make_plan(S6, pear_state(model).config, model)
    pear.prune_and_share(model, plan)
    return model, plan


def _check_byte_sums(t):
    assert t["stored_tensor_bytes"] == t["adapter_bytes"] + t["head_bytes"] + t["frozen_bytes"] + t["share_map_bytes"]
    assert t["adapter_bytes"] == 4 * t["adapter_params"]  # float32
    assert t["head_bytes"] == 4 * t["head_params"]
    assert t["frozen_bytes"] == 4 * t["frozen_params"]


def test_report_before_pruning(tiny_vit):
    model = tiny_vit
    pear.attach(model)
    r = pear.report(model)
    assert r["config"] == PearConfig().to_dict()
    assert [row["name"] for row in r["positions"]] == pear.positions(model)
    for row in r["positions"]:
        assert row["state"] == "active" and row["shares"] is None and row["importance"] is None
        assert row["params"] == PER_ADAPTER and row["frozen_params"] == 0
    t = r["totals"]
    assert (t["positions"], t["pruned"], t["shared"]) == (6, 0, 0)
    assert t["adapter_params"] == t["adapter_params_unpruned"] == 6 * PER_ADAPTER
    assert t["head_params"] == HEAD
    assert t["trainable_params"] == t["trainable_params_before"] == 6 * PER_ADAPTER + HEAD
    assert t["adapter_bytes_unpruned"] == t["adapter_bytes"]
    assert t["share_map_bytes"] == 0 and t["frozen_bytes"] == 0
    _check_byte_sums(t)
    json.dumps(r)


@pytest.mark.parametrize("knowledge", ["merge", "none"])
def test_report_after_pruning_half(model_factory, knowledge):
    model, plan = _pruned_vit(model_factory, knowledge=knowledge)
    r = pear.report(model)
    t = r["totals"]
    assert t["adapter_params"] * 2 == t["adapter_params_unpruned"] == 6 * PER_ADAPTER
    assert t["adapter_bytes"] * 2 == t["adapter_bytes_unpruned"]
    assert t["trainable_params"] == t["adapter_params"] + t["head_params"]
    assert t["trainable_params_before"] == 6 * PER_ADAPTER + HEAD
    assert (t["pruned"], t["shared"], t["frozen_params"]) == (3, 3, 0)
    smap = pear.share_map(model)
    assert smap == plan.shares
    assert t["share_map_bytes"] == len(json.dumps(smap, separators=(",", ":")).encode()) > 0
    _check_byte_sums(t)
    for row in r["positions"]:
        name = row["name"]
        assert row["importance"] == S6[name]
        if name in PRUNED:
            assert row["state"] == "pruned" and row["params"] == 0
            assert row["shares"] == plan.shares[name]
        else:
            assert row["state"] == "kept" and row["params"] == PER_ADAPTER
            assert row["shares"] is None
    json.dumps(r)


def test_report_plain_pruning_has_no_shares(model_factory):
    model, _ = _pruned_vit(model_factory, share="none", knowledge="none")
    r = pear.report(model)
    assert all(row["shares"] is None for row in r["positions"])
    assert pear.share_map(model) == {}
    t = r["totals"]
    assert (t["pruned"], t["shared"], t["share_map_bytes"]) == (3, 0, 0)
    assert t["adapter_params"] == 3 * PER_ADAPTER
    _check_byte_sums(t)


def test_report_counts_frozen_checkpoints_as_stored_but_not_trainable(model_factory):
    model, plan = _pruned_vit(model_factory, knowledge="frozen")
    r = pear.report(model)
    t = r["totals"]
    assert t["frozen_params"] == 3 * PER_ADAPTER
    assert t["frozen_bytes"] == 4 * 3 * PER_ADAPTER > 0
    assert t["adapter_params"] == 3 * PER_ADAPTER
    assert t["trainable_params"] == t["adapter_params"] + t["head_params"]
    assert t["stored_tensor_bytes"] > t["adapter_bytes_unpruned"] + t["head_bytes"]  # frozen costs storage
    _check_byte_sums(t)
    for row in r["positions"]:
        if row["name"] in PRUNED:
            assert row["frozen_params"] == PER_ADAPTER and row["params"] == 0
            assert row["shares"] == plan.shares[row["name"]]
        else:
            assert row["frozen_params"] == 0


def test_report_on_a_pruned_cnn(tiny_cnn):
    model = tiny_cnn
    pear.attach(model)
    names = pear.positions(model)
    scores = {n: float(i) for i, n in enumerate(names)}
    plan = pear.make_plan(scores, pear_state(model).config, model)
    assert plan.shares  # blocks.4.1 -> blocks.4.2
    pear.prune_and_share(model, plan)
    r = pear.report(model)
    t = r["totals"]
    assert t["adapter_params_unpruned"] == plan.total_params
    assert t["adapter_params"] == plan.total_params - plan.pruned_params
    assert t["pruned"] == len(plan.pruned) and t["shared"] == len(plan.shares)
    assert {row["name"]: row["shares"] for row in r["positions"] if row["shares"]} == plan.shares
    assert [row["name"] for row in r["positions"] if row["state"] == "pruned"] == plan.pruned
    _check_byte_sums(t)


def test_report_counts_both_heads_of_a_distilled_deit(model_factory):
    model = model_factory("deit_distilled")
    pear.attach(model)
    t = pear.report(model)["totals"]
    assert t["head_params"] == 2 * HEAD
    assert t["trainable_params"] == t["adapter_params"] + 2 * HEAD
    _check_byte_sums(t)


def test_report_on_unattached_model_raises(tiny_vit):
    with pytest.raises(ValueError, match="attach"):
        pear.report(tiny_vit)
