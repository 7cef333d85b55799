import copy
import json
import math

import pytest
import torch
from torch import nn

import pear
from pear import ImportanceTracker, PearConfig, PrunePlan
from pear.adapters import adapter_modules, pear_state

# Six ViT positions (3 blocks) with hand-picked, distinct importances.
S6 = {
    "blocks.0.attn": 0.6, "blocks.0.mlp": 0.1,
    "blocks.1.attn": 0.5, "blocks.1.mlp": 0.3,
    "blocks.2.attn": 0.2, "blocks.2.mlp": 0.9,
}
# At ratio 0.5: least important first 0.mlp (.1), 2.attn (.2), 1.mlp (.3);
# kept, most important first: 2.mlp (.9), 0.attn (.6), 1.attn (.5).
S6_PRUNED = ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.attn"]
S6_KEPT = ["blocks.0.attn", "blocks.1.attn", "blocks.2.mlp"]


def vit_names(depth):
    return [f"blocks.{i}.{k}" for i in range(depth) for k in ("attn", "mlp")]


def shuffled_scores(names, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: float(v) + 0.5 for n, v in zip(names, torch.randperm(len(names), generator=g))}


def _cfg(**kw):
    return PearConfig(**kw)


def _vit6(model_factory, **cfg):
    """Attached 3-block ViT with non-zero adapters (so pruning decisions are visible)."""
    model = model_factory("vit")
    pear.attach(model, PearConfig(init="random", **cfg))
    return model


# --------------------------------------------------------------------------- plan()


@pytest.mark.parametrize("n_blocks", [3, 12])
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_plan_prunes_round_ratio_n_of_the_least_important(n_blocks, ratio):
    names = vit_names(n_blocks)
    scores = shuffled_scores(names, seed=n_blocks)
    p = pear.make_plan(scores, _cfg(prune_ratio=ratio))
    n = len(names)
    # Python's round(): ties go to the even count (0.25 * 6 = 1.5 -> 2, 0.75 * 6 = 4.5 -> 4).
    assert len(p.pruned) == round(ratio * n)
    assert len(p.kept) == n - len(p.pruned)
    assert set(p.pruned) | set(p.kept) == set(names) and not set(p.pruned) & set(p.kept)
    lowest = sorted(names, key=scores.get)[: len(p.pruned)]
    assert set(p.pruned) == set(lowest)
    # Both lists come back in model order.
    assert p.pruned == [n for n in names if n in p.pruned] and p.kept == [n for n in names if n in p.kept]
    assert p.ratio == ratio and p.policy == "matched" and p.scores == scores
    assert (p.pruned_params, p.total_params) == (len(p.pruned), n)


def test_plan_with_model_agrees_and_counts_parameters(model_factory):
    model = model_factory("vit")
    pear.attach(model)
    p = pear.make_plan(S6, _cfg(), model)
    assert p.pruned == S6_PRUNED and p.kept == S6_KEPT
    per = pear_state(model).unpruned_adapter_params // 6
    assert (p.pruned_params, p.total_params) == (3 * per, 6 * per)
    assert p.digest() == pear.make_plan(S6, _cfg()).digest()


def test_ties_are_broken_by_model_order():
    scores = dict.fromkeys(vit_names(3), 1.0)
    assert pear.make_plan(scores, _cfg()).pruned == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn"]


@pytest.mark.parametrize("ratio", [0.9, 0.95, 0.99])
def test_a_ratio_below_one_keeps_at_least_one_adapter(ratio):
    """prune_ratio is validated to lie in [0, 1): it must never prune every adapter
    (nothing would be left to share)."""
    p = pear.make_plan(shuffled_scores(vit_names(3)), _cfg(prune_ratio=ratio))
    assert len(p.kept) >= 1
    assert len(p.shares) == len(p.pruned)


def test_a_ratio_below_one_keeps_at_least_one_cnn_adapter(tiny_cnn):
    model = tiny_cnn
    pear.attach(model)
    p = pear.make_plan({n: float(i) for i, n in enumerate(pear.positions(model))}, _cfg(prune_ratio=0.99), model)
    assert p.kept == ["blocks.5.0"]  # the most important (and largest) adapter


