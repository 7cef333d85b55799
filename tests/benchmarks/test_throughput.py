"""benchmarks/throughput.py on a toy ViT on the CPU: every method builds, steps and is
reported; the numbers that the README quotes come out of the fields checked here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pear.harness.precision import choose

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
TOY = ["--backbone", "vit_tiny_patch16_224", "--model-kwargs",
       '{"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}',
       "--img-size", "32", "--batch-size", "2", "--num-classes", "3", "--device", "cpu",
       "--warmup", "1", "--steps", "2", "--rounds", "2"]


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("throughput", None)


def test_every_method_and_the_tracker_are_measured(throughput, tmp_path):
    out = tmp_path / "res.json"
    methods = "linear,full,adapter,pear,lora,input-grad"
    assert throughput.main([*TOY, "--methods", methods, "--tracker", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["results"]}
    assert list(rows) == [*methods.split(","), "adapter+tracker"]
    for r in rows.values():
        assert r["timed_steps"] == 2 and 0 < r["step_ms_q1"] <= r["step_ms_median"] <= r["step_ms_q3"]
        assert r["images_per_second"] == pytest.approx(2 / (r["step_ms_median"] / 1e3))
        assert r["tensor_mb_counted"] > 0
    params = {m: r["trainable_params"] for m, r in rows.items()}
    # pear after pruning at 0.5 keeps half the (equal-size) adapters: head + half the adapter params.
    head = params["linear"]
    assert params["input-grad"] == head + 32  # + blocks.0.norm1.weight (width 32)
    assert params["pear"] - head == (params["adapter"] - head) // 2
    assert head < params["lora"] < params["full"] and params["adapter"] < params["full"]
    assert rows["adapter"]["step_time_vs_adapter"] == 1.0
    assert res["tracker_overhead"] > 0 and res["tracker_update_ms"] > 0
    assert res["settings"]["amp_bf16"] is choose(None, torch.device("cpu")).amp  # a ViT's CPU default, as in training
    assert res["machine"]["process_peak_rss_mb"] > 0


def test_markdown_names_the_command_and_each_method(throughput, tmp_path):
    out = tmp_path / "res.md"
    assert throughput.main([*TOY, "--methods", "adapter,pear", "--out", str(out)]) == 0
    text = out.read_text()
    assert "--methods adapter,pear" in text and "| pear |" in text and "| adapter |" in text
    assert "1.00×" in text


@pytest.mark.parametrize("args, message", [
    (["--methods", "adapter,bogus"], "unknown ['bogus']"),
    (["--tracker", "--methods", "pear"], "keep 'adapter'"),
    (["--frozen-bf16", "--no-bf16"], "--frozen-bf16 needs bf16"),
    (["--out", "res.txt"], "must end in .md or .json"),
    (["--compile", "--warmup", "0"], "--compile needs --warmup >= 1"),
    (["--model-kwargs", "[1]"], "expected a JSON object"),
    (["--precisions", "fp32,fp8"], "unknown ['fp8']"),
    (["--precisions", "fp32", "--amp"], "leave out --amp"),
])
def test_bad_arguments_are_refused_by_name(throughput, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        throughput.parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_precision_settings_side_by_side_with_the_ceiling(throughput, tmp_path):
    out = tmp_path / "res.json"
    assert throughput.main([*TOY, "--methods", "pear", "--precisions", "fp32,bf16-matmul-frozen,auto",
                            "--ceiling", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {r["precision"]: r for r in res["results"]}
    assert list(rows) == ["fp32", "bf16-matmul-frozen", "auto"]
    assert (rows["fp32"]["amp_bf16"], rows["fp32"]["attention"]) == (False, "sdpa")
    assert rows["bf16-matmul-frozen"]["frozen_bf16"] and rows["bf16-matmul-frozen"]["attention"] == "matmul"
    assert rows["fp32"]["speedup_vs_fp32"] == 1.0
    for r in rows.values():
        assert 0 < r["speedup_round_min"] <= r["speedup_round_max"]
        assert r["step_gflop"] > 0 and r["achieved_gflops"] > 0 and r["share_of_bf16_ceiling"] > 0
    c = res["ceiling"]
    assert c["square_2048"]["bf16"] > 0 and c["step_shape"]["inner"] == 32 and c["step_shape"]["cols"] == 128
    md = throughput.markdown(res)
    assert "Matmul ceiling" in md and "speed-up vs fp32" in md and "| pear [auto] |" in md


def test_quartiles_stay_within_the_timed_steps(throughput):
    # statistics.quantiles' default ('exclusive') extrapolates: [1, 5] gave q1 = 0, and on a busy
    # machine a negative step time. The quartiles of a few timed steps lie between them.
    assert throughput.quantiles([1.0, 5.0]) == (2.0, 3.0, 4.0)
    assert throughput.quantiles([2.0]) == (2.0, 2.0, 2.0)
