"""scripts/pretrain_vit.py: its options, its saved state and its export, without pretraining anything
(no test here runs a training step: the teacher is never built)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pretrain_vit.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("pretrain_vit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved_state(script, out: Path, step: int, *flags: str):
    """A state at `step` in `out`, saved as the script saves it, made with these flags."""
    args = script.parse_args(["--out", str(out), *flags])
    model, opt = script.build(args)
    out.mkdir(parents=True, exist_ok=True)
    script.save_state(out, step, model, opt, [{"step": step}],
                      {name: getattr(args, name) for name in script.RESUME_OPTIONS})
    return model


@pytest.mark.parametrize("flags, message", [
    (["--stop-at", "0"], "--stop-at must be a step from 1 to --steps 3000, got 0"),
    (["--stop-at", "3001"], "--stop-at must be a step from 1 to --steps 3000, got 3001"),
    (["--save-every", "0"], "--save-every must be at least 1, got 0"),
    (["--steps", "-1"], "--steps must be at least 1, got -1"),
    (["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    (["--snapshots", "7,x"], "--snapshots must be steps separated by commas"),
])
def test_bad_options_are_refused(script, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(flags)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_stop_at_before_the_saved_step_is_refused(script, tmp_path, capsys):
    _saved_state(script, tmp_path / "out", 4)
    export = tmp_path / "vit.safetensors"
    assert script.main(["--out", str(tmp_path / "out"), "--stop-at", "2", "--export", str(export)]) == 2
    err = capsys.readouterr().err
    assert "is at step 4, past --stop-at 2" in err and "Traceback" not in err
    assert not export.exists()


def test_the_export_is_labelled_with_the_step_its_weights_are_at(script, tmp_path):
    model = _saved_state(script, tmp_path / "out", 2)
    export = tmp_path / "vit.safetensors"
    assert script.main(["--out", str(tmp_path / "out"), "--stop-at", "2", "--export", str(export)]) == 0
    with safe_open(str(export), "pt") as f:
        assert f.metadata()["steps"] == "2"
        torch.testing.assert_close(f.get_tensor("blocks.0.attn.qkv.weight"),
                                   model.vit.state_dict()["blocks.0.attn.qkv.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("flag, value", [("--seed", "1"), ("--batch", "32"), ("--lr", "0.01"), ("--steps", "900")])
def test_a_resume_with_other_options_is_refused(script, tmp_path, capsys, flag, value):
    _saved_state(script, tmp_path / "out", 2)
    assert script.main(["--out", str(tmp_path / "out"), flag, value, "--stop-at", "3"]) == 2
    err = capsys.readouterr().err
    assert f"was made with {flag} " in err and f"not {value}" in err, err


@pytest.mark.parametrize("damage", ["garbage json", "not an object", "step is text", "no tensors", "other tensors"])
def test_a_damaged_state_is_named(script, tmp_path, capsys, damage):
    out = tmp_path / "out"
    _saved_state(script, out, 2)
    state = out / script.STATE_DIR
    if damage == "garbage json":
        (state / "state.json").write_text("{nope")
    elif damage == "not an object":
        (state / "state.json").write_text("[1]")
    elif damage == "step is text":
        (state / "state.json").write_text(json.dumps({"step": "two", "log": []}))
    elif damage == "no tensors":
        (state / "state.safetensors").unlink()
    else:
        from safetensors.torch import save_file

        save_file({"model.nothing": torch.zeros(1)}, str(state / "state.safetensors"))
    assert script.main(["--out", str(out), "--stop-at", "2"]) == 2
    err = capsys.readouterr().err
    assert str(state) in err and "Traceback" not in err, err


def test_the_two_state_files_are_replaced_together(script, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _saved_state(script, out, 1)
    args = script.parse_args(["--out", str(out)])
    model, opt = script.build(args)
    options = {name: getattr(args, name) for name in script.RESUME_OPTIONS}

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt  # killed between writing the tensors and writing state.json

    monkeypatch.setattr(script.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        script.save_state(out, 2, model, opt, [], options)
    monkeypatch.undo()
    fresh, fresh_opt = script.build(args)
    step, _ = script.load_state(out, fresh, fresh_opt, options)
    assert step == 1  # the old pair, whole
    assert sorted(p.name for p in (out / script.STATE_DIR).iterdir()) == sorted(script.STATE_FILES)


def test_no_wallpapers_is_one_message(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "WALLPAPER_DIRS", (str(tmp_path / "none"),))
    assert script.main(["--out", str(tmp_path / "out"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "no wallpaper photos under" in err and "Traceback" not in err, err
