"""`checkpoint_kinds`: which kind a method saves, which kind a folder holds, and one way
to load either kind, onto a fresh backbone or back into the model that saved it."""

import json

import pytest
import torch

from pear.checkpoint import fingerprint
from pear.config import PearConfig
from pear.errors import BackboneMismatch, PearError
from pear.harness.checkpoint_kinds import PEAR, PLAIN, kind_for, kind_of, open_checkpoint, save_checkpoint
from pear.harness.methods import prepare


def test_the_methods_with_pear_adapters_save_pear_checkpoints():
    assert [kind_for(m) for m in ("adapter", "pear", "prune")] == [PEAR] * 3
    assert [kind_for(m) for m in ("linear", "full", "peft-lora", "lora", "peft-lora-eq")] == [PLAIN] * 5


def test_a_folder_that_is_no_checkpoint_is_named(tmp_path):
    with pytest.raises(PearError, match=f"checkpoint folder {tmp_path / 'nowhere'} does not exist"):
        kind_of(tmp_path / "nowhere")
    with pytest.raises(PearError, match="is not a checkpoint folder: expected pear_config.json .* or "
                                        "run_config.json"):
        open_checkpoint(tmp_path)


def _trained(model_factory, method: str, seed: int = 0):
    """(backbone fingerprint, a model prepared for `method` whose trainable tensors are random)."""
    model = model_factory("vit", seed=seed)
    fp = fingerprint(model)
    model = prepare(model, method, PearConfig(rank=4, scale=1.0))
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)
    return fp, model.eval()


def _saved(tmp_path, model_factory, method: str):
    fp, model = _trained(model_factory, method)
    save_checkpoint(model, tmp_path / method, method=method, backbone="vit_tiny_patch16_224", class_names=None,
                    fingerprint_value=fp, meta={"rank": 4}, weights="random")
    return model, open_checkpoint(tmp_path / method)


@pytest.mark.parametrize("method, kind, files", [
    ("pear", PEAR, ("adapters.safetensors", "pear_config.json", "README.md")),
    ("linear", PLAIN, ("weights.safetensors", "run_config.json")),
])
def test_a_saved_checkpoint_opens_as_its_kind(tmp_path, model_factory, method, kind, files):
    _, saved = _saved(tmp_path, model_factory, method)
    assert kind_of(tmp_path / method) == saved.kind == kind
    assert saved.path == tmp_path / method and saved.files == files
    assert {f.name for f in saved.path.iterdir()} == set(files)
    assert saved.info == json.loads(saved.json_file.read_text())
    assert (saved.task is not None) == (kind == PEAR)


@pytest.mark.parametrize("method", ["pear", "linear", "full"])
def test_either_kind_loads_onto_a_fresh_backbone_and_back_into_its_model(tmp_path, model_factory, vit_batch,
                                                                          method):
    model, saved = _saved(tmp_path, model_factory, method)
    x = vit_batch[0]
    with torch.no_grad():
        want = model(x)
        loaded = saved.load(model_factory("vit"), backbone_name="vit_tiny_patch16_224").eval()
        assert torch.equal(loaded(x), want)
        _, other = _trained(model_factory, method)  # the same structure; its trained tensors moved below
        torch.manual_seed(8)
        for p in other.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
        assert not torch.equal(other(x), want)
        saved.restore(other)
        assert torch.equal(other(x), want)


@pytest.mark.parametrize("method", ["pear", "linear"])
def test_either_kind_refuses_other_backbone_weights(tmp_path, model_factory, method):
    _, saved = _saved(tmp_path, model_factory, method)
    with pytest.raises(BackboneMismatch, match="fingerprint"):
        saved.load(model_factory("vit", seed=1), backbone_name="vit_tiny_patch16_224")


def test_a_damaged_checkpoint_is_refused_when_opened(tmp_path, model_factory):
    _, saved = _saved(tmp_path, model_factory, "linear")
    tensors = saved.path / "weights.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-8])
    with pytest.raises(PearError, match="weights.safetensors"):
        open_checkpoint(saved.path)
