"""The extension registries (pear.registry): a scorer, a share policy, a knowledge checkpoint,
an adapter kind or a training method registered from outside Pear is used by the library (make_plan,
prune_and_share), `pear train`'s flags and help, and the suite's grammar, like a built-in
one; unregistered, it is gone from all of them."""

import pytest
import torch
from torch import nn

import pear
from pear import ImportanceTracker, PearConfig
from pear.adapter_kinds import ADAPTERS, AdapterKind
from pear.cli import main
from pear.config import ADAPTER_KINDS, IMPORTANCE_METHODS, KNOWLEDGE_MODES, SHARE_ALIASES, SHARE_POLICIES
from pear.errors import PearError
from pear.harness.method_names import METHODS, PEAR_METHODS, PRUNING_METHODS, TRAINING_METHODS, register_method
from pear.harness.methods import prepare
from pear.harness.options import TrainConfig
from pear.harness.suite_methods import method_overrides
from pear.knowledge import KNOWLEDGE, Knowledge
from pear.registry import Registry
from pear.scorers import SCORERS, Scorer
from pear.sharing import SHARE_POLICIES as POLICY_REGISTRY


@pytest.fixture
def toy_scorer():
    """'toy': position i scores i per step, so the first positions are the least important."""
    @SCORERS.register("toy", help="position index, a test's scorer")
    class Toy(Scorer):
        def update(self) -> None:
            t = self.tracker
            t.sums += torch.arange(len(t.names), dtype=torch.float64, device=t.sums.device)
    yield Toy
    SCORERS.unregister("toy")


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_the_views_keep_the_names_and_order_of_the_tuples_they_replace():
    assert IMPORTANCE_METHODS == ("taylor", "magnitude", "gradient", "output", "random")
    assert SHARE_POLICIES == ("matched", "nearest", "top1", "none") and dict(SHARE_ALIASES) == {"rank": "matched"}
    assert KNOWLEDGE_MODES == ("none", "merge", "frozen", "distill", "svd")
    assert METHODS == ("linear", "full", "adapter", "pear", "prune", "peft-lora", "peft-lora-eq")
    assert tuple(PEAR_METHODS) == ("adapter", "pear", "prune") and tuple(PRUNING_METHODS) == ("pear", "prune")
    assert METHODS.index("pear") == 3 and "lora" not in METHODS


def test_a_toy_scorer_plans_through_the_tracker_and_make_plan(toy_scorer, model_factory, batch_factory):
    model = model_factory("vit")
    cfg = PearConfig(importance="toy", prune_ratio=0.5)
    pear.attach(model, cfg)
    tracker = ImportanceTracker(model)
    assert isinstance(tracker.scorer, toy_scorer)
    x, y = batch_factory("vit")
    for _ in range(2):
        nn.functional.cross_entropy(model(x), y).backward()
        tracker.update()
    scores = tracker.scores()
    names = list(scores)
    assert scores == {n: float(i) for i, n in enumerate(names)}  # the mean over steps of i
    plan = pear.make_plan(scores, cfg, model)
    half = len(names) // 2
    assert plan.pruned == names[:half] and plan.kept == names[half:]
    assert set(plan.shares) == set(names[:half])


def test_a_toy_scorer_is_a_config_value_a_flag_and_a_suite_ablation(toy_scorer, capsys):
    assert "toy" in IMPORTANCE_METHODS and PearConfig(importance="toy").importance == "toy"
    assert method_overrides("pear-imp-toy") == {"method": "pear", "importance": "toy"}
    assert method_overrides("pear@importance=toy") == {"method": "pear", "importance": "toy"}
    cfg = TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", "epochs": 2, "importance": "toy"})
    assert cfg.pear_config().importance == "toy"
    out = _help(capsys)
    assert "--importance {taylor,magnitude,gradient,output,random,toy}" in out
    assert "toy (position index, a test's scorer)" in out


def test_an_unregistered_scorer_is_gone_everywhere(toy_scorer, capsys):
    SCORERS.unregister("toy")
    try:
        assert "toy" not in IMPORTANCE_METHODS and "toy" not in _help(capsys)
        with pytest.raises(PearError, match="PearConfig.importance must be one of taylor, .*random; got 'toy'"):
            PearConfig(importance="toy")
        with pytest.raises(PearError, match="unknown suite method 'pear-imp-toy'.*pear-imp-\\{taylor,"):
            method_overrides("pear-imp-toy")
    finally:
        SCORERS.add("toy", toy_scorer, help="")  # the fixture unregisters it again


def test_a_toy_share_policy_shares_through_the_pure_make_plan():
    @POLICY_REGISTRY.register("first", help="every pruned position shares the least important kept adapter")
    def first(pruned, kept):
        return {p.name: kept[-1].name for p in pruned}

    try:
        scores = {f"blocks.{i}.mlp": float(i) for i in range(4)}
        plan = pear.make_plan(scores, PearConfig(share="first", prune_ratio=0.5))
        assert plan.policy == "first" and plan.shares == {"blocks.0.mlp": "blocks.2.mlp", "blocks.1.mlp": "blocks.2.mlp"}
        assert method_overrides("pear-share-first") == {"method": "pear", "share": "first"}
    finally:
        POLICY_REGISTRY.unregister("first")
    assert "first" not in SHARE_POLICIES


