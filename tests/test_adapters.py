import pytest
import torch
from torch import nn

import pear
from pear import PearConfig
from pear.adapters import Bottleneck, ConvBottleneck, PearSlot, adapter_modules, pear_state

D, R = 48, 8  # width of the tiny ViTs, default rank


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "kind, adapter",
    [("vit", "parallel"), ("vit", "sequential"), ("vit", "lora"), ("deit", "parallel"),
     ("deit_distilled", "parallel"), ("cnn", "parallel")],
)
def test_zero_init_leaves_output_bit_identical(model_factory, batch_factory, kind, adapter):
    model = model_factory(kind).eval()
    x, _ = batch_factory(kind)
    with torch.no_grad():
        before = model(x)
    pear.attach(model, PearConfig(adapter=adapter))
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_random_init_changes_output(model_factory, batch_factory, kind):
    model = model_factory(kind).eval()
    x, _ = batch_factory(kind)
    with torch.no_grad():
        before = model(x)
    pear.attach(model, PearConfig(init="random", scale=1.0))
    with torch.no_grad():
        after = model(x)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("adapter", ["parallel", "sequential"])
def test_positions_on_a_12_block_vit(model_factory, adapter):
    model = model_factory("vit", depth=12)
    pear.attach(model, PearConfig(adapter=adapter))
    expected = [f"blocks.{i}.{k}" for i in range(12) for k in ("attn", "mlp")]
    assert pear.positions(model) == expected
    assert pear_state(model).positions == expected
    assert len(expected) == 24
    for name, slot in pear.slots(model).items():
        i, kind = int(name.split(".")[1]), name.split(".")[2]
        assert slot is getattr(model.blocks[i], kind)
        assert (slot.info.kind, slot.info.depth, slot.info.signature) == (kind, i, ("linear", D, D))
        assert slot.mode == adapter
        assert isinstance(slot.adapter, Bottleneck)
        assert slot.adapter.down.weight.shape == (R, D) and slot.adapter.up.weight.shape == (D, R)
    per_adapter = 2 * D * R + R + D
    assert pear_state(model).unpruned_adapter_params == 24 * per_adapter


def test_lora_positions_are_the_qkv_projections(model_factory):
    model = model_factory("vit", depth=12)
    pear.attach(model, PearConfig(adapter="lora", sublayers=("mlp",)))
    assert pear.positions(model) == [f"blocks.{i}.attn.qkv" for i in range(12)]
    slot = model.blocks[4].attn.qkv
    assert isinstance(slot, PearSlot) and isinstance(slot.base, nn.Linear)
    assert slot.info.kind == "qkv" and slot.info.depth == 4
    a = slot.adapter
    # LoRA: x -> B A x * s, no bias, no nonlinearity, output matches qkv (3 * D).
    assert a.down.weight.shape == (R, D) and a.up.weight.shape == (3 * D, R)
    assert a.down.bias is None and a.up.bias is None
    assert isinstance(a.act, nn.Identity)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (dict(sublayers=("mlp",)), ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp", "blocks.3.mlp"]),
        (dict(sublayers=("attn",), blocks=(1, 3)), ["blocks.1.attn", "blocks.2.attn"]),
        (dict(blocks=(1, 3)), ["blocks.1.attn", "blocks.1.mlp", "blocks.2.attn", "blocks.2.mlp"]),
        (dict(target=r"blocks\.[03]\.attn$"), ["blocks.0.attn", "blocks.3.attn"]),
        (dict(blocks=(2, 100), target="mlp"), ["blocks.2.mlp", "blocks.3.mlp"]),
        (dict(adapter="lora", blocks=(3, 4)), ["blocks.3.attn.qkv"]),
    ],
)
def test_position_selection(model_factory, cfg, expected):
    model = model_factory("vit", depth=4)
    pear.attach(model, PearConfig(**cfg))
    assert pear.positions(model) == expected
    # Unselected sub-layers are left untouched.
    n_slots = sum(isinstance(m, PearSlot) for m in model.modules())
    assert n_slots == len(expected)


def test_cnn_selection_by_blocks_uses_global_block_depth(tiny_cnn):
    model = tiny_cnn
    pear.attach(model, PearConfig(blocks=(2, 5)))
    depths = [s.info.depth for s in pear.slots(model).values()]
    assert depths == [2, 3, 4]
    assert pear.positions(model) == ["blocks.1.1", "blocks.2.0", "blocks.2.1"]


@pytest.mark.parametrize(
    "cfg", [dict(target="no_such_layer"), dict(blocks=(5, 8)), dict(adapter="lora", target=r"\.mlp")]
)
def test_selecting_nothing_raises(tiny_vit, cfg):
    with pytest.raises(ValueError, match="selects no positions"):
        pear.attach(tiny_vit, PearConfig(**cfg))
    assert getattr(tiny_vit, "pear_state", None) is None
    assert all(p.requires_grad for p in tiny_vit.parameters())  # failed attach freezes nothing


