"""save_pretrained / from_pretrained: the base model is named in the checkpoint (name, weights
source and SHA-256), a model card sits beside it, and the recorded weights rebuild the backbone."""

import json

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import pear
from pear import cli
from pear.checkpoint import recorded_weights
from pear.harness.backbones import create_backbone
from pear.harness.pear_vit import PEAR_VIT, PEAR_VIT_SHA256

TINY = dict(patch_size=8, depth=2, embed_dim=32, num_heads=2)


def _task(model, batch):
    pear.attach(model, pear.PearConfig(init="random", prune_ratio=0.5))
    scores = {n: float(i) for i, n in enumerate(pear.positions(model))}
    pear.prune_and_share(model, pear.make_plan(scores, model.pear_state.config, model))
    return model.eval()


def test_builtin_vit_round_trip_with_no_backbone_given(tmp_path):
    model = timm.create_model(PEAR_VIT, pretrained=True, num_classes=3)
    _task(model, None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    pear.save_pretrained(model, tmp_path / "ckpt", class_names=["cat", "dog", "eel"], meta={"task": "pets"})
    info = json.loads((tmp_path / "ckpt" / "pear_config.json").read_text())
    assert info["backbone"]["name"] == PEAR_VIT
    assert info["backbone"]["weights_source"] == "builtin" and info["backbone"]["weights_sha256"] == PEAR_VIT_SHA256
    card = (tmp_path / "ckpt" / "README.md").read_text()
    for text in ("pets", "cat, dog, eel", PEAR_VIT, PEAR_VIT_SHA256, "## Pruning map", "blocks.5.mlp",
                 "Stored parameters", "shared"):
        assert text in card, text
    again = pear.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(again(x), want, rtol=1e-5, atol=1e-5)
    mt = pear.MultiTaskModel(timm.create_model(PEAR_VIT, pretrained=True, num_classes=3))
    mt.add_task("pets", tmp_path / "ckpt")  # the same folder serves a multi-task model


def test_load_on_other_weights_speaks_library_terms(tmp_path):
    model = timm.create_model(PEAR_VIT, pretrained=True, num_classes=3)
    pear.save_pretrained(_task(model, None), tmp_path / "ckpt")
    with pytest.raises(pear.PearError) as err:
        pear.load(tmp_path / "ckpt", timm.create_model(PEAR_VIT, num_classes=3))  # random init
    assert "--weights" not in str(err.value) and "from_pretrained" in str(err.value)
    assert "builtin" in str(err.value)


def _weights_file(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "w" / "vit.safetensors"
    path.parent.mkdir()
    save_file(timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, **TINY).state_dict(), path)
    return path


def _saved_on(path, tmp_path):
    model, _ = create_backbone("vit_tiny_patch16_224", 3, path, img_size=32, model_kwargs=TINY)
    _task(model, None)
    ckpt = tmp_path / "ckpt"
    pear.save(model, ckpt, backbone="vit_tiny_patch16_224", weights=path,
              meta={"img_size": 32, "model_kwargs": TINY, "seed": 0})
    return ckpt


def test_recorded_weights_file_is_used_while_it_is_there_and_unchanged(tmp_path):
    path = _weights_file(tmp_path)
    ckpt = _saved_on(path, tmp_path)
    info = json.loads((ckpt / "pear_config.json").read_text())
    assert info["backbone"]["weights_source"] == str(path.resolve())
    assert info["backbone"]["weights_sha256"] == pear.atomic.sha256_file(path)
    assert recorded_weights(info) == str(path.resolve())
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(image)
    assert cli.main(["predict", "--ckpt", str(ckpt), "--device", "cpu", str(image)]) == 0  # no --weights
    assert isinstance(pear.from_pretrained(ckpt), torch.nn.Module)

    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert recorded_weights(info) is None  # another file now: not used


def test_without_the_recorded_file_the_cli_asks_for_weights(tmp_path, capsys):
    path = _weights_file(tmp_path)
    ckpt = _saved_on(path, tmp_path)
    path.rename(tmp_path / "moved.safetensors")
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 40)).save(image)
    assert cli.main(["predict", "--ckpt", str(ckpt), "--device", "cpu", str(image)]) == 2
    assert "pass the same --weights" in capsys.readouterr().err
