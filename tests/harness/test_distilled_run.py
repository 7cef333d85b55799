"""A distilled DeiT (two heads: head and head_dist) through `pear train` and `pear eval`:
the checkpoint holds both trained heads, so the reloaded model computes what training's
did (before, head_dist was neither saved nor fingerprinted, and eval silently ran the
untrained one)."""

from __future__ import annotations

import json

import pytest
import torch

from safetensors.torch import load_file

from pear.cli import main
from pear.harness.inspection import inspect_path
from pear.harness.runs import rebuild

TENSORS = {"pear": "adapters.safetensors", "linear": "weights.safetensors"}
KWARGS = '{"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}'


@pytest.mark.parametrize("method", ["pear", "linear"])
def test_a_distilled_deit_run_evaluates_to_its_recorded_accuracy(tmp_path, tiny_vtab, capsys, method):
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert main(["train", "--data", str(tiny_vtab), "--task", "toy", "--out", str(run), "--method", method,
                     "--backbone", "deit_tiny_distilled_patch16_224", "--img-size", "32", "--model-kwargs", KWARGS,
                     "--epochs", "2", "--lr", "0.05", "--batch-size", "16", "--workers", "0", "--no-progress",
                     "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] == result["recorded_test_acc"]
    model, info, _ = rebuild(run / "checkpoint")
    stored = load_file(run / "checkpoint" / TENSORS[method])
    for name in ("head", "head_dist"):  # both trained heads are stored, and are the ones the model runs
        for param in ("weight", "bias"):
            key = f"head.{name}.{param}" if method == "pear" else f"{name}.{param}"
            torch.testing.assert_close(getattr(getattr(model, name), param).detach().cpu(), stored[key])
    both = sum(t.numel() for t in [*model.head.parameters(), *model.head_dist.parameters()])
    assert inspect_path(run)["totals"]["head_params"] == both
