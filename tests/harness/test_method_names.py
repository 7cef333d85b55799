"""The Pear config a training method trains with: derived in one place
(`TrainingMethod.config`), held once per run (`TrainConfig.pear_config`) and handed to the
method's function by `methods.prepare`."""

import pytest

from pear.adapters import pear_state
from pear.config import PearConfig
from pear.harness.method_names import TRAINING_METHODS, pear_config_for, register_method
from pear.harness.methods import prepare
from pear.harness.options import TrainConfig


def test_a_methods_fixed_options_go_over_the_given_ones():
    given = PearConfig(prune_ratio=0.25, share="matched", rank=4)
    assert TRAINING_METHODS.get("adapter").config(given).prune_ratio == 0.0
    assert TRAINING_METHODS.get("prune").config(given).share == "none"
    assert TRAINING_METHODS.get("pear").config(given) == given
    assert (given.prune_ratio, given.share) == (0.25, "matched")  # the given config is not changed
    for name in ("adapter", "pear", "prune", "linear"):
        method = TRAINING_METHODS.get(name)
        once = method.config(given)
        assert once is not given and method.config(once) == once  # derived again: the same
        assert pear_config_for(name, given) == once
    assert pear_config_for("not-a-method", given) == given


@pytest.fixture
def fixed_rank_method():
    """A method registered by the test that fixes rank 2 and records the config it is given."""
    seen = []

    @register_method("toy-rank2", help="a test's method", fixed={"rank": 2})
    def toy(model, config, lora_alpha=None):
        seen.append(config)
        return model

    yield seen
    TRAINING_METHODS.unregister("toy-rank2")


def test_prepare_hands_a_method_the_config_it_trains_with(fixed_rank_method, model_factory):
    prepare(model_factory("vit"), "toy-rank2", PearConfig(rank=8, scale=3.0))
    assert [(c.rank, c.scale) for c in fixed_rank_method] == [(2, 3.0)]
    model = prepare(model_factory("vit"), "prune", PearConfig(share="matched"))
    assert pear_state(model).config.share == "none"


def test_a_runs_config_is_derived_once_and_again_only_when_its_inputs_change():
    cfg = TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", "epochs": 2, "method": "prune",
                                 "share": "matched", "rank": 4})
    derived = cfg.pear_config()
    assert derived.share == "none" and derived.rank == 4 and cfg.pear.share == "matched"
    assert cfg.pear_config() is derived  # held, not derived on every access
    cfg.pear = PearConfig.from_dict({**cfg.pear.to_dict(), "rank": 6})
    assert cfg.pear_config().rank == 6 and cfg.pear_config().share == "none"
    cfg.method = "pear"
    assert cfg.pear_config().share == "matched"
    cfg.pear.rank = 2  # a field set in place is seen too
    assert cfg.pear_config().rank == 2 and cfg.pear_config() is cfg.pear_config()