@pytest.mark.parametrize(
    "kind, heads",
    [("vit", ["head"]), ("deit", ["head"]), ("deit_distilled", ["head", "head_dist"]), ("cnn", ["classifier"])],
)
def test_only_adapters_and_head_train(model_factory, kind, heads):
    model = model_factory(kind)
    pear.attach(model)
    adapters = {id(p) for a in adapter_modules(model).values() for p in a.parameters()}
    head_params = {id(p) for h in heads for p in getattr(model, h).parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == adapters | head_params
    assert all(n.split(".")[0] in heads or ".adapter." in n for n in _trainable_names(model))


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_attaching_twice_raises(model_factory, kind):
    model = model_factory(kind)
    pear.attach(model)
    n = len(pear.positions(model))
    with pytest.raises(ValueError, match="already"):
        pear.attach(model)
    assert len(pear.positions(model)) == n


def test_cnn_rejects_vit_only_adapter_kinds(tiny_cnn):
    with pytest.raises(ValueError, match="adapter"):
        pear.attach(tiny_cnn, PearConfig(adapter="sequential"))


def test_model_without_blocks_is_rejected():
    with pytest.raises(ValueError, match="blocks"):
        pear.attach(nn.Sequential(nn.Linear(4, 4)))


def test_api_on_unattached_model_raises(tiny_vit):
    with pytest.raises(ValueError, match="attach"):
        pear_state(tiny_vit)


@pytest.mark.parametrize("adapter", ["parallel", "sequential", "lora"])
def test_adapter_reads_sublayer_input_or_output(tiny_vit, vit_batch, adapter):
    """Parallel/LoRA adapters see the sub-layer's input, sequential ones its output."""
    model = tiny_vit
    pear.attach(model, PearConfig(adapter=adapter))
    model.eval()
    seen = {}
    hooks = []
    for name, slot in pear.slots(model).items():
        hooks.append(slot.base.register_forward_hook(
            lambda m, i, o, n=name: seen.setdefault(n, {}).update(base_in=i[0], base_out=o)))
        hooks.append(slot.adapter.register_forward_pre_hook(
            lambda m, i, n=name: seen.setdefault(n, {}).update(adapter_in=i[0])))
    with torch.no_grad():
        model(vit_batch[0])
    for h in hooks:
        h.remove()
    assert len(seen) == len(pear.positions(model))
    for rec in seen.values():
        want = rec["base_out"] if adapter == "sequential" else rec["base_in"]
        assert rec["adapter_in"] is want


@pytest.mark.parametrize("kind", ["cnn", "lite0"])
def test_cnn_adapters_match_block_shapes(model_factory, batch_factory, kind):
    model = model_factory(kind)
    pear.attach(model, PearConfig(init="random"))
    model.eval()
    x = torch.nn.functional.interpolate(batch_factory(kind, n=1)[0], size=96)  # not attach's probe size
    shapes = {}
    hooks = []
    for name, slot in pear.slots(model).items():
        hooks.append(slot.base.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, [i[0].shape, o.shape])))
        hooks.append(slot.adapter.register_forward_hook(lambda m, i, o, n=name: shapes[n].append(o.shape)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    sigs = {}
    for name, slot in pear.slots(model).items():
        a = slot.adapter
        assert isinstance(a, ConvBottleneck)
        shp_in, shp_out, shp_adapter = shapes[name]
        assert shp_adapter == shp_out, name
        stride = shp_in[-1] // shp_out[-1]
        assert a.down.stride == (stride, stride)
        assert a.down.in_channels == shp_in[1] and a.up.out_channels == shp_out[1]
        assert slot.info.signature == ("conv", shp_in[1], shp_out[1], stride)
        sigs.setdefault(name.split(".")[1], set()).add(slot.info.signature)
    all_sigs = set().union(*sigs.values())
    assert any(s[3] == 2 for s in all_sigs), "the tiny CNN must contain stride-2 blocks"
    # Stages differ in width, so no signature is shared by the last and the first stage.
    stages = sorted(sigs, key=int)
    assert not (sigs[stages[0]] & sigs[stages[-1]])


def test_attach_returns_a_one_line_summary_not_the_model(tiny_vit):
    # A notebook cell ending in pear.attach(...) shows its return value: one line, not the model.
    result = pear.attach(tiny_vit)
    assert isinstance(result, pear.PearSummary)
    assert "\n" not in repr(result) and len(repr(result)) < 300
    trainable = sum(p.numel() for p in tiny_vit.parameters() if p.requires_grad)
    total = sum(p.numel() for p in tiny_vit.parameters())
    assert (result.trainable_params, result.all_params) == (trainable, total)
    assert result.positions == 6 and result.kept == 6 and result.shared == result.pruned == 0
    assert result.adapter_params == pear_state(tiny_vit).unpruned_adapter_params
    assert f"trainable params: {trainable:,} || all params: {total:,}" in repr(result)


def test_the_summary_still_stands_in_for_the_model_with_a_warning(tiny_vit, vit_batch):
    result = pear.attach(tiny_vit)
    with pytest.warns(DeprecationWarning, match="returns a PearSummary"):
        logits = result(vit_batch[0])
    assert logits.shape[0] == vit_batch[0].shape[0]
    with pytest.warns(DeprecationWarning):
        assert result.pear_state is tiny_vit.pear_state


def test_print_trainable_parameters_counts_a_shared_adapter_once(model_factory, capsys):
    model = model_factory("vit")
    pear.attach(model, PearConfig(init="random", prune_ratio=0.5))
    scores = {n: float(i) for i, n in enumerate(pear.positions(model))}
    pear.prune_and_share(model, pear.make_plan(scores, pear_state(model).config, model))
    pear.print_trainable_parameters(model)
    line = capsys.readouterr().out
    s = pear.summary(model)
    assert line.count("\n") == 1 and f"trainable params: {s.trainable_params:,}" in line
    assert s.kept + s.shared + s.pruned == s.positions == 6 and s.kept == 3 and s.shared + s.pruned == 3
    unique = {id(a): a for a in adapter_modules(model).values()}
    assert s.adapter_params == sum(p.numel() for a in unique.values() for p in a.parameters())
    assert s.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
