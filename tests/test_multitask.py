import statistics
import time

import pytest
import torch

import pear
from pear import ImportanceTracker, MultiTaskModel, PearConfig, PearError

VIT = "vit_tiny_patch16_224"



def train_task(model_factory, directory, num_classes, seed, seed_backbone=0, **cfg):
    """Train and prune one task for a few steps on the shared backbone and save it."""
    model = model_factory("vit", seed=seed_backbone)
    model.reset_classifier(num_classes)
    pear.attach(model, PearConfig(prune_ratio=0.5, **cfg))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, num_classes, (8,), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = ImportanceTracker(model)
    for step in range(4):
        if step == 3:
            pear.prune_and_share(model, pear.make_plan(tracker.scores(), pear.adapters.pear_state(model).config, model))
            tracker.close()
            tracker = None
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if tracker is not None:
            tracker.update()
        opt.step()
    pear.save(model, directory, backbone=VIT, class_names=[f"{directory.name}{i}" for i in range(num_classes)])
    return directory


@pytest.fixture
def two_tasks(tmp_path, model_factory):
    a = train_task(model_factory, tmp_path / "a", 5, seed=1, share="rank")
    b = train_task(model_factory, tmp_path / "b", 3, seed=2, share="nearest", knowledge="frozen")
    return a, b


def test_tasks_on_one_backbone_match_separate_models(two_tasks, model_factory):
    a, b = two_tasks
    alone = {"a": pear.load(a, model_factory("vit"), backbone_name=VIT).eval(),
             "b": pear.load(b, model_factory("vit"), backbone_name=VIT).eval()}
    assert pear.share_map(alone["a"]) != pear.share_map(alone["b"])

    mt = MultiTaskModel(model_factory("vit"), backbone_name=VIT)
    mt.add_task("a", a)
    mt.add_task("b", b)
    mt.eval()
    assert mt.tasks == ["a", "b"] and mt.active == "a"
    assert mt.class_names == {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(3)]}
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for name in ["a", "b", "a", "b", "b", "a"]:
            mt.set_task(name)
            out = mt(x)
            assert out.shape == (4, 5 if name == "a" else 3)
            assert torch.equal(out, alone[name](x)), name
            assert pear.share_map(mt.model) == pear.share_map(alone[name])


def test_a_task_owns_an_adapter_where_the_active_task_pruned_it(tmp_path, model_factory):
    """Plain pruning (share='none') leaves a slot empty while that task is active; a task
    added then that keeps an adapter there still builds it."""
    a = train_task(model_factory, tmp_path / "a", 5, seed=1, share="none")
    b = train_task(model_factory, tmp_path / "b", 3, seed=2, share="none")
    alone = {d.name: pear.load(d, model_factory("vit"), backbone_name=VIT).eval() for d in (a, b)}
    empty = {d: {n for n, s in pear.adapters.slots(m).items() if s.adapter is None} for d, m in alone.items()}
    assert empty["a"] - empty["b"], "the seeds must prune different positions"
    mt = MultiTaskModel(model_factory("vit"), backbone_name=VIT)
    mt.add_task("a", a)
    mt.add_task("b", b)
    mt.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for name in ["b", "a"]:
            mt.set_task(name)
            assert torch.allclose(mt(x), alone[name](x), atol=1e-6), name


def test_unknown_task_and_other_backbone_are_refused(two_tasks, tmp_path, model_factory):
    a, _ = two_tasks
    mt = MultiTaskModel(model_factory("vit"), backbone_name=VIT)
    with pytest.raises(PearError, match="no task loaded"):
        mt(torch.zeros(1, 3, 32, 32))
    mt.add_task("a", a)
    with pytest.raises(PearError, match="unknown task 'c'; loaded: a"):
        mt.set_task("c")
    with pytest.raises(PearError, match="already loaded"):
        mt.add_task("a", a)
    other = train_task(model_factory, tmp_path / "other", 4, seed=4, seed_backbone=1)
    with pytest.raises(PearError, match="fingerprint"):
        mt.add_task("other", other)
    assert mt.tasks == ["a"] and mt.active == "a"


def test_switching_tasks_costs_far_less_than_a_forward_pass(two_tasks, model_factory):
    a, b = two_tasks
    mt = MultiTaskModel(model_factory("vit"), backbone_name=VIT)
    mt.add_task("a", a)
    mt.add_task("b", b)
    mt.eval()
    x = torch.randn(8, 3, 32, 32)

    def median_seconds(fn, n):
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with torch.no_grad():
        mt(x)  # warm-up
        forward = median_seconds(lambda i: mt(x), 9)
    switch = median_seconds(lambda i: mt.set_task("ab"[i % 2]), 41)
    print(f"set_task {switch * 1e6:.1f} us, forward pass of the tiny ViT (batch 8) {forward * 1e3:.2f} ms, "
          f"ratio {forward / switch:.0f}x")
    assert switch < forward / 10
