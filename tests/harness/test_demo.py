"""`pear demo`: the built-in default job shows the method whole, sharing included."""

import re

import pytest

from pear.cli import main
from pear.harness.builders import FASHION_MNIST_DIR


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (scripts/setup.sh)")
def test_demo_prunes_and_every_pruned_position_shares_a_kept_adapter(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    counts = re.search(r"positions\s+(\d+): (\d+) pruned, (\d+) of them shared", out)
    assert counts, out
    total, pruned, shared = map(int, counts.groups())
    assert total == 12 and pruned == 6 and shared == 6
    assert out.count(" pruned ") >= 6 and "pear_vit_tiny6_patch4_32" in out
    assert re.search(r"test accuracy \d+\.\d+%", out)


def test_demo_on_a_torchrun_rank_without_metrics_returns_quietly(tmp_path, monkeypatch, capsys):
    """Under torchrun only rank 0 gets metrics back from train(): another rank neither reports nor fails."""
    import pear.harness.demo as demo

    monkeypatch.setattr(demo, "train", lambda cfg: None)
    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    assert demo.run_demo(out=str(tmp_path / "run"), data=str(tmp_path / "data")) == {}
    assert capsys.readouterr().out == ""
