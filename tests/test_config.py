import json

import pytest

from pear import PearConfig


def test_defaults_follow_the_spec():
    c = PearConfig()
    assert c.adapter == "parallel"
    assert c.rank == 8
    assert c.scale == 0.1
    assert c.act == "relu"
    assert c.init == "zero"
    assert c.sublayers == ("attn", "mlp")
    assert c.blocks is None and c.target is None
    assert c.importance == "taylor"
    assert c.prune_ratio == 0.5
    assert c.share == "matched"
    assert c.knowledge == "merge"


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.999])
def test_ratio_in_range_is_accepted(ratio):
    assert PearConfig(prune_ratio=ratio).prune_ratio == ratio


INVALID = [
    ({"prune_ratio": -0.1}, "prune_ratio"),
    ({"prune_ratio": 1.0}, "prune_ratio"),
    ({"prune_ratio": 1.5}, "prune_ratio"),
    ({"prune_ratio": float("nan")}, "prune_ratio"),
    ({"prune_ratio": "0.5"}, "prune_ratio"),
    ({"share": "random"}, "share"),
    ({"knowledge": "distil"}, "knowledge"),
    ({"importance": "fisher"}, "importance"),
    ({"adapter": "prefix"}, "adapter"),
    ({"act": "tanh"}, "act"),
    ({"init": "ones"}, "init"),
    ({"rank": 0}, "rank"),
    ({"rank": -3}, "rank"),
    ({"rank": 2.0}, "rank"),
    ({"rank": True}, "rank"),
    ({"scale": float("nan")}, "scale"),
    ({"scale": float("inf")}, "scale"),
    ({"scale": "0.1"}, "scale"),
    ({"scale": True}, "scale"),
    ({"sublayers": ()}, "sublayers"),
    ({"sublayers": ("attn", "ffn")}, "sublayers"),
    ({"blocks": (3, 1)}, "blocks"),
    ({"blocks": (2, 2)}, "blocks"),
    ({"blocks": (-1, 2)}, "blocks"),
    ({"blocks": (0, 1, 2)}, "blocks"),
    ({"blocks": (0.0, 2)}, "blocks"),
    ({"target": "blocks.(1"}, "target"),
    ({"target": "*attn"}, "target"),
    # Wrong types, e.g. from a hand-written JSON config, must still be ValueErrors.
    ({"blocks": 3}, "blocks"),
    ({"sublayers": None}, "sublayers"),
    ({"target": 5}, "target"),
]


@pytest.mark.parametrize("kwargs, field", INVALID, ids=[repr(k) for k, _ in INVALID])
def test_invalid_config_raises_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"PearConfig\.{field}\b"):
        PearConfig(**kwargs)


def test_round_trip_through_dict_and_json():
    c = PearConfig(adapter="sequential", rank=4, scale=0.5, act="gelu", init="random", sublayers=("mlp",),
                   blocks=(1, 3), target=r"blocks\.[12]\.", importance="magnitude", prune_ratio=0.25,
                   share="nearest", knowledge="frozen", seed=7)
    d = c.to_dict()
    assert d["sublayers"] == ["mlp"] and d["blocks"] == [1, 3]
    back = PearConfig.from_dict(json.loads(json.dumps(d)))
    assert back == c
    assert isinstance(back.sublayers, tuple) and isinstance(back.blocks, tuple)
    assert PearConfig.from_dict(PearConfig().to_dict()) == PearConfig()


def test_from_dict_rejects_unknown_field():
    d = PearConfig().to_dict()
    d["prune_rate"] = 0.5
    with pytest.raises(ValueError, match="prune_rate"):
        PearConfig.from_dict(d)


def test_from_dict_rejects_non_mapping():
    with pytest.raises(ValueError):
        PearConfig.from_dict([("rank", 8)])


def test_from_dict_validates_values():
    d = PearConfig().to_dict()
    d["share"] = "everything"
    with pytest.raises(ValueError, match=r"PearConfig\.share"):
        PearConfig.from_dict(d)