def test_a_toy_knowledge_checkpoint_folds_donors_in_prune_and_share(model_factory):
    @KNOWLEDGE.register("zero", help="the shared adapter starts from zero")
    class Zero(Knowledge):
        def absorb(self, target, donors, weights, inputs, config) -> None:
            for p in target.parameters():
                p.zero_()

    try:
        model = model_factory("vit")
        cfg = PearConfig(knowledge="zero", init="random")
        pear.attach(model, cfg)
        scores = {n: float(i) for i, n in enumerate(pear.slots(model))}
        plan = pear.make_plan(scores, cfg, model)
        pear.prune_and_share(model, plan)
        shared = pear.slots(model)[next(iter(plan.shares.values()))].adapter
        assert all(torch.count_nonzero(p) == 0 for p in shared.parameters())
        assert method_overrides("pear-kc-zero") == {"method": "pear", "knowledge": "zero"}
    finally:
        KNOWLEDGE.unregister("zero")


def test_a_toy_training_method_prepares_a_model_and_is_listed(model_factory, capsys):
    calls = []

    @register_method("frozen-all", help="nothing trains, a test's method", options=())
    def frozen_all(model, config, lora_alpha=None):
        calls.append(config.rank)
        return model.requires_grad_(False)

    try:
        model = prepare(model_factory("vit"), "frozen-all", PearConfig(rank=3))
        assert calls == [3] and not any(p.requires_grad for p in model.parameters())
        assert TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", "method": "frozen-all"}).method \
            == "frozen-all"
        assert method_overrides("frozen-all") == {"method": "frozen-all"}
        with pytest.raises(PearError, match="method frozen-all has no Pear options"):
            method_overrides("frozen-all@rank=4")
        assert "frozen-all (nothing trains, a test's method)" in _help(capsys)
    finally:
        TRAINING_METHODS.unregister("frozen-all")
    assert "frozen-all" not in METHODS


def test_a_registry_refuses_a_taken_name_and_names_every_entry_when_asked_for_another():
    reg: Registry[int] = Registry("thing", "--thing")
    reg.add("a", 1, help="first", aliases=("old",))
    reg.add("b", 2, help="")
    with pytest.raises(PearError, match="thing 'a' is already registered"):
        reg.add("a", 3, help="")
    with pytest.raises(PearError, match="thing 'old' is already registered"):
        reg.add("old", 3, help="")
    assert reg.get("old") == 1 and reg.canonical("old") == "a" and reg.canonical("c") == "c"
    assert reg.describe() == "a (first; 'old', its earlier name, is read as a), b"
    with pytest.raises(PearError, match="--thing must be one of a, b; got 'c'"):
        reg.get("c")
    view, aliases = reg.view(), reg.aliases()
    reg.unregister("a")
    assert view == ("b",) and dict(aliases) == {} and "old" not in aliases


@pytest.fixture
def toy_kind():
    """'toy': a sequential GELU bottleneck at each block's MLP only, the positions chosen by the kind."""
    @ADAPTERS.register("toy", help="sequential gelu at the MLPs, a test's kind")
    class Toy(AdapterKind):
        mode = "sequential"

        def act(self, config) -> str:
            return "gelu"

        def candidates(self, family, model, config):
            return [c for c in family.candidates(model, config) if c.kind == "mlp"]
    yield Toy
    if "toy" in ADAPTERS:
        ADAPTERS.unregister("toy")


def test_a_toy_adapter_kind_attaches_saves_and_loads(toy_kind, model_factory, batch_factory, tmp_path):
    model = model_factory("vit")
    pear.attach(model, PearConfig(adapter="toy", init="random"))
    slots = pear.slots(model)
    assert list(slots) == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp"]
    assert all(s.mode == "sequential" and isinstance(s.adapter.act, nn.GELU) for s in slots.values())
    x, _ = batch_factory("vit")
    seen = {}
    slot = slots["blocks.1.mlp"]
    hooks = [slot.base.register_forward_hook(lambda m, i, o: seen.update(base_out=o)),
             slot.adapter.register_forward_pre_hook(lambda m, i: seen.update(adapter_in=i[0]))]
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert not torch.allclose(out, model_factory("vit").eval()(x))  # random up projections change the output
    for h in hooks:
        h.remove()
    assert seen["adapter_in"] is seen["base_out"]  # sequential: the adapter reads the MLP's output
    reloaded = pear.load(pear.save(model, tmp_path / "ckpt"), model_factory("vit")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), out)
    with pytest.raises(PearError, match="adapter='toy' feeds its adapters the sub-layer's output"):
        pear.attach(model_factory("cnn"), PearConfig(adapter="toy"))


def test_a_toy_adapter_kind_is_a_config_value_a_flag_and_a_suite_setting(toy_kind, capsys):
    assert "toy" in ADAPTER_KINDS and PearConfig(adapter="toy").adapter == "toy"
    assert method_overrides("pear@adapter=toy") == {"method": "pear", "adapter": "toy"}
    out = _help(capsys)
    assert "--adapter {parallel,sequential,lora,toy}" in out
    assert "toy (sequential gelu at the MLPs, a test's kind)" in out
    ADAPTERS.unregister("toy")
    assert "toy" not in ADAPTER_KINDS and "toy" not in _help(capsys)
    with pytest.raises(PearError, match="PearConfig.adapter must be one of parallel, sequential, lora; got 'toy'"):
        PearConfig(adapter="toy")
