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


def test_timm_create_model_pretrained_loads_the_shipped_weights_offline():
    # timm users reach weights through create_model(pretrained=True); the built-in file is its source.
    model = timm.create_model(PEAR_VIT, pretrained=True, num_classes=4)
    shipped = load_file(BUILTIN_WEIGHTS[PEAR_VIT].locate())
    state = model.state_dict()
    for k, v in shipped.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)
    assert model.head.out_features == 4
    headless = timm.create_model(PEAR_VIT, pretrained=True)
    assert headless(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_timm_create_model_pretrained_refuses_a_damaged_file(tmp_path, monkeypatch):
    from pear.harness import pear_vit

    bad = tmp_path / "pear_vit.safetensors"
    bad.write_bytes(BUILTIN_WEIGHTS[PEAR_VIT].locate().read_bytes()[:-4] + b"\0\0\0\0")
    monkeypatch.setattr(pear_vit, "weights_file", lambda: bad)
    with pytest.raises(PearError, match="SHA-256"):
        timm.create_model(PEAR_VIT, pretrained=True)


@pytest.mark.parametrize("order", ["pear first", "timm first"])
def test_import_pear_registers_the_model_for_timm_without_importing_torch(order):
    import subprocess
    import sys

    first = ("import pear, sys; assert 'torch' not in sys.modules and 'timm' not in sys.modules; import timm"
             if order == "pear first" else "import timm, pear")
    code = f"{first}; m = timm.create_model({PEAR_VIT!r}, pretrained=True); print(m.embed_dim)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "192"
