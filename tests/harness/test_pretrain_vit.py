"""scripts/pretrain_vit.py: its options, its saved state and its export, and its precision
(the choice recorded, --no-amp the fp32 path as it was, a resume keeping the precision it started
with). The precision tests train a few steps of batch 4 on two generated photos and 40 generated
28x28 images (the teacher is built); the other tests pretrain nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from pear.harness.backbones import create_backbone
from pear.harness.datasets import pretrain_stream as stream
from pear.harness.precision import Precision, choose


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/pretrain_vit.py")


def _saved_state(script, out: Path, step: int, *flags: str, precision: Precision | None = None):
    """A state at `step` in `out`, saved as the script saves it, made with these flags (and this
    precision recorded; None: as states were saved before the precision was recorded)."""
    args = script.parse_args(["--out", str(out), *flags])
    model, opt = script.build(args)
    out.mkdir(parents=True, exist_ok=True)
    script.save_state(out, step, model, opt, [{"step": step}],
                      {name: getattr(args, name) for name in script.RESUME_OPTIONS}, precision)
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
    monkeypatch.setattr(stream, "WALLPAPER_DIRS", (str(tmp_path / "none"),))
    assert script.main(["--out", str(tmp_path / "out"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "no wallpaper photos under" in err and "Traceback" not in err, err


# ---------------------------------------------------------------- precision
TINY = ["--steps", "3", "--batch", "4", "--save-every", "1"]
BF16 = Precision(True, "matmul", True, "--amp given")
FP32 = Precision(False, "sdpa", False, "--no-amp given")


@pytest.fixture(scope="module")
def tiny_images(script, tmp_path_factory):
    """Two generated photos as the wallpaper pool and 40 generated 28x28 images as Fashion-MNIST's,
    so a step runs anywhere in well under a second."""
    folder = tmp_path_factory.mktemp("wallpapers")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    fashion = torch.from_numpy(rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stream, "WALLPAPER_DIRS", (str(folder),))  # where the DataLoader worker's Stream looks
        mp.setattr(stream, "load_fashion", lambda: fashion)  # the worker is forked: it sees these
        yield


def _state(out: Path) -> tuple[dict, dict]:
    state = out / "state"
    return json.loads((state / "state.json").read_text()), load_file(str(state / "state.safetensors"))


@pytest.fixture(scope="module")
def two_steps(script, tiny_images, tmp_path_factory):
    """Steps 0 and 1 of 3, once with --no-amp and once with --amp: {flag: out folder}."""
    outs = {}
    for flag in ("--no-amp", "--amp"):
        outs[flag] = tmp_path_factory.mktemp(flag.strip("-"))
        assert script.main(["--out", str(outs[flag]), *TINY, "--stop-at", "2", flag]) == 0
    return outs


def test_the_automatic_choice_is_the_one_pear_train_makes_and_is_recorded(script, tiny_images, tmp_path, capsys):
    out, export = tmp_path / "out", tmp_path / "vit.safetensors"
    assert script.main(["--out", str(out), *TINY, "--stop-at", "1", "--export", str(export)]) == 0
    model, _ = script.build(script.parse_args([]))
    expected = choose(None, torch.device("cpu"), model)
    info, _ = _state(out)
    assert info["precision"] == expected.to_dict() and info["step"] == 1
    assert f"precision: bf16 autocast {expected.amp}, attention {expected.attention}" in capsys.readouterr().out
    with safe_open(str(export), "pt") as f:
        assert json.loads(f.metadata()["precision"]) == expected.to_dict()


def test_no_amp_is_the_fp32_path_as_it_was(script, two_steps):
    """--no-amp's weights after two steps are bit for bit those of the plain fp32 loop, teacher included."""
    info, tensors = _state(two_steps["--no-amp"])
    assert info["precision"] == FP32.to_dict()
    args = script.parse_args(["--out", str(two_steps["--no-amp"]), *TINY])
    model, opt = script.build(args)
    teacher = create_backbone("tf_efficientnet_lite0", num_classes=None)[0].eval()
    photos, fashion = stream.load_photos(args.out / "photos.npz"), stream.load_fashion()
    for step in range(2):
        x = script.make_batch(step, args.seed, args.batch, photos, fashion)
        with torch.no_grad():
            tgt = script._teacher_forward(teacher, x)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        for group in opt.param_groups:
            group["lr"] = script.lr_at(step, args.steps, args.lr, args.warmup)
        parts = script.losses(model((x - 0.5) / 0.5), tgt)
        opt.zero_grad(set_to_none=True)
        (parts["kl"] + parts["pooled"] + parts["fmap"] + parts["mid"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(tensors[f"model.{name}"], value, rtol=0, atol=0, msg=name)


def test_amp_trains_in_bf16_to_the_same_losses_within_its_rounding(script, two_steps):
    (fp32, _), (bf16, _) = _state(two_steps["--no-amp"]), _state(two_steps["--amp"])
    assert bf16["precision"] == BF16.to_dict()
    for name in ("kl", "pooled", "fmap", "mid"):
        a, b = fp32["log"][-1][name], bf16["log"][-1][name]
        assert a != b and b == pytest.approx(a, rel=0.05, abs=2e-3), (name, a, b)


@pytest.mark.parametrize("flag", ["--amp", "--no-amp"])
def test_a_resume_keeps_the_precision_it_started_with(script, two_steps, tmp_path, capsys, flag):
    out = tmp_path / "out"
    (out / "state").mkdir(parents=True)
    for name in ("photos.npz", "state/state.json", "state/state.safetensors"):
        (out / name).write_bytes((two_steps[flag] / name).read_bytes())
    assert script.main(["--out", str(out), *TINY]) == 0  # no flag: the automatic choice would be this machine's
    info, _ = _state(out)
    assert info["step"] == 3 and info["precision"] == _state(two_steps[flag])[0]["precision"]
    assert f"precision (kept from the state): bf16 autocast {flag == '--amp'}" in capsys.readouterr().out


@pytest.mark.parametrize("recorded, flag, made", [
    (BF16, "--no-amp", "made in bf16 autocast (--amp)"),
    (FP32, "--amp", "made in fp32 (--no-amp)"),
    (None, "--amp", "made in fp32 (--no-amp), before the precision was recorded"),
])
def test_a_resume_in_the_other_precision_is_refused(script, tmp_path, capsys, recorded, flag, made):
    _saved_state(script, tmp_path / "out", 2, precision=recorded)
    assert script.main(["--out", str(tmp_path / "out"), "--stop-at", "2", flag]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "out" / "state" / "state.json") in err and made in err and f"leave out {flag}" in err, err
    assert "Traceback" not in err


def test_a_state_saved_before_the_precision_was_recorded_resumes_in_fp32(script, tmp_path, capsys):
    _saved_state(script, tmp_path / "out", 2)
    assert script.main(["--out", str(tmp_path / "out"), "--stop-at", "2"]) == 0
    assert "precision (kept from the state): bf16 autocast False, attention sdpa" in capsys.readouterr().out


def test_a_damaged_precision_record_is_named(script, tmp_path, capsys):
    out = tmp_path / "out"
    _saved_state(script, out, 2, precision=BF16)
    info = json.loads((out / "state" / "state.json").read_text())
    (out / "state" / "state.json").write_text(json.dumps({**info, "precision": {"amp": "yes"}}))
    assert script.main(["--out", str(out), "--stop-at", "2"]) == 2
    err = capsys.readouterr().err
    assert str(out / "state" / "state.json") in err and "'precision' must be an object" in err, err
