import json
import shutil

import pytest
from PIL import Image

import pear
from pear.cli import main
from pear.harness.inspection import inspect_path, render_table
from pear.harness.runs import rebuild
from pear.harness.state import save_plain


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_run_and_checkpoint_folders_agree_with_the_model_report(tiny_run):
    ckpt = tiny_run.run / "checkpoint"
    info = inspect_path(tiny_run.run)
    model, _, _ = rebuild(ckpt)
    rep = pear.report(model)

    assert info["kind"] == "pear" and info["method"] == "pear" and info["task"] == "toy"
    assert info["class_names"] == ["red", "green", "blue"]
    assert info["positions"] == rep["positions"]
    t = info["totals"]
    assert {k: v for k, v in t.items() if k != "checkpoint_file_bytes"} == rep["totals"]
    assert t["pruned"] == 2 and t["shared"] == 2 and t["adapter_ratio"] == 0.5
    assert t["checkpoint_file_bytes"] == sum(f.stat().st_size for f in ckpt.iterdir() if f.name != "README.md")
    assert info["metrics"] == json.loads((tiny_run.run / "metrics.json").read_text())
    assert t["checkpoint_file_bytes"] == info["metrics"]["checkpoint_file_bytes"]

    alone = inspect_path(ckpt)
    assert alone["metrics"] is None
    assert (alone["positions"], alone["totals"]) == (info["positions"], info["totals"])


def test_table_shows_every_position_and_the_totals(tiny_run):
    info = inspect_path(tiny_run.run)
    text = render_table(info)
    print(text)
    t = info["totals"]
    for row in info["positions"]:
        line = next(line for line in text.splitlines() if line.startswith(row["name"] + " "))
        assert row["state"] in line and f"{row['params']:,}" in line
        if row["shares"]:
            assert row["shares"] in line
    assert f"adapter bytes     {t['adapter_bytes']:,} of {t['adapter_bytes_unpruned']:,} unpruned (50.0%)" in text
    assert f"checkpoint files  {t['checkpoint_file_bytes']:,} bytes" in text
    assert "test_acc" in text


def test_plot_writes_a_png(tiny_run, tmp_path):
    out = tmp_path / "plots" / "map.png"
    out.parent.mkdir()  # a user-named file goes into a folder that exists (pear.harness.outputs)
    info = inspect_path(tiny_run.run, plot=out)
    assert info["plot"] == str(out)
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    with Image.open(out) as img:
        assert img.width > 500 and img.height > 300
    assert [p.name for p in out.parent.iterdir()] == ["map.png"]  # no temporary file left


def test_cli_json_and_corrupt_checkpoint(tiny_run, tmp_path, capsys):
    assert main(["inspect", str(tiny_run.run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(inspect_path(tiny_run.run)))

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run.run / "checkpoint", broken)
    data = bytearray((broken / "adapters.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (broken / "adapters.safetensors").write_bytes(bytes(data))
    assert main(["inspect", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "pear: error:" in err and "adapters.safetensors" in err and "SHA-256" in err

    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plain_checkpoint_shows_what_it_stores(tmp_path, model_factory):
    model = model_factory("vit")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.head.parameters():
        p.requires_grad_(True)
    save_plain(model, tmp_path / "linear", method="linear", backbone="vit_tiny_patch16_224", class_names=None,
               fingerprint_value="0" * 32, meta={})
    info = inspect_path(tmp_path / "linear")
    head = sum(p.numel() for p in model.head.parameters())
    assert info["kind"] == "plain" and info["method"] == "linear"
    assert info["totals"]["stored_params"] == info["totals"]["head_params"] == head
    assert info["totals"]["checkpoint_file_bytes"] == sum(f.stat().st_size for f in (tmp_path / "linear").iterdir())
    assert "linear" in render_table(info)
    with pytest.raises(pear.PearError, match="no adapter positions to plot"):
        inspect_path(tmp_path / "linear", plot=tmp_path / "p.png")
