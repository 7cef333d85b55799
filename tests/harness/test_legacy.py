"""Run folders written by an earlier Pear (tests/fixtures/legacy_run, flat Pear options
in args.yaml) still evaluate, inspect and resume, bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pear.cli import main
from pear.harness.inspection import inspect_path
from pear.harness.runs import evaluate_run

FIXTURE = Path(__file__).parent.parent / "fixtures" / "legacy_run"


@pytest.fixture
def legacy(tmp_path, monkeypatch, vtab_factory):
    """A copy of the fixture beside the data it was trained on, as the current folder
    (args.yaml names the data root 'data', relative)."""
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    vtab_factory(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_old_run_folder_evaluates_and_inspects(legacy):
    result = evaluate_run(legacy / "finished", device="cpu")
    assert result["test_acc"] == result["recorded_test_acc"] == json.loads((FIXTURE / "expected.json").read_text())[
        "test_acc"]
    info = inspect_path(legacy / "finished")
    assert info["config"]["share"] in ("rank", "matched") and info["totals"]["pruned"] == 2
    # Its metrics.json calls the checkpoint's size on disk 'stored_bytes', today's 'checkpoint_file_bytes'.
    assert info["metrics"]["checkpoint_file_bytes"] == info["totals"]["checkpoint_file_bytes"] == 8612


def test_old_interrupted_run_resumes_bit_for_bit(legacy):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    run = legacy / "interrupted"
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert main(["train", "-c", str(run / "args.yaml"), "--out", str(run), "--resume"]) == 0
    assert "resumed from" in (run / "train.log").read_text()  # not trained again from scratch
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_acc"] == expected["test_acc"]
    assert metrics["plan_digest"] == expected["plan_digest"]
    digest = hashlib.sha256((run / "checkpoint" / "adapters.safetensors").read_bytes()).hexdigest()
    assert digest == expected["checkpoint_tensors_sha256"]
