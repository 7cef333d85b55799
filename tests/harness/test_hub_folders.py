"""Checkpoint folders as the hubs hand them out: transformers ViTs and timm exports, and folders that are neither."""

from __future__ import annotations

import json
import re

import pytest
import timm
import torch
from timm.models import save_for_hf

from pear.errors import PearError
from pear.harness.backbones import create_backbone
from pear.harness.hub import default_backbone, read_folder

transformers = pytest.importorskip("transformers")

# depth > 1, a patch size other than 16, an MLP width that is no whole multiple of the embedding width.
HF_SIZES = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=100,
                image_size=24, patch_size=6)


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every tensor, layer-norm scales included, so that any swapped key shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))


def _hf_folder(tmp_path, cls_name: str = "ViTModel", **config):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(**{**HF_SIZES, **config})
    model = getattr(transformers, cls_name)(cfg).eval()
    _perturb(model)
    model.save_pretrained(tmp_path)
    return model


def test_transformers_vit_folder_gives_the_same_cls_features(tmp_path):
    hf = _hf_folder(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model, data_cfg = create_backbone(None, 0, weights=tmp_path, img_size=None)
    model.eval()
    assert len(model.blocks) == 3 and model.patch_embed.patch_size == (6, 6)
    assert model.norm.eps == hf.config.layer_norm_eps == 1e-12
    assert data_cfg == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        theirs = hf(pixel_values=x).last_hidden_state[:, 0]
    assert ours.shape == theirs.shape == (2, 48)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_transformers_classifier_folder_keeps_its_head_and_normalisation(tmp_path):
    hf = _hf_folder(tmp_path, "ViTForImageClassification", num_labels=5, hidden_act="gelu_new", qkv_bias=False)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4, 0.5, 0.6],
                                                                   "image_std": [0.2, 0.3, 0.4]}))
    model, data_cfg = create_backbone(None, None, weights=tmp_path, img_size=None)
    model.eval()
    assert data_cfg == {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.4)}
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, atol=1e-5, rtol=0)


def test_transformers_vit_folder_at_another_resolution(tmp_path):
    _hf_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"made at 24 px: its position embeddings are resampled to 36 px"):
        model, _ = create_backbone(None, 4, weights=tmp_path, img_size=36)  # 6x6 patches instead of 4x4
    assert model.pos_embed.shape == (1, 1 + 36, 48)
    assert model(torch.randn(1, 3, 36, 36)).shape == (1, 4)


def test_canonical_sizes_get_timm_name(tmp_path):
    cfg = transformers.ViTConfig()  # google/vit-base-patch16-224-in21k's sizes; config only, no weights needed
    cfg.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert default_backbone(tmp_path) == "vit_base_patch16_224"
    assert read_folder(tmp_path).kind == "transformers"


def test_timm_hub_folder(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", depth=2, embed_dim=32, num_heads=2, patch_size=8,
                               img_size=32, num_classes=7).eval()
    _perturb(source)
    save_for_hf(source, str(tmp_path), safe_serialization=True)
    assert default_backbone(tmp_path) == "vit_tiny_patch16_224"
    model, data_cfg = create_backbone(None, None, weights=tmp_path, img_size=32)
    model.eval()
    assert data_cfg == {"mean": tuple(source.pretrained_cfg["mean"]), "std": tuple(source.pretrained_cfg["std"])}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=1e-6, rtol=0)
    fresh, _ = create_backbone(None, 3, weights=tmp_path, img_size=32)  # a new head for the task
    assert fresh(x).shape == (2, 3)


def test_default_backbone_without_a_folder(tmp_path):
    assert default_backbone(None) == "tf_efficientnet_lite0"
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert default_backbone(tmp_path / "w.safetensors") == "tf_efficientnet_lite0"