def test_rank_policy_maps_ith_least_important_pruned_to_ith_most_important_kept():
    p = pear.make_plan(S6, _cfg(share="rank"))
    assert p.pruned == S6_PRUNED
    assert p.shares == {
        "blocks.0.mlp": "blocks.2.mlp",   # least important pruned  <- most important kept
        "blocks.2.attn": "blocks.0.attn",  # 2nd                     <- 2nd
        "blocks.1.mlp": "blocks.1.attn",   # 3rd                     <- 3rd
    }


def test_rank_policy_cycles_when_more_positions_are_pruned_than_kept():
    scores = {n: float(i) for i, n in enumerate(vit_names(3))}  # importance grows with depth
    p = pear.make_plan(scores, _cfg(prune_ratio=0.75))  # round(4.5) = 4 pruned, 2 kept
    assert p.kept == ["blocks.2.attn", "blocks.2.mlp"]
    assert p.shares == {
        "blocks.0.attn": "blocks.2.mlp", "blocks.0.mlp": "blocks.2.attn",
        "blocks.1.attn": "blocks.2.mlp", "blocks.1.mlp": "blocks.2.attn",
    }


def test_top1_policy_maps_every_pruned_position_to_the_best():
    p = pear.make_plan(S6, _cfg(share="top1"))
    assert p.shares == dict.fromkeys(S6_PRUNED, "blocks.2.mlp")


def test_none_policy_gives_no_shares():
    p = pear.make_plan(S6, _cfg(share="none"))
    assert p.pruned == S6_PRUNED and p.shares == {}


def test_nearest_policy_picks_the_closest_depth_of_the_same_kind():
    scores = {
        "blocks.0.attn": 0.90, "blocks.0.mlp": 0.50,
        "blocks.1.attn": 0.80, "blocks.1.mlp": 0.10,
        "blocks.2.attn": 0.20, "blocks.2.mlp": 0.85,
        "blocks.3.attn": 0.70, "blocks.3.mlp": 0.60,
    }
    p = pear.make_plan(scores, _cfg(share="nearest", prune_ratio=0.375))  # 3 pruned
    assert p.pruned == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.attn"]
    assert p.shares == {
        # Same kind only: not blocks.1.attn (same block); kept mlps at depth 2 and 3 -> 2.
        "blocks.1.mlp": "blocks.2.mlp",
        "blocks.0.mlp": "blocks.2.mlp",
        # attn kept at depth 1 (.80) and 3 (.70) are equally near: the more important wins.
        "blocks.2.attn": "blocks.1.attn",
    }
    # The rank policy would decide differently on the same scores.
    assert pear.make_plan(scores, _cfg(share="rank", prune_ratio=0.375)).shares != p.shares


def test_nearest_policy_falls_back_to_another_kind_when_all_of_its_kind_are_pruned():
    scores = {"blocks.0.attn": 0.9, "blocks.0.mlp": 0.1, "blocks.1.attn": 0.8, "blocks.1.mlp": 0.2}
    p = pear.make_plan(scores, _cfg(share="nearest"))
    assert p.shares == {"blocks.0.mlp": "blocks.0.attn", "blocks.1.mlp": "blocks.1.attn"}


@pytest.mark.parametrize("scores, match", [({}, "empty"), ({"blocks.0.attn": float("nan")}, "finite")])
def test_plan_rejects_bad_scores(scores, match):
    with pytest.raises(ValueError, match=match):
        pear.make_plan(scores, _cfg())


def test_plan_rejects_scores_for_other_positions(model_factory):
    model = model_factory("vit")
    pear.attach(model)
    bad = dict(S6)
    bad["blocks.7.attn"] = bad.pop("blocks.0.attn")
    with pytest.raises(ValueError, match="positions"):
        pear.make_plan(bad, _cfg(), model)


# ---------------------------------------------------------------- CNN compatibility

def _cnn_scores(model, low):
    """Importance = position index + 10, except the positions in `low`, which get
    ascending small scores in the order given."""
    names = pear.positions(model)
    s = {n: 10.0 + i for i, n in enumerate(names)}
    s.update({n: float(i) for i, n in enumerate(low)})
    return s


