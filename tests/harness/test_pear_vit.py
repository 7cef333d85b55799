"""The built-in transformer: Pear's own ViT, its shipped weights, loaded offline and checked by hash."""

import hashlib
import shutil
import warnings

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

import pear
from pear.errors import PearError
from pear.harness import backbones
from pear.harness.backbones import BUILTIN_WEIGHTS, create_backbone
from pear.harness.pear_vit import PEAR_VIT, PEAR_VIT_SHA256


def test_the_shipped_file_has_the_recorded_sha256():
    path = BUILTIN_WEIGHTS[PEAR_VIT].locate()
    assert path.is_file() and path.stat().st_size < 20 * 2**20  # the limit for a file in git
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PEAR_VIT_SHA256


def test_builtin_weights_load_offline_into_a_timm_vit_with_a_fresh_head():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning: the weights are built in
        model, data_cfg = create_backbone(PEAR_VIT, num_classes=10)
    assert isinstance(model, VisionTransformer) and len(model.blocks) == 6 and model.embed_dim == 192
    assert data_cfg == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert model.head.out_features == 10
    shipped = load_file(BUILTIN_WEIGHTS[PEAR_VIT].locate())
    state = model.state_dict()
    assert set(shipped) == {k for k in state if not k.startswith("head.")}
    for k, v in shipped.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_every_position_can_share_with_every_other():
    model, _ = create_backbone(PEAR_VIT, num_classes=3)
    pear.attach(model)
    slots = pear.slots(model)
    assert len(slots) == 12 and len({s.info.signature for s in slots.values()}) == 1


def test_random_weights_are_the_same_architecture_untrained():
    torch.manual_seed(0)
    random_model, _ = create_backbone(PEAR_VIT, num_classes=3, weights="random")
    pretrained, _ = create_backbone(PEAR_VIT, num_classes=3)
    assert random_model.state_dict().keys() == pretrained.state_dict().keys()
    assert not torch.equal(random_model.pos_embed, pretrained.pos_embed)


def test_a_damaged_weights_file_is_refused_naming_it(tmp_path, monkeypatch):
    bad = tmp_path / "pear_vit.safetensors"
    shutil.copy(BUILTIN_WEIGHTS[PEAR_VIT].locate(), bad)
    with bad.open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\0")
    entry = BUILTIN_WEIGHTS[PEAR_VIT]
    monkeypatch.setitem(BUILTIN_WEIGHTS, PEAR_VIT, type(entry)(entry.description, lambda: bad, entry.mean, entry.std,
                                                               by_name=True, sha256=entry.sha256))
    with pytest.raises(PearError, match=f"{bad}.*SHA-256"):
        create_backbone(PEAR_VIT, num_classes=3)
    bad.unlink()
    with pytest.raises(PearError, match="missing"):
        create_backbone(PEAR_VIT, num_classes=3)


def test_registered_with_timm_and_built_for_32px():
    assert timm.is_model(PEAR_VIT)
    model = timm.create_model(PEAR_VIT)
    assert model.num_classes == 0 and model.patch_embed.img_size == (32, 32)
    assert backbones.create_backbone  # the harness module imports the registration