@pytest.mark.parametrize(
    "files, expected",
    [
        ({}, r"no config\.json; found nothing"),
        ({"weights.safetensors": b"", "notes.txt": b"hi"},
         r"no config\.json; found \['notes\.txt', 'weights\.safetensors'\]"),
        ({"config.json": b'{"model_type": "bert", "architectures": ["BertModel"]}', "model.safetensors": b""},
         r"transformers 'bert' model \(BertModel\)"),
        ({"config.json": b'{"architecture": "vit_tiny_patch16_224"}'}, r"no model\.safetensors or pytorch_model\.bin"),
        ({"config.json": b'{"hidden": 3}'}, r"neither 'architecture' \(timm\) nor 'model_type'"),
        ({"config.json": b"{not json"}, r"not readable JSON"),
    ],
)
def test_folder_that_is_neither(tmp_path, files, expected):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for call in (lambda: create_backbone(None, 3, weights=tmp_path), lambda: default_backbone(tmp_path)):
        with pytest.raises(PearError, match="neither a HuggingFace transformers ViT folder") as err:
            call()
        assert re.search(expected, str(err.value)), str(err.value)


def test_a_name_is_needed_without_a_folder():
    with pytest.raises(PearError, match="needs a timm model name"):
        create_backbone(None, 3)


def test_a_folder_refuses_a_backbone_it_does_not_fit(tmp_path):
    _hf_folder(tmp_path / "hf")
    with pytest.raises(PearError, match=r"transformers 'vit_w48_d3_h3_patch6_24' checkpoint .* does not fit the "
                                        r"backbone 'tf_efficientnet_lite0': leave the backbone name out"):
        create_backbone("tf_efficientnet_lite0", 3, weights=tmp_path / "hf")
    model, _ = create_backbone("vit_small_patch16_224", 3, weights=tmp_path / "hf", img_size=None)  # sizes: config's
    assert model.embed_dim == 48
    source = timm.create_model("vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, img_size=32)
    save_for_hf(source, str(tmp_path / "timm"), safe_serialization=True)
    with pytest.raises(PearError, match=r"timm 'vit_tiny_patch16_224' checkpoint"):
        create_backbone("vit_small_patch16_224", 3, weights=tmp_path / "timm", img_size=32)


def test_pear_train_takes_the_backbone_from_the_folder(tmp_path, tiny_vtab):
    import yaml

    from pear.cli import main

    _hf_folder(tmp_path / "hf")
    run = tmp_path / "run"
    rc = main(["train", "--data", str(tiny_vtab), "--task", "toy", "--out", str(run), "--weights", str(tmp_path / "hf"),
               "--method", "adapter", "--epochs", "1", "--batch-size", "16", "--workers", "0",
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    recorded = yaml.safe_load((run / "args.yaml").read_text())
    # No --img-size, no --backbone: both are the folder's own (24 px; sizes timm has no name for).
    assert (recorded["backbone"], recorded["img_size"]) == ("vit_w48_d3_h3_patch6_24", 24)
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0  # rebuilt from the same folder


def test_a_folder_decides_its_resolution_and_recorded_name(tmp_path):
    """The issue's folder: 2 blocks of width 64, patch 4, 32 px, sizes that no timm name has. It trained at
    224 px (timm's default for the generic ViT it was built from) and was recorded as vit_base_patch16_224."""
    from pear.harness.options import TrainConfig

    _hf_folder(tmp_path / "hf", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
               image_size=32, patch_size=4)
    cfg = TrainConfig(data="d", task="t", out="o", weights=str(tmp_path / "hf"))
    assert (cfg.backbone, cfg.img_size) == ("vit_w64_d2_h2_patch4_32", 32)
    model, _ = create_backbone(cfg.backbone, 3, weights=cfg.weights, img_size=cfg.img_size)
    assert model.pos_embed.shape == (1, 1 + 8 * 8, 64)  # the folder's own grid, nothing resampled
    # A timm folder made at 48 px, whose architecture's default is 224 px.
    source = timm.create_model("vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, patch_size=8, img_size=48)
    save_for_hf(source, str(tmp_path / "timm"), safe_serialization=True)
    cfg = TrainConfig(data="d", task="t", out="o", weights=str(tmp_path / "timm"))
    assert (cfg.backbone, cfg.img_size) == ("vit_tiny_patch16_224", 48)
    # A name and a size given with the folder still win.
    cfg = TrainConfig(data="d", task="t", out="o", weights=str(tmp_path / "hf"), img_size=40)
    assert cfg.img_size == 40