@pytest.mark.parametrize("policy", ["rank", "top1", "nearest"])
def test_cnn_shares_only_between_equal_signatures(tiny_cnn, policy):
    model = tiny_cnn
    pear.attach(model)
    sl = pear.slots(model)
    sig = {n: s.info.signature for n, s in sl.items()}
    # blocks.0.0 has a signature of its own; blocks.2.1 has three compatible peers
    # (24 -> 24 channels, stride 1: blocks.2.2, blocks.3.0, blocks.3.1).
    assert [n for n in sig if sig[n] == sig["blocks.0.0"]] == ["blocks.0.0"]
    peers = [n for n in sig if sig[n] == sig["blocks.2.1"] and n != "blocks.2.1"]
    assert peers == ["blocks.2.2", "blocks.3.0", "blocks.3.1"]

    scores = _cnn_scores(model, ["blocks.0.0", "blocks.2.1"])
    p = pear.make_plan(scores, _cfg(share=policy, prune_ratio=0.3), model)
    assert {"blocks.0.0", "blocks.2.1"} <= set(p.pruned)
    assert "blocks.0.0" not in p.shares  # nothing compatible is kept: pruned without a share
    kept_peers = [n for n in peers if n in p.kept]
    assert kept_peers
    best_peer = max(kept_peers, key=scores.get)
    depth = {n: s.info.depth for n, s in sl.items()}
    nearest_peer = min(kept_peers, key=lambda n: abs(depth[n] - depth["blocks.2.1"]))
    assert p.shares["blocks.2.1"] == (nearest_peer if policy == "nearest" else best_peer)
    for q, k in p.shares.items():
        assert sig[q] == sig[k]
    for q in set(p.pruned) - set(p.shares):
        assert not any(sig[k] == sig[q] for k in p.kept)

    pear.prune_and_share(model, p)
    assert sl["blocks.0.0"].adapter is None
    assert sl["blocks.2.1"].adapter is sl[p.shares["blocks.2.1"]].adapter
    x = torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 5)


def test_cnn_ratio_counts_parameters_not_adapters(tiny_cnn):
    model = tiny_cnn
    pear.attach(model)
    sizes = {n: sum(p.numel() for p in a.parameters()) for n, a in adapter_modules(model).items()}
    assert len(set(sizes.values())) > 1
    scores = _cnn_scores(model, [])
    for ratio in (0.25, 0.5):
        p = pear.make_plan(scores, _cfg(prune_ratio=ratio), model)
        assert p.total_params == sum(sizes.values())
        assert p.pruned_params == sum(sizes[n] for n in p.pruned)
        # The pruned prefix (least important first) is the one whose size is closest to the target.
        ranked = sorted(sizes, key=scores.get)
        prefix = [sum(sizes[n] for n in ranked[:k]) for k in range(len(ranked) + 1)]
        target = ratio * p.total_params
        assert abs(p.pruned_params - target) == min(abs(a - target) for a in prefix)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_group_scope_prunes_within_each_compatible_group_so_every_pruned_position_shares(tiny_cnn, ratio):
    model = tiny_cnn
    pear.attach(model)
    sl = pear.slots(model)
    sig = {n: s.info.signature for n, s in sl.items()}
    scores = _cnn_scores(model, [])
    p = pear.make_plan(scores, _cfg(prune_ratio=ratio, prune_scope="group"), model)
    assert p.scope == "group"
    groups = {}
    for n in sl:
        groups.setdefault(sig[n], []).append(n)
    for members in groups.values():
        ranked = sorted(members, key=scores.get)
        m = min(round(ratio * len(members)), len(members) - 1)
        # The least important m of each group, never all of it.
        assert sorted(n for n in members if n in p.pruned) == sorted(ranked[:m])
    assert set(p.shares) == set(p.pruned)  # every pruned position has a kept peer to share
    for q, k in p.shares.items():
        assert sig[q] == sig[k]
    # Global scope on the same scores leaves some pruned positions without a share.
    g = pear.make_plan(scores, _cfg(prune_ratio=ratio), model)
    assert g.scope == "global" and set(g.shares) < set(g.pruned)
    pear.prune_and_share(model, p)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_group_scope_is_global_scope_on_a_vit(model_factory, ratio):
    scores = shuffled_scores(vit_names(3), seed=1)
    model = _vit6(model_factory)
    a = pear.make_plan(scores, _cfg(prune_ratio=ratio), model)
    b = pear.make_plan(scores, _cfg(prune_ratio=ratio, prune_scope="group"), model)
    assert (a.pruned, a.kept, a.shares, a.digest()) == (b.pruned, b.kept, b.shares, b.digest())


