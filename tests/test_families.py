"""The backbone map (pear.families): one entry per family says where the positions,
their shapes, the head modules and the LoRA targets are; attach, the checkpoint and the
harness's LoRA ask it. A distilled DeiT has two heads (head, head_dist), both trained,
saved and loaded."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import pear
from pear import families
from pear.checkpoint import fingerprint, load, read_checkpoint, save

def test_a_distilled_deit_reloads_with_both_trained_heads(tmp_path, model_factory, batch_factory):
    # Saved with the fingerprint taken before training, as the harness does.
    model = model_factory("deit_distilled")
    fp = fingerprint(model)
    pear.attach(model)
    x, y = batch_factory("deit_distilled")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    folder = save(model, tmp_path / "ckpt", fingerprint_value=fp)
    model.eval()
    reloaded = load(folder, model_factory("deit_distilled"))
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert read_checkpoint(folder).info["head"] == ["head", "head_dist"]


def test_the_heads_are_left_out_of_the_fingerprint(model_factory):
    a, b = model_factory("deit_distilled"), model_factory("deit_distilled")
    with torch.no_grad():
        b.head_dist.weight.add_(1.0)
        b.head.bias.add_(1.0)
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize("kind, family, heads", [("vit", "vit", ["head"]), ("deit_distilled", "vit", ["head", "head_dist"]),
                                                 ("cnn", "staged_cnn", ["classifier"])])
def test_each_model_finds_its_family_and_heads(model_factory, kind, family, heads):
    model = model_factory(kind)
    assert families.family_of(model).name == family
    assert list(families.heads(model)) == heads


def test_a_model_of_no_family_is_refused_by_name():
    with pytest.raises(pear.PearError, match="Sequential"):
        families.family_of(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_lora_targets_name_real_layers(model_factory, kind):
    model = model_factory(kind)
    pattern = families.family_of(model).lora_targets
    assert any(re.fullmatch(pattern, n) for n, _ in model.named_modules())


def test_a_registered_family_is_used_by_attach_and_the_checkpoint(tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(16, 16) for _ in range(2)])
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.fc(x)

    @families.register_family("toy_mlp")
    class ToyMLP(families.Family):
        def matches(self, model):
            return isinstance(model, Tiny)

        def candidates(self, model, cfg):
            return [families.Candidate(f"layers.{i}", model.layers, str(i), i) for i in range(len(model.layers))]

        def shapes(self, model, bases, cfg):
            return [(b.in_features, b.out_features, 1) for b in bases]

        def head_modules(self, model):
            return {"fc": model.fc}

    try:
        torch.manual_seed(0)
        model = Tiny()
        pear.attach(model, pear.PearConfig(rank=2, init="random"))
        assert pear.positions(model) == ["layers.0", "layers.1"]
        assert {n for n, p in model.named_parameters() if p.requires_grad and "adapter" not in n} == {"fc.weight", "fc.bias"}
        folder = save(model, tmp_path / "ckpt")
        assert read_checkpoint(folder).info["head"] == "fc"
        torch.manual_seed(0)
        fresh = Tiny()
        x = torch.randn(2, 16)
        torch.testing.assert_close(load(folder, fresh)(x), model(x))
    finally:
        families.FAMILIES.pop("toy_mlp")


def test_registering_a_family_name_twice_is_refused():
    with pytest.raises(pear.PearError, match="'vit'"):
        families.register_family("vit")(families.Family)
