"""Backbone construction and weight loading: real built-in weights, round trips, bad files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from pear.errors import PearError
from pear.harness.backbones import BUILTIN_WEIGHTS, create_backbone

TINY_VIT = "vit_tiny_patch16_224"
TINY_KWARGS = {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 8}
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def tiny_vit(num_classes: int | None = 10, weights=None, img_size: int = 32, **overrides) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = create_backbone(
            TINY_VIT, num_classes, weights, img_size, model_kwargs={**TINY_KWARGS, **overrides}
        )
    return model.eval()


def save_google_npz(model: torch.nn.Module, path: Path) -> None:
    """Write a timm ViT in the key layout of Google's ViT .npz checkpoints (as timm's _load_weights reads it)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    for i in range(len(model.blocks)):
        t, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        arrays[g + "LayerNorm_0/scale"] = sd[t + "norm1.weight"]
        arrays[g + "LayerNorm_0/bias"] = sd[t + "norm1.bias"]
        arrays[g + "LayerNorm_2/scale"] = sd[t + "norm2.weight"]
        arrays[g + "LayerNorm_2/bias"] = sd[t + "norm2.bias"]
        qkv_w = np.split(sd[t + "attn.qkv.weight"], 3)
        qkv_b = np.split(sd[t + "attn.qkv.bias"], 3)
        for part, w, b in zip(("query", "key", "value"), qkv_w, qkv_b):
            arrays[g + f"MultiHeadDotProductAttention_1/{part}/kernel"] = w.T.reshape(dim, heads, -1)
            arrays[g + f"MultiHeadDotProductAttention_1/{part}/bias"] = b.reshape(heads, -1)
        arrays[g + "MultiHeadDotProductAttention_1/out/kernel"] = (
            sd[t + "attn.proj.weight"].reshape(dim, heads, -1).transpose(1, 2, 0)
        )
        arrays[g + "MultiHeadDotProductAttention_1/out/bias"] = sd[t + "attn.proj.bias"]
        for r in range(2):
            arrays[g + f"MlpBlock_3/Dense_{r}/kernel"] = sd[t + f"mlp.fc{r + 1}.weight"].T
            arrays[g + f"MlpBlock_3/Dense_{r}/bias"] = sd[t + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **arrays)


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.fixture
def source() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_vit(num_classes=None)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def photo_batch(mean, std) -> torch.Tensor:
    from skimage import data

    def prepare(img: np.ndarray) -> torch.Tensor:
        image = Image.fromarray(img).convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
        pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255
        return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    return torch.stack([prepare(data.chelsea()), prepare(data.coffee())])


def test_lite0_builtin_weights_recognise_a_cat_and_an_espresso():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, config = create_backbone("tf_efficientnet_lite0", None)
    assert config == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    batch = photo_batch(config["mean"], config["std"])
    probs = logits(model.eval(), batch).softmax(-1)
    top5 = probs.topk(5)
    print("lite0 top-5 (chelsea, coffee):", top5.indices.tolist(), top5.values.numpy().round(3).tolist())
    assert top5.indices[0, 0].item() in CAT_CLASSES
    assert probs[0, sorted(CAT_CLASSES)].sum() > 0.5
    assert top5.indices[1, 0].item() in COFFEE_CLASSES

    fresh, _ = create_backbone("tf_efficientnet_lite0", 7, weights="builtin")
    fresh.eval()
    assert fresh.get_classifier().out_features == 7
    assert torch.equal(features(fresh, batch[:1]), features(model, batch[:1]))


def test_builtin_weights_are_described():
    assert "tf_efficientnet_lite0" in BUILTIN_WEIGHTS
    assert "ImageNet" in BUILTIN_WEIGHTS["tf_efficientnet_lite0"].description


@pytest.mark.parametrize(
    ("suffix", "wrap"),
    [(".safetensors", None), (".pth", None), (".pt", "state_dict"), (".bin", "model")],
)
def test_state_dict_round_trip(tmp_path, source, x, suffix, wrap):
    path = tmp_path / f"tiny{suffix}"
    state = source.state_dict()
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({wrap: state, "epoch": 3} if wrap else state, path)

    assert torch.equal(logits(tiny_vit(None, path), x), logits(source, x))
    fresh = tiny_vit(5, path)
    assert fresh.get_classifier().out_features == 5
    assert torch.equal(features(fresh, x), features(source, x))


def test_keeping_the_head_adopts_the_checkpoint_head_size(tmp_path, x):
    torch.manual_seed(0)
    finetuned = tiny_vit(num_classes=10)
    path = tmp_path / "finetuned.safetensors"
    save_file(finetuned.state_dict(), path)
    assert torch.equal(logits(tiny_vit(None, path), x), logits(finetuned, x))


