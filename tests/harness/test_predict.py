import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pear import PearError
from pear.cli import main
from pear.harness.data import VtabDataset, build_transform
from pear.harness.predict import predict, render_predictions
from pear.harness.runs import rebuild


CLASSES = ["red", "green", "blue"]


@pytest.fixture
def odd_images(tmp_path):
    """Grey, RGBA, palette (with transparency) and a large RGB photo-sized image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8), "L").save(folder / "a_grey.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 4), dtype=np.uint8), "RGBA").save(folder / "b_rgba.png")
    pal = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(folder / "c_palette.png", transparency=0)
    Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(folder / "d_large.jpg", quality=80)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_odd_images_get_top_k_with_class_names(tiny_run, odd_images):
    ckpt = tiny_run.run / "checkpoint"
    files = sorted(p for p in odd_images.iterdir() if p.suffix != ".txt")
    assert [Image.open(f).mode for f in files] == ["L", "RGBA", "P", "RGB"]
    full = predict(ckpt, files, top_k=3, batch_size=3, device="cpu")
    assert [r["image"] for r in full] == [str(f) for f in files]
    for r in full:
        probs = [p["probability"] for p in r["predictions"]]
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-5)
        assert probs == sorted(probs, reverse=True)
        assert sorted(p["class"] for p in r["predictions"]) == sorted(CLASSES)
        assert all(p["class"] == CLASSES[p["index"]] for p in r["predictions"])
    two = predict(ckpt, files, top_k=2, device="cpu")
    assert all(len(r["predictions"]) == 2 for r in two)
    # Other batches (3 + 1 against 4) may add in another order: the classes and their order
    # are the same, the probabilities the same up to float32 rounding.
    for short, long in zip(two, full):
        assert [(p["index"], p["class"]) for p in short["predictions"]] == \
            [(p["index"], p["class"]) for p in long["predictions"][:2]]
        assert [p["probability"] for p in short["predictions"]] == \
            pytest.approx([p["probability"] for p in long["predictions"][:2]], rel=1e-5, abs=1e-6)
    assert all(len(r["predictions"]) == 3 for r in predict(ckpt, files[:1], top_k=10, device="cpu"))

    text = render_predictions(two)
    print(text)
    assert all(str(f) in text for f in files) and "%" in text


def test_prediction_matches_the_model_on_a_test_image(tiny_run):
    ckpt = tiny_run.run / "checkpoint"
    model, _, data_cfg = rebuild(ckpt)
    test = VtabDataset(tiny_run.data, tiny_run.task, "test", build_transform(32, data_cfg["mean"], data_cfg["std"]))
    paths = [p for p, _ in test.samples[:5]]
    with torch.no_grad():
        probs = model(torch.stack([test[i][0] for i in range(5)])).softmax(-1)
    got = predict(ckpt, paths, top_k=1, device="cpu")
    assert [r["predictions"][0]["index"] for r in got] == probs.argmax(-1).tolist()
    for r, p in zip(got, probs):
        assert math.isclose(r["predictions"][0]["probability"], p.max().item(), rel_tol=1e-5)


def test_folder_input(tiny_run, odd_images):
    got = predict(tiny_run.run / "checkpoint", [odd_images], top_k=1, device="cpu")
    assert [r["image"] for r in got] == [str(p) for p in sorted(odd_images.iterdir()) if p.suffix != ".txt"]


def test_bad_inputs_are_named(tiny_run, tmp_path):
    ckpt = tiny_run.run / "checkpoint"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(PearError, match="cannot read image .*bad.png"):
        predict(ckpt, [bad], device="cpu")
    with pytest.raises(PearError, match="image .*missing.png does not exist"):
        predict(ckpt, [tmp_path / "missing.png"], device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PearError, match="holds no image files"):
        predict(ckpt, [tmp_path / "empty"], device="cpu")
    with pytest.raises(PearError, match="top_k must be a positive integer"):
        predict(ckpt, [bad], top_k=0)


def test_other_weights_are_refused(tiny_run, tmp_path):
    """`weights` must be the file the run was trained from (here: random init)."""
    model, _, _ = rebuild(tiny_run.run / "checkpoint")
    other = {k: v + 0.01 for k, v in model.state_dict().items() if ".adapter." not in k and not k.startswith("head")}
    save_file({k.replace(".base.", "."): v.contiguous() for k, v in other.items()}, str(tmp_path / "other.safetensors"))
    image = tiny_run.data / tiny_run.task / "images" / "test" / "000000.png"
    with pytest.raises(PearError, match="fingerprint"):
        predict(tiny_run.run / "checkpoint", [image], weights=str(tmp_path / "other.safetensors"), device="cpu")


def test_cli_predict_json_and_text(tiny_run, odd_images, capsys):
    ckpt = str(tiny_run.run / "checkpoint")
    image = str(odd_images / "a_grey.png")
    assert main(["predict", "--ckpt", ckpt, "--top-k", "2", "--device", "cpu", "--json", image]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == image and len(out[0]["predictions"]) == 2
    assert main(["predict", "--ckpt", ckpt, "--device", "cpu", image]) == 0
    assert out[0]["predictions"][0]["class"] in capsys.readouterr().out
    assert main(["predict", "--ckpt", ckpt, "--device", "cpu", str(odd_images / "notes.txt")]) == 2
    assert "notes.txt" in capsys.readouterr().err
