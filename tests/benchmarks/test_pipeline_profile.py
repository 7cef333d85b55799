"""benchmarks/pipeline_profile.py on the tiny task and a toy ViT: `pear train` runs under the
profile, and every part of the table comes out of it, adding up to the command's CPU time."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def profile(load_script):
    return load_script("benchmarks/pipeline_profile.py")


def test_the_table_splits_the_command_into_parts_that_add_up(profile, tiny_vtab, tiny_vit_args, tmp_path, capsys):
    stats = tmp_path / "run.prof"
    code = profile.main(["--data", str(tiny_vtab), "--task", "toy", "--out", str(tmp_path / "run"), "--stats",
                         str(stats), "--", *tiny_vit_args, "--weights", "random", "--epochs", "2", "--batch-size", "8", "--workers", "0"])
    assert code == 0 and stats.is_file() and (tmp_path / "run" / "metrics.json").is_file()
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \| [0-9.]+% \|$", out, re.MULTILINE))
    assert len(rows) == 13, out
    parts = {name: float(s) for name, s in rows.items() if name != "total"}
    # Every part is measured; a tiny one may print as 0.00 s (the table's rounding), so the parts are
    # checked present, and the training step, which holds most of the work, as taking time.
    steps = ("train steps: forward + loss", "train steps: backward", "train steps: optimizer (AdamW)")
    for name in ("data, once: PNG open + decode + RGB (PIL)", *steps, "test evaluation: forward"):
        assert name in parts and parts[name] >= 0, (name, out)
    assert sum(parts[name] for name in steps) > 0, out
    assert sum(parts.values()) == pytest.approx(float(rows["total"]), abs=0.07)  # 12 rows rounded to 0.01
    assert "Training loop (10 steps)" in out  # 40 train800val200 images, batch 8, 2 epochs
