"""Run folders written by an earlier Pear (tests/fixtures/legacy_run, flat Pear options
in args.yaml) still evaluate, inspect and resume on any machine.

The fixture ships its backbone (tiny_vit.safetensors): a randomly initialised one is
not the same bits on every CPU. What another machine reproduces is compared: the test
accuracy (the closest top-2 logits of a test image are 9e-3 apart, float32 rounding is
1e-7), the plan, and the resumed checkpoint's tensors within a tight tolerance."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pear.cli import main
from pear.harness.inspection import inspect_path
from pear.harness.runs import evaluate_run

FIXTURE = Path(__file__).parent.parent / "fixtures" / "legacy_run"
TENSORS = Path("checkpoint") / "adapters.safetensors"


@pytest.fixture
def legacy(tmp_path, monkeypatch, vtab_factory):
    """A copy of the fixture beside the data it was trained on, as the current folder
    (args.yaml names the data root 'data' and the weights 'tiny_vit.safetensors', relative)."""
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    vtab_factory(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text())


def test_old_run_folder_evaluates_and_inspects(legacy):
    result = evaluate_run(legacy / "finished", device="cpu")
    assert result["test_acc"] == result["recorded_test_acc"] == expected()["test_acc"]
    info = inspect_path(legacy / "finished")
    assert info["config"]["share"] in ("rank", "matched") and info["totals"]["pruned"] == 2
    # Its metrics.json calls the checkpoint's size on disk 'stored_bytes', today's 'checkpoint_file_bytes'.
    assert "checkpoint_file_bytes" not in json.loads((FIXTURE / "finished" / "metrics.json").read_text())
    assert info["metrics"]["checkpoint_file_bytes"] == info["totals"]["checkpoint_file_bytes"] == 8625


def test_old_interrupted_run_resumes_to_the_finished_run(legacy):
    run = legacy / "interrupted"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped weights load: no random backbone
        assert main(["train", "-c", str(run / "args.yaml"), "--out", str(run), "--resume"]) == 0
    assert "resumed from" in (run / "train.log").read_text()  # not trained again from scratch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_acc"] == expected()["test_acc"]
    assert metrics["plan_digest"] == expected()["plan_digest"]
    assert json.loads((run / "plan.json").read_text()) == json.loads((FIXTURE / "finished" / "plan.json").read_text())
    got, want = load_file(run / TENSORS), load_file(FIXTURE / "finished" / TENSORS)
    assert got.keys() == want.keys()
    for key in want:
        # One epoch (3 steps) on another CPU's kernels: rounding differences of ~1e-7, not more.
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