def test_prune_scope_is_validated():
    with pytest.raises(ValueError, match="prune_scope must be one of global, group; got 'stage'"):
        PearConfig(prune_scope="stage")


def test_prune_and_share_refuses_incompatible_shares(tiny_cnn):
    model = tiny_cnn
    pear.attach(model)
    names = pear.positions(model)
    p = PrunePlan(pruned=["blocks.0.0"], kept=names[1:], shares={"blocks.0.0": "blocks.5.0"},
                  scores=_cnn_scores(model, ["blocks.0.0"]), ratio=0.05, policy="rank")
    with pytest.raises(ValueError, match="shapes differ"):
        pear.prune_and_share(model, p)
    assert not pear_state(model).pruned
    assert all(s.info.importance is None for s in pear.slots(model).values())  # no half-applied plan


# ---------------------------------------------------------------- prune_and_share()

@pytest.mark.parametrize("knowledge", ["none", "merge"])
def test_shared_positions_hold_the_same_module_and_pruned_tensors_are_gone(model_factory, knowledge):
    model = _vit6(model_factory, knowledge=knowledge)
    sl = pear.slots(model)
    old = {n: list(sl[n].adapter.parameters()) for n in S6}  # keeps them alive: ids stay unique
    kept_params = {n: list(sl[n].adapter.parameters()) for n in S6_KEPT}
    p = pear.make_plan(S6, pear_state(model).config, model)
    pear.prune_and_share(model, p)

    live = {id(t) for t in model.parameters()}
    for q in S6_PRUNED:
        assert not any(id(t) in live for t in old[q]), q
        k = p.shares[q]
        assert sl[q].adapter is sl[k].adapter
        assert all(a is b for a, b in zip(sl[q].adapter.parameters(), kept_params[k]))
        assert sl[q].frozen is None
        assert sl[q].info.pruned and sl[q].info.source == k
    for k in S6_KEPT:
        assert all(id(t) in live for t in old[k])
        assert not sl[k].info.pruned and sl[k].info.source == k
    assert {n: s.info.importance for n, s in sl.items()} == S6
    assert pear_state(model).pruned and pear_state(model).extra["plan"] == p.to_dict()
    assert set(adapter_modules(model)) == set(S6_KEPT)
    n_trainable_adapters = sum(t.numel() for t in model.parameters() if t.requires_grad) - sum(
        t.numel() for t in model.head.parameters())
    assert n_trainable_adapters == pear_state(model).unpruned_adapter_params // 2


def test_share_none_empties_pruned_positions(model_factory, vit_batch):
    model = _vit6(model_factory, share="none", knowledge="none")
    pear.prune_and_share(model, pear.make_plan(S6, pear_state(model).config, model))
    sl = pear.slots(model)
    assert all(sl[q].adapter is None and sl[q].frozen is None for q in S6_PRUNED)
    assert model(vit_batch[0]).shape == (4, 5)


def test_gradient_of_a_shared_adapter_sums_over_its_positions(model_factory, vit_batch):
    """Chain rule for a parameter used twice: dL/dtheta = dL/dtheta|_use1 + dL/dtheta|_use2.
    The contribution of one use is obtained by making the *other* slot call a detached
    copy of the adapter: the forward values are unchanged, so the graph is the same
    except that the copy's use contributes nothing to theta's gradient. Both partial
    gradients must then add up to the gradient of the real, shared run. (float64 so the
    comparison can be tight.)"""
    model = _vit6(model_factory, share="top1", knowledge="none").double()
    pear.prune_and_share(model, pear.make_plan(S6, pear_state(model).config, model))
    sl = pear.slots(model)
    shared = sl["blocks.2.mlp"].adapter
    users = [n for n, s in sl.items() if s.adapter is shared]
    assert users == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.attn", "blocks.2.mlp"]
    x, y = vit_batch[0].double(), vit_batch[1]

    def grads():
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        return [t.grad.clone() for t in shared.parameters()]

    full = grads()
    partial = []
    for u in users:
        stand_ins = {}
        for other in users:
            if other != u:
                stand_ins[other] = copy.deepcopy(shared).requires_grad_(False)
                sl[other].adapter = stand_ins[other]
        partial.append(grads())
        for other in stand_ins:
            sl[other].adapter = shared
    for f, *ps in zip(full, *partial):
        assert torch.allclose(f, sum(ps), rtol=1e-9, atol=1e-12)
    # Every position really contributes (the test would be vacuous otherwise).
    assert all(p[0].abs().sum() > 0 for p in partial)
    assert not torch.allclose(full[0], partial[-1][0])


