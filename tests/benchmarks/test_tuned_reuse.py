"""benchmarks/tuned_reuse.py: fixed-scale runs taken into --tune's table only where the
protocol's recorded choice is their scale, renamed as --tune names its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pear.harness.suites.results import CSV_FIELDS, write_tables
from pear.harness.suites.results_csv import read_csv


@pytest.fixture(scope="module")
def reuse(load_script):
    return load_script("benchmarks/tuned_reuse.py")


def row(task: str, method: str, seed: int, acc: float, tuned: str | None = None) -> dict:
    """A results.csv row as read_csv reads one: every column, unrecorded ones None."""
    return {
        **dict.fromkeys(CSV_FIELDS),
        "task": task,
        "method": method,
        "seed": seed,
        "test_acc": acc,
        "checkpoint_file_bytes": 4000,
        "epochs": 30,
        "device": "cpu",
        "tuned": tuned,
        "run": f"runs/{task}/{method}/seed{seed}",
    }


def choice(suite: Path, task: str, method: str, chosen: float) -> None:
    folder = suite / "tuning" / task / method
    folder.mkdir(parents=True)
    record = {
        "task": task,
        "method": method,
        "option": "scale",
        "grid": [0.1, 1.0, 4.0],
        "val200_acc": {"0.1": 10.0, "1": 15.0, "4": 12.0},
        "chosen": chosen,
    }
    (folder / "choice.json").write_text(json.dumps(record))


def test_tuned_name_drops_the_tuned_setting_and_keeps_the_others(reuse):
    assert reuse.tuned_name("pear@scale=1@prune_ratio=0.75", "scale", "1") == "pear@prune_ratio=0.75"
    assert reuse.tuned_name("adapter@scale=1", "scale", "1") == "adapter"
    assert reuse.tuned_name("adapter@scale=4", "scale", "1") is None  # another scale
    # an ablation is --tune's run of the same name: it takes pear's choice
    assert reuse.tuned_name("pear@scale=1@prune_ratio=0.75@share=top1", "scale", "1") == "pear@prune_ratio=0.75@share=top1"
    assert reuse.tuned_name("linear", "scale", "1") is None
    assert reuse.tuned_name("pear@scale", "scale", "1") is None  # no FIELD=VALUE: not a suite name


def test_reuses_the_chosen_scale_and_keeps_the_tuned_runs(reuse, tmp_path):
    suite, tuned = tmp_path / "suite", tmp_path / "tuned"
    choice(suite, "ori", "adapter", 1.0)
    choice(suite, "ori", "pear", 1.0)
    fixed = [row("ori", "adapter@scale=1", s, 13.0 + s) for s in range(3)] + [
        row("ori", "adapter@scale=4", 0, 99.0),
        row("loc", "adapter@scale=1", 0, 98.0),  # another task
        row("ori", "pear@scale=1@prune_ratio=0.75", 0, 12.0),
        row("ori", "pear@scale=1@prune_ratio=0.75@share=top1", 0, 97.0),
        row("ori", "prune@scale=1@prune_ratio=0.75@share=top1", 0, 96.0),  # prune is not reused here
    ]
    write_tables(tmp_path, fixed, "pear suite --fixed")
    tuned.mkdir()
    # --tune's own run of prune stays, and so would a tuned adapter run it made itself.
    write_tables(
        tuned,
        [row("ori", "prune@prune_ratio=0.75", 0, 11.0, "scale=4"), row("ori", "adapter", 2, 50.0, "scale=1")],
        "pear suite --tune",
    )
    assert (
        reuse.main(
            [str(suite), str(tuned), str(tmp_path / "results.csv"), "--tasks", "ori", "--methods", "adapter,pear"]
        )
        == 0
    )
    rows = {(r["method"], r["seed"]): r for r in read_csv(tuned / "results.csv")}
    assert sorted(rows) == [
        ("adapter", 0),
        ("adapter", 1),
        ("adapter", 2),
        ("pear@prune_ratio=0.75", 0),
        ("pear@prune_ratio=0.75@share=top1", 0),
        ("prune@prune_ratio=0.75", 0),
    ]
    assert rows[("adapter", 0)]["test_acc"] == 13.0 and rows[("adapter", 0)]["tuned"] == "scale=1"
    assert rows[("adapter", 0)]["run"] == "runs/ori/adapter@scale=1/seed0"  # where the row came from
    assert rows[("adapter", 2)]["test_acc"] == 50.0  # the tuned run wins
    md = (tuned / "results.md").read_text()
    assert "`pear suite --tune`" in md and "fixed-scale runs at the scale --tune chose" in md


def test_a_choice_no_fixed_run_matches_is_refused(reuse, tmp_path, capsys):
    suite = tmp_path / "suite"
    choice(suite, "ori", "prune", 4.0)
    write_tables(tmp_path, [row("ori", "prune@scale=1@prune_ratio=0.75", 0, 12.0)], "pear suite --fixed")
    assert (
        reuse.main(
            [str(suite), str(tmp_path / "tuned"), str(tmp_path / "results.csv"), "--tasks", "ori", "--methods", "prune"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "ori/prune: the protocol chose scale = 4" in err and "pear suite --tune" in err
    assert not (tmp_path / "tuned").exists()  # nothing written


def test_a_missing_choice_names_its_file(reuse, tmp_path, capsys):
    write_tables(tmp_path, [row("ori", "adapter@scale=1", 0, 12.0)], "pear suite --fixed")
    assert (
        reuse.main(
            [
                str(tmp_path / "suite"),
                str(tmp_path / "tuned"),
                str(tmp_path / "results.csv"),
                "--tasks",
                "ori",
                "--methods",
                "adapter",
            ]
        )
        == 2
    )
    assert "choice.json" in capsys.readouterr().err
