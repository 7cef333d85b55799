"""Watching a run: TensorBoard event files read back, and plain progress lines off a terminal."""

import io
import json
import sys

import pytest

from pear.errors import PearError
from pear.harness import watch
from pear.harness.train import TrainConfig, lr_factor, train

TINY = dict(backbone="vit_tiny_patch16_224", model_kwargs={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
            img_size=32, workers=0, device="cpu")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_event_files_hold_the_run(tiny_vtab, tmp_path):
    out = tmp_path / "run"
    # 30 train800 images in batches of 10: 3 steps per epoch; prune at the end of epoch 1.
    with pytest.warns(UserWarning, match="randomly initialised"):
        metrics = train(TrainConfig(data=str(tiny_vtab), task="toy", out=str(out), method="pear", epochs=3,
                                    warmup_epochs=1, batch_size=10, select_on="val200", progress=False,
                                    tensorboard=True, **TINY))
    ev = _events(out / "tensorboard")
    scalars = {tag: [(e.step, e.value) for e in ev.Scalars(tag)] for tag in ev.Tags()["scalars"]}
    assert set(scalars) == {"train/loss", "train/lr", "epoch/loss", "accuracy/train", "accuracy/val",
                            "accuracy/test", "speed/images_per_second", "params/trainable"}
    history = json.loads((out / "history.json").read_text())
    assert [s for s, _ in scalars["train/loss"]] == list(range(9))
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([1e-3 * lr_factor(s, 9, 3) for s in range(9)])
    for tag, key in (("epoch/loss", "loss"), ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"),
                     ("speed/images_per_second", "images_per_second")):
        epochs = [h for h in history if key in h]
        assert scalars[tag] == [(3 * (h["epoch"] + 1), pytest.approx(h[key], rel=1e-6)) for h in epochs], tag
    # Validation from the first epoch on, before pruning too (only the best-epoch choice waits for the prune).
    assert [s for s, _ in scalars["accuracy/val"]] == [3, 6, 9]
    assert [h["epoch"] for h in history if "val_acc" in h] == [0, 1, 2]
    assert scalars["accuracy/test"] == [(9, pytest.approx(metrics["test_acc"], rel=1e-6))]
    # Before pruning at step 0, after it at the prune step (the start of epoch 2).
    assert scalars["params/trainable"] == [(0, metrics["trainable_params_before"]), (3, metrics["trainable_params"])]
    assert metrics["trainable_params"] < metrics["trainable_params_before"]
    (image,) = ev.Images("pruning/map")
    assert image.step == 3 and image.width > 400 and image.height > 300
    assert image.encoded_image_string.startswith(b"\x89PNG")
    hparams = _hparams(out / "tensorboard")
    assert hparams["method"] == "pear" and hparams["lr"] == pytest.approx(1e-3) and hparams["epochs"] == 3
    assert hparams["share"] == "matched" and hparams["select_on"] == "val200"
    assert {"accuracy/test", "accuracy/val"} <= _hparams_metrics(out / "tensorboard")


def _hparams_plugin(folder):
    from tensorboard.plugins.hparams import plugin_data_pb2

    ev = _events(folder)
    content = ev.PluginTagToContent("hparams")
    data = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
    return data


def _hparams(folder) -> dict:
    """The hparams a run logged for TensorBoard's HPARAMS tab, by name."""
    (start,) = [d.session_start_info for d in _hparams_plugin(folder) if d.HasField("session_start_info")]
    out = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = getattr(value, kind)
    return out


def _hparams_metrics(folder) -> set:
    (exp,) = [d.experiment for d in _hparams_plugin(folder) if d.HasField("experiment")]
    return {m.name.tag for m in exp.metric_infos}


def test_tensorboard_without_the_package_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(PearError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        watch.Board(tmp_path)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_plain_lines_off_a_terminal(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(watch, "PLAIN_SECONDS", 0.0)
    bar = watch.Progress(4, "epoch 1/2", stream=log)
    for i in range(4):
        bar.update(loss=0.5, acc=75.0, img_s=30.0)
    bar.close()
    # A line per step here (PLAIN_SECONDS = 0), none for the last one: the epoch's log line follows it.
    assert log.getvalue().splitlines() == ["epoch 1/2  step 1/4  loss 0.500  acc 75.0%  30 img/s",
                                          "epoch 1/2  step 2/4  loss 0.500  acc 75.0%  30 img/s",
                                          "epoch 1/2  step 3/4  loss 0.500  acc 75.0%  30 img/s"]
    assert "\r" not in log.getvalue()

    monkeypatch.setattr(watch, "PLAIN_SECONDS", 3600.0)
    quiet = io.StringIO()
    bar = watch.Progress(100, "epoch 1/2", stream=quiet)
    for _ in range(100):
        bar.update(loss=0.5, acc=75.0, img_s=30.0)
    assert quiet.getvalue() == ""

    term = _Terminal()
    bar = watch.Progress(4, "epoch 1/2", stream=term)
    bar.update(loss=0.5, acc=75.0, img_s=30.0)
    bar.close()
    assert "\r" in term.getvalue() and "loss=0.500" in term.getvalue()  # the redrawn bar