@pytest.mark.parametrize("policy", ["rank", "top1"])
def test_merge_is_the_importance_weighted_average(model_factory, policy):
    model = _vit6(model_factory, share=policy, knowledge="merge")
    before = {n: {k: v.clone() for k, v in a.state_dict().items()} for n, a in adapter_modules(model).items()}
    p = pear.make_plan(S6, pear_state(model).config, model)
    pear.prune_and_share(model, p)
    sl = pear.slots(model)
    for k in S6_KEPT:
        donors = [q for q, t in p.shares.items() if t == k]
        w = {n: S6[n] for n in [k, *donors]}
        got = sl[k].adapter.state_dict()
        for key, value in got.items():
            want = sum(w[n] * before[n][key].double() for n in w) / sum(w.values())
            assert torch.allclose(value.double(), want, rtol=1e-6, atol=1e-7), (k, key)
        if not donors:
            assert all(torch.equal(got[key], before[k][key]) for key in got)
    if policy == "top1":
        assert [q for q in p.shares.values()] == ["blocks.2.mlp"] * 3


def test_merge_without_any_importance_signal_takes_the_plain_mean(model_factory):
    model = _vit6(model_factory, knowledge="merge", share="top1")
    zeros = dict.fromkeys(S6, 0.0)
    before = {n: a.up.weight.clone() for n, a in adapter_modules(model).items()}
    p = pear.make_plan(zeros, pear_state(model).config, model)
    pear.prune_and_share(model, p)
    (k,) = set(p.shares.values())
    group = [k, *p.shares]
    want = sum(before[n] for n in group) / len(group)
    assert torch.allclose(pear.slots(model)[k].adapter.up.weight, want, atol=1e-7)


def test_frozen_keeps_the_old_adapter_beside_the_shared_one(model_factory, vit_batch, train_steps):
    model = _vit6(model_factory, knowledge="frozen")
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    train_steps(model, vit_batch, 1, optimizer=opt)
    sl = pear.slots(model)
    old = {q: sl[q].adapter for q in S6_PRUNED}
    p = pear.make_plan(S6, pear_state(model).config, model)
    pear.prune_and_share(model, p)
    pear.prune_optimizer(opt, model)
    snap = {q: copy.deepcopy(old[q].state_dict()) for q in S6_PRUNED}
    for q in S6_PRUNED:
        assert sl[q].frozen is old[q]
        assert sl[q].adapter is sl[p.shares[q]].adapter
        assert not any(t.requires_grad for t in old[q].parameters())
    frozen_ids = {id(t) for q in S6_PRUNED for t in old[q].parameters()}
    assert frozen_ids <= {id(t) for t in model.parameters()}  # stored with the model
    train_steps(model, vit_batch, 2, optimizer=opt)
    for q in S6_PRUNED:
        for key, value in old[q].state_dict().items():
            assert torch.equal(value, snap[q][key]), (q, key)
    # ... while the shared adapters did train.
    assert not torch.equal(sl["blocks.2.mlp"].adapter.up.weight, snap["blocks.0.mlp"]["up.weight"])


def test_frozen_without_sharing_loses_nothing(model_factory, vit_batch):
    model = _vit6(model_factory, knowledge="frozen", share="none").eval()
    x = vit_batch[0]
    with torch.no_grad():
        before = model(x)
    pear.prune_and_share(model, pear.make_plan(S6, pear_state(model).config, model))
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert all(pear.slots(model)[q].adapter is None for q in S6_PRUNED)


