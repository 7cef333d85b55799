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


@pytest.mark.parametrize("processor, mean, std", [
    ({"do_normalize": False}, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # the model saw pixel / 255 as it is
    ({"do_rescale": False, "image_mean": [127.5] * 3, "image_std": [127.5] * 3}, (0.5,) * 3, (0.5,) * 3),
    ({"rescale_factor": 1 / 127.5, "image_mean": [1.0] * 3, "image_std": [1.0] * 3}, (0.5,) * 3, (0.5,) * 3),
])
def test_preprocessor_rescaling_and_normalising_give_the_same_pixels(tmp_path, processor, mean, std):
    """Pear's images are pixel / 255 before they are normalised; a processor that rescales
    otherwise, or does not normalise, gets the mean and std that give the model its pixels."""
    _hf_folder(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    data_cfg = create_backbone(None, 3, weights=tmp_path)[1]
    assert data_cfg["mean"] == pytest.approx(mean) and data_cfg["std"] == pytest.approx(std)


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


def _train_on(folder, data, run, method: str = "pear") -> None:
    from pear.cli import main

    rc = main(["train", "--data", str(data), "--task", "toy", "--out", str(run), "--weights", str(folder),
               "--img-size", "24", "--method", method, "--epochs", "1", "--batch-size", "16", "--workers", "0",
               "--no-progress", "--device", "cpu"])
    assert rc == 0


def _edit_json(path, **changes) -> str:
    original = path.read_text() if path.exists() else None
    data = json.loads(original) if original else {}
    path.write_text(json.dumps({**data, **changes}))
    return original


@pytest.mark.parametrize("method", ["adapter", "linear"])
def test_an_edited_folder_config_is_refused_by_its_checkpoint(tmp_path, tiny_vtab, capsys, method):
    from pear.cli import main

    _hf_folder(tmp_path / "hf")
    run = tmp_path / "run"
    _train_on(tmp_path / "hf", tiny_vtab, run, method)
    evaluate = ["eval", "--run", str(run), "--device", "cpu"]
    assert main(evaluate) == 0
    edits = [("config.json", {"hidden_act": "relu"}, r"config\.json:hidden_act was 'gelu', now 'relu'"),
             ("config.json", {"layer_norm_eps": 1e-6}, r"config\.json:layer_norm_eps was 1e-12, now 1e-06"),
             ("preprocessor_config.json", {"image_mean": [0.4, 0.5, 0.6]},
              r"preprocessor_config\.json:image_mean was \[0\.5, 0\.5, 0\.5\], now \[0\.4, 0\.5, 0\.6\]")]
    for file, change, message in edits:
        path = tmp_path / "hf" / file
        original = _edit_json(path, **change)
        capsys.readouterr()
        assert main(evaluate) == 2, change
        err = capsys.readouterr().err
        assert re.search(message, err) and "trained on a backbone set up otherwise" in err, err
        path.unlink()
        if original is not None:
            path.write_text(original)
    assert main(evaluate) == 0  # restored: accepted again


def _rewrite_config(folder, raw: str | None = None, **changes) -> None:
    path = folder / "config.json"
    if raw is not None:
        path.write_text(raw)
    else:
        _edit_json(path, **changes)


@pytest.mark.parametrize("changes, message", [
    ({"num_hidden_layers": 1000000}, r"config\.json's num_hidden_layers is 1000000; expected 1 to 256"),
    ({"hidden_size": 10**9}, r"config\.json's hidden_size is 1000000000; expected 1 to 16384"),
    ({"num_hidden_layers": 40}, r"give a backbone of \d+ parameters, but model\.safetensors holds only \d+ values"),
    ({"num_attention_heads": 5}, r"num_attention_heads 5 does not divide its hidden_size 48"),
    ({"layer_norm_eps": "tiny"}, r"config\.json's layer_norm_eps is 'tiny'; expected a number"),
    ({"layer_norm_eps": -1}, r"config\.json's layer_norm_eps is -1; expected a small positive number"),
    ({"qkv_bias": "false"}, r"config\.json's qkv_bias is 'false'; expected true or false"),
    ({"hidden_act": ["gelu"]}, r"config\.json's hidden_act is \['gelu'\]; expected a string"),
])
def test_transformers_config_fields_are_checked(tmp_path, changes, message):
    _hf_folder(tmp_path)
    _rewrite_config(tmp_path, **changes)
    with pytest.raises(PearError, match=message) as err:
        create_backbone(None, 3, weights=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_a_nan_size_is_named(tmp_path):
    _hf_folder(tmp_path)
    text = (tmp_path / "config.json").read_text()
    _rewrite_config(tmp_path, raw=re.sub(r'"hidden_size": \d+', '"hidden_size": NaN', text))
    with pytest.raises(PearError, match=r"config\.json's hidden_size is nan; expected an integer"):
        create_backbone(None, 3, weights=tmp_path)


@pytest.mark.parametrize("content, message", [
    ("[1]", r"preprocessor_config\.json holds a list, not an object"),
    ('{"image_mean": "red"}', r"preprocessor_config\.json's image_mean is 'red'; expected 3 finite numbers"),
    ('{"image_std": [0.5, 0, 0.5]}', r"image_std is \[0\.5, 0, 0\.5\]; expected 3 finite numbers above 0"),
    ('{"image_std": 0.25}', None),
    ('{"do_normalize": "yes"}', r"preprocessor_config\.json's do_normalize is 'yes'; expected true or false"),
    ('{"rescale_factor": 0}', r"preprocessor_config\.json's rescale_factor is 0; expected a number above 0"),
])
def test_preprocessor_config_is_checked(tmp_path, content, message):
    _hf_folder(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(content)
    if message is None:
        assert create_backbone(None, 3, weights=tmp_path)[1]["std"] == (0.25, 0.25, 0.25)
        return
    with pytest.raises(PearError, match=message):
        create_backbone(None, 3, weights=tmp_path)


def test_architectures_that_is_not_a_list_reads_as_a_name(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": "BertModel"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PearError, match=r"transformers 'bert' model \(BertModel\)"):
        default_backbone(tmp_path)


def _timm_folder(folder):
    source = timm.create_model("vit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2, patch_size=8, img_size=32)
    save_for_hf(source, str(folder), safe_serialization=True)
    return source


@pytest.mark.parametrize("changes, message", [
    ({"pretrained_cfg": [1, 2]}, r"config\.json's pretrained_cfg is \[1, 2\]; expected an object"),
    ({"pretrained_cfg": {"mean": "x"}}, r"config\.json's pretrained_cfg\.mean is 'x'; expected a list of 3 numbers"),
    ({"pretrained_cfg": {"std": [1, 2]}}, r"config\.json's pretrained_cfg\.std is \[1, 2\]; expected 3 finite"),
    ({"architecture": 5}, r"config\.json's architecture is 5; expected a string"),
    ({"model_args": {"depth": 1000000}}, r"config\.json's model_args\.depth is 1000000, beyond any real model"),
    ({"model_args": {"depth": 40, "embed_dim": 32, "num_heads": 2, "patch_size": 8, "img_size": 32}},
     r"architecture and model_args give a backbone of \d+ parameters, but model\.safetensors holds only"),
])
def test_timm_config_fields_are_checked(tmp_path, changes, message):
    _timm_folder(tmp_path)
    _rewrite_config(tmp_path, **changes)
    with pytest.raises(PearError, match=message) as err:
        create_backbone(None, 3, weights=tmp_path, img_size=32)
    assert str(tmp_path) in str(err.value)


def test_a_tagged_timm_folder_fits_the_name_it_gives(tmp_path):
    _timm_folder(tmp_path)
    _rewrite_config(tmp_path, architecture="vit_tiny_patch16_224.augreg_in21k")
    assert default_backbone(tmp_path) == "vit_tiny_patch16_224.augreg_in21k"
    model, _ = create_backbone("vit_tiny_patch16_224.augreg_in21k", 3, weights=tmp_path, img_size=32)
    assert model.embed_dim == 32
    model, _ = create_backbone(None, 3, weights=tmp_path, img_size=32)
    assert model.embed_dim == 32
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

