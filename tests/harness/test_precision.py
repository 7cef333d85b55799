"""The run's precision: the automatic bf16 choice, the two attention paths (the same maths),
frozen weights held in bf16 (the same bits under autocast), and what a run records."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pear import PearConfig, attach
from pear.errors import PearError
from pear.harness import precision as P
from pear.harness.train import TrainConfig, train

CPU = torch.device("cpu")


@pytest.mark.parametrize("has_bf16", [True, False])
def test_amp_picks_itself_on_the_cpu(monkeypatch, has_bf16):
    monkeypatch.setattr(P, "cpu_has_bf16_matmul", lambda: has_bf16)
    auto = P.choose(None, CPU)
    assert (auto.amp, auto.attention, auto.frozen_bf16) == ((True, "matmul", True) if has_bf16 else
                                                            (False, "sdpa", False))
    # --no-amp is today's fp32 path: fused attention, fp32 weights; --amp is honoured anywhere.
    assert P.choose(False, CPU) == P.Precision(False, "sdpa", False, "--no-amp given")
    assert P.choose(True, CPU).amp and P.choose(True, CPU).attention == "matmul"
    assert not P.choose(None, CPU, distributed=True).frozen_bf16


@pytest.mark.parametrize(("caps", "cnn_bf16"), [
    ({"amx_bf16": True, "avx512_bf16": True}, False),  # Intel Xeon with AMX: Lite0 measured no faster
    ({"avx512_bf16": True}, True),  # AMD EPYC, AVX512-BF16 without AMX: Lite0 measured 1.69x faster
    ({}, False),  # no bf16 instructions
])
def test_a_cnn_trains_in_bf16_on_the_cpu_only_where_it_was_measured_faster(monkeypatch, model_factory, caps,
                                                                           cnn_bf16):
    monkeypatch.setattr(P, "_cpu_capabilities", lambda: caps)
    cnn, vit = model_factory("cnn"), model_factory("vit")
    assert not P.has_attention(cnn) and P.has_attention(vit)
    chosen = P.choose(None, CPU, cnn)
    assert (chosen.amp, chosen.frozen_bf16) == (cnn_bf16, cnn_bf16)
    assert ("AVX512-BF16 and no AMX" in chosen.reason) == cnn_bf16
    assert P.choose(None, CPU, vit).amp is bool(caps)
    assert P.choose(True, CPU, cnn).amp is True and P.choose(False, CPU, cnn).amp is False  # the flags win


def test_cpu_capabilities_read_torch_and_fail_closed(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True, "avx512_bf16": True})
    assert P.cpu_has_amx() and P.cpu_has_bf16_matmul()
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: 1 / 0)
    assert not P.cpu_has_amx() and not P.cpu_has_bf16_matmul()


def test_cuda_keeps_sdpa_and_old_runs_read_the_old_rule():
    cuda = torch.device("cuda")
    assert P.choose(None, cuda) == P.Precision(True, "sdpa", False, "CUDA: bf16 autocast by default")
    assert P.legacy(None, CPU).amp is False and P.legacy(None, cuda).amp is True
    assert P.legacy(True, CPU).amp is True


def _forward_backward(model, x, y, amp):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    nn.functional.cross_entropy(logits.float(), y).backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.float().detach(), grads


def _adapted_vit(make_model):
    model = make_model("vit")
    attach(model, PearConfig(scale=1.0))
    # Non-zero up projections, so the adapters change the logits and get real gradients.
    for n, p in model.named_parameters():
        if ".up." in n or n.endswith("up.weight"):
            nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("amp,tol", [(False, 1e-5), (True, 3e-2)])
def test_both_attention_paths_give_the_same_logits_and_gradients(model_factory, batch_factory, amp, tol):
    x, y = batch_factory("vit", n=6)
    model = _adapted_vit(model_factory)
    assert P.apply_attention(model, "sdpa") == 3  # one per block
    ref_logits, ref_grads = _forward_backward(model, x, y, amp)
    P.apply_attention(model, "matmul")
    assert not any(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    logits, grads = _forward_backward(model, x, y, amp)
    torch.testing.assert_close(logits, ref_logits, atol=tol, rtol=tol)
    assert grads.keys() == ref_grads.keys() and grads
    for n in grads:
        scale = ref_grads[n].abs().max().clamp_min(1e-6)
        assert (grads[n] - ref_grads[n]).abs().max() <= tol * scale, n


def test_frozen_weights_in_bf16_change_nothing_under_autocast(model_factory, batch_factory):
    x, y = batch_factory("vit", n=6)
    model = _adapted_vit(model_factory)
    ref_logits, ref_grads = _forward_backward(model, x, y, True)
    cast = P.hold_frozen_bf16(model)
    assert cast > 0
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    # Only the frozen matmul weights: norms, embeddings, adapters and the head stay fp32.
    assert any(dt == torch.bfloat16 for n, dt in dtypes.items() if n.endswith("qkv.weight"))
    assert all(dt == torch.float32 for n, dt in dtypes.items()
               if "norm" in n or n in ("pos_embed", "cls_token") or n.startswith("head") or "adapter" in n)
    assert dtypes["patch_embed.proj.weight"] == torch.bfloat16  # a frozen convolution: a matmul op
    assert any(dt == torch.bfloat16 for dt in dtypes.values())
    logits, grads = _forward_backward(model, x, y, True)
    assert torch.equal(logits, ref_logits)  # autocast rounds the fp32 weights to these very bits
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        assert torch.equal(grads[n], ref_grads[n]), n


def test_a_recorded_precision_is_checked():
    ok = P.Precision(True, "matmul", True, "x")
    assert P.Precision.from_dict(ok.to_dict(), "f") == ok
    for bad in (None, [], {"amp": "yes", "attention": "sdpa", "frozen_bf16": False},
                {"amp": True, "attention": "flash", "frozen_bf16": False}):
        with pytest.raises(PearError, match="state.json: 'precision' must be"):
            P.Precision.from_dict(bad, "state.json")


@pytest.mark.parametrize("amp", [None, False])
def test_a_run_records_its_precision_and_no_amp_is_fp32(vtab_factory, tmp_path, monkeypatch, amp):
    monkeypatch.setattr(P, "cpu_has_bf16_matmul", lambda: True)
    vtab_factory(tmp_path / "data")
    cfg = TrainConfig(data=str(tmp_path / "data"), task="toy", out=str(tmp_path / "run"), backbone="vit_tiny_patch16_224",
                      model_kwargs={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}, img_size=32,
                      epochs=2, warmup_epochs=1, batch_size=16, workers=0, progress=False, device="cpu", amp=amp)
    with pytest.warns(UserWarning, match="randomly initialised"):
        metrics = train(cfg)
    want = P.choose(amp, CPU)
    assert metrics["precision"] == want.to_dict()
    assert metrics["cpu"] == P.processor_name() and metrics["cpu"] and metrics["gpu"] is None  # which CPU trained it
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]["amp"] is want.amp
    state = json.loads((tmp_path / "run" / "state" / "state.json").read_text())
    assert state["precision"] == want.to_dict()
    assert "precision: bf16 autocast" in (tmp_path / "run" / "train.log").read_text()