def test_google_npz_round_trip(tmp_path, source, x):
    path = tmp_path / "ViT-tiny.npz"
    save_google_npz(source, path)
    assert torch.allclose(logits(tiny_vit(None, path), x), logits(source, x), atol=1e-5)
    fresh = tiny_vit(3, path)
    assert fresh.get_classifier().out_features == 3
    assert torch.allclose(features(fresh, x), features(source, x), atol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_position_embeddings_are_resampled_for_another_image_size(tmp_path, source, suffix):
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".npz":
        save_google_npz(source, path)
    else:
        save_file(source.state_dict(), path)
    model = tiny_vit(4, path, img_size=48)
    assert model.pos_embed.shape == (1, 1 + 6 * 6, 64)
    assert torch.equal(model.cls_token, source.cls_token)
    assert logits(model, torch.randn(1, 3, 48, 48)).shape == (1, 4)


def test_checkpoint_of_another_architecture_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    with pytest.raises(PearError) as err:
        tiny_vit(10, path)
    message = str(err.value)
    assert str(path) in message
    assert "missing" in message and "patch_embed.proj.weight" in message
    assert "unexpected" in message and "conv_stem.weight" in message


def test_checkpoint_of_another_width_lists_shape_mismatches(tmp_path):
    path = tmp_path / "narrow.safetensors"
    save_file(tiny_vit(10, embed_dim=32).state_dict(), path)
    with pytest.raises(PearError, match=r"shape mismatches.*blocks\.0\.attn\.qkv\.weight: file \(96, 32\) vs model \(192, 64\)"):
        tiny_vit(10, path)


def test_npz_of_another_depth_or_width_is_refused(tmp_path):
    deeper = tmp_path / "deeper.npz"
    save_google_npz(tiny_vit(None, depth=3), deeper)
    with pytest.raises(PearError, match="3 transformer blocks but the backbone 'vit_tiny_patch16_224' has 2"):
        tiny_vit(10, deeper)
    narrow = tmp_path / "narrow.npz"
    save_google_npz(tiny_vit(None, embed_dim=32), narrow)
    with pytest.raises(PearError, match="embedding width 32 but the backbone 'vit_tiny_patch16_224' has 64"):
        tiny_vit(10, narrow)


def test_npz_for_a_convolutional_backbone_is_refused(tmp_path, source):
    path = tmp_path / "vit.npz"
    save_google_npz(source, path)
    with pytest.raises(PearError, match="ViT and BiT"):
        create_backbone("tf_efficientnet_lite0", 10, path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_truncated_or_garbage_files_are_refused(tmp_path, source, suffix):
    good = tmp_path / f"good{suffix}"
    if suffix == ".npz":
        save_google_npz(source, good)
    elif suffix == ".safetensors":
        save_file(source.state_dict(), good)
    else:
        torch.save(source.state_dict(), good)
    content = good.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(content[: len(content) // 2])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (truncated, garbage):
        with pytest.raises(PearError, match=re.escape(str(path))):
            tiny_vit(10, path)


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": NotATensor()}, path)
    with pytest.raises(PearError, match=rf"{re.escape(str(path))} holds a pickled .*NotATensor object"):
        tiny_vit(10, path)


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "stats.pth"
    torch.save({"weight": torch.zeros(2), "accuracy": 0.9}, path)
    with pytest.raises(PearError, match=r"\['accuracy'\] are not tensors"):
        tiny_vit(10, path)


def test_missing_file_and_unsupported_suffix_are_refused(tmp_path):
    with pytest.raises(PearError, match="does not exist"):
        tiny_vit(10, tmp_path / "absent.safetensors")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"\0")
    with pytest.raises(PearError, match=r"suffix '\.h5'"):
        tiny_vit(10, odd)


def test_unknown_model_names_are_refused_with_suggestions():
    with pytest.raises(PearError, match="vit_tiny_patch16_224"):
        create_backbone("vit_tiny_patch16_22", 10)
    with pytest.raises(PearError, match="unknown pretrained tag.*orig_in21k"):
        create_backbone("vit_base_patch16_224.bogus", 10)


def test_bad_model_kwargs_and_builtin_for_other_models_are_refused():
    with pytest.raises(PearError, match="model_kwargs"):
        create_backbone(TINY_VIT, 10, img_size=32, model_kwargs={**TINY_KWARGS, "no_such_option": 1})
    with pytest.raises(PearError, match="model_kwargs"):
        create_backbone(TINY_VIT, 10, img_size=32, model_kwargs={"num_classes": 3})
    with pytest.raises(PearError, match="builtin"):
        create_backbone(TINY_VIT, 10, "builtin", img_size=32, model_kwargs=TINY_KWARGS)


def test_random_init_warns_and_uses_the_pretrained_cfg_normalisation():
    with pytest.warns(UserWarning, match="no pretrained weights"):
        model, config = create_backbone(TINY_VIT, 10, img_size=32, model_kwargs=TINY_KWARGS)
    assert config == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert model.get_classifier().out_features == 10
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 64)


def test_img_size_is_ignored_by_convolutional_backbones():
    model, _ = create_backbone("tf_efficientnet_lite0", 2, img_size=64)
    assert logits(model.eval(), torch.randn(1, 3, 64, 64)).shape == (1, 2)


class RunsACommand:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_pickled_code_is_named_as_code(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(RunsACommand(), protocol=2))
    with pytest.raises(PearError, match=rf"{re.escape(str(path))} holds code \(a call of posix\.system\) and was "
                                        r"refused: nothing in it was run"):
        tiny_vit(10, path)
