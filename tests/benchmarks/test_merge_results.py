"""benchmarks/merge_results.py and the results functions it stands on: a suite folder's rows
joined to a kept results.csv, round-tripped through read_csv, the newer row winning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pear.errors import PearError
from pear.harness.suites.results import aggregate
from pear.harness.suites.results_csv import merge_rows, read_csv


@pytest.fixture(scope="module")
def merge_script(load_script):
    return load_script("benchmarks/merge_results.py")


def suite_folder(out: Path, runs: dict[tuple[str, str, int], float], command: str) -> None:
    for (task, method, seed), acc in runs.items():
        run = out / "runs" / task / method / f"seed{seed}"
        run.mkdir(parents=True)
        metrics = {"task": task, "seed": seed, "test_acc": acc, "trainable_params": 100,
                   "checkpoint_file_bytes": 4000, "train_seconds": 12.5, "epochs": 30, "device": "cpu",
                   "cpu": "Some CPU"}
        (run / "metrics.json").write_text(json.dumps(metrics))
    aggregate(out, command=command)


def test_read_csv_round_trips_aggregate(tmp_path):
    suite_folder(tmp_path, {("toy", "pear", 0): 40.0, ("toy", "prune", 1): 38.5}, "pear suite --one")
    rows = read_csv(tmp_path / "results.csv")
    assert rows == aggregate(tmp_path)
    assert rows[0]["seed"] == 0 and rows[0]["test_acc"] == 40.0 and rows[0]["checkpoint_file_bytes"] == 4000
    assert rows[0]["train_seconds"] == 12.5 and rows[0]["backbone"] is None


def test_merge_keeps_old_rows_and_the_new_ones_win(merge_script, tmp_path):
    kept, suite = tmp_path / "kept", tmp_path / "suite"
    suite_folder(tmp_path / "old", {("toy", "pear", 0): 40.0, ("toy", "pear", 1): 42.0}, "pear suite --old")
    kept.mkdir()
    for name in ("results.csv", "results.md"):
        (kept / name).write_bytes((tmp_path / "old" / name).read_bytes())
    suite_folder(suite, {("toy", "pear", 1): 44.0, ("toy", "prune", 0): 30.0}, "pear suite --new")
    assert merge_script.main([str(kept), str(suite)]) == 0
    rows = read_csv(kept / "results.csv")
    assert [(r["method"], r["seed"], r["test_acc"]) for r in rows] == [
        ("pear", 0, 40.0), ("pear", 1, 44.0), ("prune", 0, 30.0)]
    md = (kept / "results.md").read_text()
    assert "`pear suite --new`" in md and "Runs: 3; 2 from the latest call's suite folder" in md
    assert "42.00 ± 2.83 (n=2)" in md  # pear: 40 and 44
    assert (kept / "accuracy_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"
    # Merging again changes nothing: the suite's rows are already there.
    before = (kept / "results.csv").read_bytes()
    assert merge_script.main([str(kept), str(suite)]) == 0 and (kept / "results.csv").read_bytes() == before


def test_merge_rows_sorts_and_dedups():
    a = [{"task": "t", "method": "prune", "seed": 0, "test_acc": 1.0}]
    b = [{"task": "t", "method": "pear", "seed": 2, "test_acc": 2.0}, {"task": "t", "method": "prune", "seed": 0,
                                                                      "test_acc": 3.0}]
    assert [(r["method"], r["test_acc"]) for r in merge_rows(a, b)] == [("pear", 2.0), ("prune", 3.0)]


def test_bad_csv_is_named(merge_script, tmp_path, capsys):
    (tmp_path / "results.csv").write_text("task,method\nt,pear\n")
    with pytest.raises(PearError, match=r"results.csv is not a suite's results.csv: it has no column seed"):
        read_csv(tmp_path / "results.csv")
    suite_folder(tmp_path / "s", {("toy", "pear", 0): 40.0}, "pear suite")
    text = (tmp_path / "s/results.csv").read_text().replace(",40.0,", ",forty,")
    (tmp_path / "s/results.csv").write_text(text)
    assert merge_script.main([str(tmp_path / "k"), str(tmp_path / "s")]) == 2
    assert "results.csv, line 2: a number was expected" in capsys.readouterr().err


def test_a_csv_from_before_the_cpu_column_still_merges(merge_script, tmp_path):
    suite_folder(tmp_path / "old", {("toy", "pear", 0): 40.0}, "pear suite --old")
    kept = tmp_path / "kept"
    kept.mkdir()
    lines = (tmp_path / "old/results.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = [header.index("cpu"), header.index("gpu")]
    (kept / "results.csv").write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i not in drop)
                                                for line in lines) + "\n")
    suite_folder(tmp_path / "new", {("toy", "pear", 1): 44.0}, "pear suite --new")
    assert merge_script.main([str(kept), str(tmp_path / "new")]) == 0
    rows = read_csv(kept / "results.csv")
    assert [(r["seed"], r["cpu"]) for r in rows] == [(0, None), (1, "Some CPU")]
    assert "- Runs' CPUs: Some CPU (1 of the 2 runs recorded none)\n" in (kept / "results.md").read_text()
