"""benchmarks/regrid.py: the tuned table archived as it stood, and the rows a widened grid chooses
again taken out of it."""

from __future__ import annotations

import pytest

from pear.harness.suites.results import write_tables
from pear.harness.suites.results_csv import read_csv

from test_tuned_reuse import row  # noqa: E402  (tests/benchmarks is on sys.path under pytest)


@pytest.fixture(scope="module")
def regrid(load_script):
    return load_script("benchmarks/regrid.py")


def test_the_rows_chosen_again_are_archived_and_taken_out(regrid, tmp_path):
    tuned, tuning, archive = tmp_path / "tuned", tmp_path / "tuning", tmp_path / "tuned_grid3"
    rows = [row("loc", "adapter", 0, 40.0, "scale=4"), row("loc", "pear@prune_ratio=0.75@share=none", 0, 38.0,
            "scale=4"), row("loc", "peft-lora", 0, 50.0, "lora_alpha=128"), row("ori", "adapter", 0, 14.0, "scale=1")]
    write_tables(tuned, rows, "pear suite ...")
    (tuning / "loc" / "adapter").mkdir(parents=True)
    (tuning / "loc" / "adapter" / "choice.json").write_text("{}")
    assert regrid.main([str(tuned), str(tuning), str(archive), "--option", "scale", "--tasks", "loc"]) == 0
    assert [(r["task"], r["method"]) for r in read_csv(tuned / "results.csv")] == [("loc", "peft-lora"),
                                                                                  ("ori", "adapter")]
    assert len(read_csv(archive / "results.csv")) == 4 and (archive / "tuning/loc/adapter/choice.json").is_file()
    assert "are in tuned_grid3/ (benchmarks/regrid.py)" in (tuned / "results.md").read_text()
    before = (tuned / "results.csv").read_text()
    assert regrid.main([str(tuned), str(tuning), str(archive), "--option", "scale", "--tasks", "loc"]) == 2
    assert (tuned / "results.csv").read_text() == before  # an archive that exists: nothing changed
    # A later task on the same archive: its rows are already there, so they are only taken out.
    assert regrid.main([str(tuned), str(tuning), str(archive), "--option", "scale", "--tasks", "ori", "--archived"]) == 0
    assert [(r["task"], r["method"]) for r in read_csv(tuned / "results.csv")] == [("loc", "peft-lora")]
    assert regrid.main([str(tuned), str(tuning), str(tmp_path / "none"), "--option", "scale", "--tasks", "ori",
                        "--archived"]) == 2