@pytest.mark.parametrize("knowledge", ["merge", "frozen"])
def test_prune_optimizer_drops_pruned_state_and_keeps_shared_state(model_factory, vit_batch, train_steps, knowledge):
    model = _vit6(model_factory, knowledge=knowledge)
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    train_steps(model, vit_batch, 2, optimizer=opt)
    sl = pear.slots(model)
    pruned_params = [t for q in S6_PRUNED for t in sl[q].adapter.parameters()]
    kept_params = [t for k in S6_KEPT for t in sl[k].adapter.parameters()] + list(model.head.parameters())
    state_before = {id(t): (opt.state[t]["exp_avg"], opt.state[t]["exp_avg"].clone()) for t in kept_params}

    pear.prune_and_share(model, pear.make_plan(S6, pear_state(model).config, model))
    dropped = pear.prune_optimizer(opt, model)

    assert dropped == len(pruned_params) == 3 * 4  # down/up weight and bias per adapter
    in_opt = {id(t) for g in opt.param_groups for t in g["params"]}
    assert in_opt == {id(t) for t in kept_params}
    assert not any(t in opt.state for t in pruned_params)
    for t in kept_params:
        obj, values = state_before[id(t)]
        assert opt.state[t]["exp_avg"] is obj and torch.equal(obj, values)
    losses = train_steps(model, vit_batch, 1, optimizer=opt)
    assert math.isfinite(losses[0])
    assert all(int(opt.state[t]["step"]) == 3 for t in kept_params)


def test_pruning_twice_raises(model_factory):
    model = _vit6(model_factory)
    p = pear.make_plan(S6, pear_state(model).config, model)
    pear.prune_and_share(model, p)
    with pytest.raises(ValueError, match="already"):
        pear.prune_and_share(model, p)


def test_prune_and_share_rejects_a_plan_for_other_positions(model_factory):
    model = _vit6(model_factory)
    p = pear.make_plan(shuffled_scores(vit_names(4)), _cfg())
    with pytest.raises(ValueError, match="positions"):
        pear.prune_and_share(model, p)
    assert not pear_state(model).pruned


def test_prune_and_share_rejects_shares_that_do_not_map_pruned_to_kept(model_factory):
    """A hand-built plan whose share target is itself pruned would leave a position
    running a pruned (supposedly dropped) adapter."""
    model = _vit6(model_factory)
    names = pear.positions(model)
    p = PrunePlan(pruned=names[:2], kept=names[2:], shares={names[0]: names[1], names[1]: names[2]},
                  scores=dict.fromkeys(names, 1.0), ratio=0.3, policy="rank")
    with pytest.raises(ValueError, match="pruned -> kept"):
        pear.prune_and_share(model, p)
    assert not pear_state(model).pruned


def test_plan_digest_and_round_trip():
    a = pear.make_plan(S6, _cfg())
    b = pear.make_plan({k: v * 2 for k, v in S6.items()}, _cfg())  # same decisions, other scores
    assert a.digest() == b.digest()
    assert a.digest() != pear.make_plan(S6, _cfg(share="top1")).digest()
    assert a.digest() != pear.make_plan(S6, _cfg(prune_ratio=0.25)).digest()
    back = PrunePlan.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back == a and back.digest() == a.digest()
    older = {k: v for k, v in a.to_dict().items() if k != "scope"}  # a plan saved before prune_scope existed
    assert PrunePlan.from_dict(older) == a


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("pruned"),
        lambda d: d.__setitem__("scores", [1, 2]),
        lambda d: d["shares"].__setitem__("blocks.0.mlp", "blocks.1.mlp"),  # shares into a pruned position
        lambda d: d["kept"].append("blocks.0.mlp"),  # both pruned and kept
    ],
)
def test_plan_from_dict_rejects_malformed_plans(mutate):
    d = pear.make_plan(S6, _cfg()).to_dict()
    mutate(d)
    with pytest.raises(ValueError):
        PrunePlan.from_dict(d)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_training_goes_on_after_pruning(model_factory, batch_factory, train_steps, kind):
    model = model_factory(kind)
    pear.attach(model)
    batch = batch_factory(kind)
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    tracker = ImportanceTracker(model)
    train_steps(model, batch, 2, tracker=tracker, optimizer=opt)
    p = pear.make_plan(tracker.scores(), pear_state(model).config, model)
    tracker.close()
    pear.prune_and_share(model, p)
    assert pear.prune_optimizer(opt, model) > 0
    losses = train_steps(model, batch, 4, optimizer=opt)
    assert losses[-1] < losses[0]


def test_plan_is_a_deprecated_alias_of_make_plan():
    with pytest.warns(DeprecationWarning, match="pear.make_plan"):
        assert pear.plan is pear.make_plan
