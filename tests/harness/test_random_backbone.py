"""A run on a randomly initialised backbone keeps that backbone (RUN/backbone.safetensors),
so it evaluates, predicts and resumes where drawing it again from the seed gives other
bits: torch's CPU random kernels are not the same on every machine. "Another machine" is
simulated by nudging every backbone drawn at random."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pear import PearError
from pear.cli import main
from pear.harness import backbones
from pear.harness import train as T
from pear.harness.predict import predict

TENSORS = Path("checkpoint") / "adapters.safetensors"


@pytest.fixture
def other_machine(monkeypatch):
    """From here on a randomly initialised backbone has other bits (1e-6 added), as on a CPU
    whose random kernels round otherwise; weights loaded from a file are unchanged."""
    build = backbones._build_model

    def nudged(*args, **kwargs):
        model = build(*args, **kwargs)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-6)
        return model

    def go():
        monkeypatch.setattr(backbones, "_build_model", nudged)
    return go


def train_random(data: Path, out: Path, tiny_vit_args, method: str = "pear", *extra: str) -> int:
    with pytest.warns(UserWarning, match="randomly initialised"):
        return main(["train", "--data", str(data), "--task", "toy", "--out", str(out), *tiny_vit_args, "--method", method,
                     "--epochs", "2", "--batch-size", "16", "--workers", "0", "--no-progress", *extra])


@pytest.mark.parametrize("method", ["pear", "linear", "peft-lora"])
def test_random_backbone_run_evaluates_and_predicts_on_another_machine(tiny_vtab, tmp_path, tiny_vit_args, method,
                                                                       other_machine, capsys):
    run = tmp_path / "run"
    assert train_random(tiny_vtab, run, tiny_vit_args, method) == 0
    assert (run / "backbone.safetensors").is_file()
    image = next((tiny_vtab / "toy" / "images" / "test").iterdir())
    before = predict(run / "checkpoint", [image], device="cpu")
    capsys.readouterr()
    other_machine()
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] == result["recorded_test_acc"]
    after = predict(run / "checkpoint", [image], device="cpu")
    assert [p["index"] for p in after[0]["predictions"]] == [p["index"] for p in before[0]["predictions"]]
    # --overwrite replaces a run folder that holds its backbone
    assert train_random(tiny_vtab, run, tiny_vit_args, method, "--overwrite") == 0


def test_random_backbone_run_resumes_on_another_machine_as_if_uninterrupted(tiny_vtab, tmp_path, tiny_vit_args,
                                                                             other_machine, monkeypatch):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert train_random(tiny_vtab, straight, tiny_vit_args) == 0
    save = T.save_state

    class Stop(Exception):
        pass

    def save_then_stop(*args, epoch, **kwargs):
        save(*args, epoch=epoch, **kwargs)
        raise Stop

    monkeypatch.setattr(T, "save_state", save_then_stop)
    with pytest.raises(Stop):
        train_random(tiny_vtab, run, tiny_vit_args)
    monkeypatch.setattr(T, "save_state", save)
    other_machine()
    assert main(["train", "-c", str(run / "args.yaml"), "--out", str(run), "--resume"]) == 0
    assert "resumed from" in (run / "train.log").read_text()
    # Same machine, same batches: the resumed run is the uninterrupted one, bit for bit.
    got, want = load_file(run / TENSORS), load_file(straight / TENSORS)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_checkpoint_without_its_run_folder_says_why_the_random_backbone_differs(tiny_vtab, tmp_path, tiny_vit_args,
                                                                                 other_machine):
    run = tmp_path / "run"
    assert train_random(tiny_vtab, run, tiny_vit_args) == 0
    alone = tmp_path / "alone" / "checkpoint"
    shutil.copytree(run / "checkpoint", alone)
    image = next((tiny_vtab / "toy" / "images" / "test").iterdir())
    other_machine()
    with pytest.raises(PearError, match=r"randomly initialised.*backbone\.safetensors"):
        predict(alone, [image], device="cpu")
    assert predict(alone, [image], weights=str(run / "backbone.safetensors"), device="cpu")
