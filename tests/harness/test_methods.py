"""How each training method prepares a backbone: here the peft LoRA baselines."""

import pytest

import pear
from pear import PearConfig
from pear.harness.methods import lora_rank, prepare


def _trainable_lora(model):
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_equal_budget_lora_is_the_rank_closest_to_the_adapters_parameters(kind, model_factory):
    config = PearConfig()
    adapter = model_factory(kind)
    pear.attach(adapter, config)
    budget = adapter.pear_state.unpruned_adapter_params
    rank = lora_rank(model_factory(kind), config)
    lora = {r: _trainable_lora(prepare(model_factory(kind), "peft-lora", PearConfig(rank=r))) for r in
            (rank - 1, rank, rank + 1) if r >= 1}
    assert _trainable_lora(prepare(model_factory(kind), "peft-lora-eq", config)) == lora[rank]
    assert abs(lora[rank] - budget) == min(abs(v - budget) for v in lora.values())


def test_lora_alpha_sets_peft_scaling(model_factory):
    model = prepare(model_factory("vit"), "peft-lora", PearConfig(rank=4), lora_alpha=32)
    scalings = [m.scaling["default"] for m in model.modules() if hasattr(m, "scaling")]
    assert scalings and all(s == 8.0 for s in scalings)
    default = prepare(model_factory("vit"), "peft-lora", PearConfig(rank=4))
    assert all(m.scaling["default"] == 1.0 for m in default.modules() if hasattr(m, "scaling"))


def test_a_pear_run_with_the_distill_knowledge_checkpoint_trains_and_stores_no_extra_bytes(tmp_path):
    from test_suite import TINY, make_task

    from pear.harness.options import TrainConfig
    from pear.harness.train import train

    make_task(tmp_path / "data")
    metrics = {}
    for mode in ("none", "distill"):
        cfg = TrainConfig.from_dict({**TINY, "data": str(tmp_path / "data"), "task": "toy", "knowledge": mode,
                                     "distill_steps": 5, "out": str(tmp_path / mode), "progress": False})
        metrics[mode] = train(cfg)
        assert f"knowledge {mode}" in (tmp_path / mode / "train.log").read_text()
    assert metrics["distill"]["plan_digest"] == metrics["none"]["plan_digest"]  # same decisions, other weights
    tensors = [(tmp_path / mode / "checkpoint" / "adapters.safetensors").stat().st_size for mode in ("none", "distill")]
    assert tensors[0] == tensors[1]  # the JSON differs only by the mode's name
