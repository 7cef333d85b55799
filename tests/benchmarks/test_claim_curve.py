"""benchmarks/claim_curve.py on a results.csv written here: per-seed means over the tasks, the
paired pear - prune differences, the ablation rows, the targets' verdicts and the plot."""

from __future__ import annotations

import csv

import pytest

FIELDS = ["task", "method", "seed", "test_acc", "checkpoint_file_bytes", "adapter_bytes", "tuned"]


@pytest.fixture(scope="module")
def claim(load_script):
    return load_script("benchmarks/claim_curve.py")


def write(path, accs: dict[str, list[float]], tasks=("a", "b"), tuned: dict[str, str] | None = None) -> None:
    """accs: method -> accuracy per seed, the same on every task (task b 10 points lower);
    tuned: method -> its `tuned` cell (--tune's choice), empty for the others."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for t, offset in zip(tasks, (0.0, -10.0)):
            for m, values in accs.items():
                for seed, acc in enumerate(values):
                    bytes_ = 1000 if m.startswith("linear") else 50_000
                    w.writerow({"task": t, "method": m, "seed": seed, "test_acc": acc + offset,
                                "checkpoint_file_bytes": bytes_, "adapter_bytes": "" if m == "linear" else 40_000,
                                "tuned": (tuned or {}).get(m, "")})


def keep_rows(path, keep) -> None:
    """Rewrite the results.csv at `path` with only the rows `keep` accepts (runs not finished yet)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if keep(r)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_means_pairs_ablations_and_targets(claim, tmp_path):
    csv_path = tmp_path / "results.csv"
    write(csv_path, {
        "linear": [10, 11, 12],
        "adapter@scale=1": [40, 41, 42],
        "pear@scale=1@prune_ratio=0.5": [40, 40.5, 41],
        "prune@scale=1@prune_ratio=0.5": [39, 40, 41],
        "pear@scale=1@prune_ratio=0.75": [33, 35, 34],
        "prune@scale=1@prune_ratio=0.75": [31, 33, 32],
        "pear@scale=1@prune_ratio=0.75@knowledge=none": [30, 31, 32],
        "pear@scale=1@prune_ratio=0.75@share=top1": [34, 34, 34],
    })
    claim.main([str(csv_path), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "claim.md").read_text()
    assert (tmp_path / "out" / "claim.png").stat().st_size > 0
    # seed means over tasks a and b (b is 10 lower): pear 0.75 -> 28, 30, 29
    assert "| pear@scale=1@prune_ratio=0.75 | 29.00 ± 1.00 | 34.00 ± 1.00 | 24.00 ± 1.00 |" in md
    assert "| 0.75 | a, b | 29.00 ± 1.00 | 27.00 ± 1.00 | 2.00 ± 0.00 |" in md and "| 0.5 | a, b |" in md  # paired
    assert "| knowledge | none | a, b | 26.00 ± 1.00 | merge: 29.00 ± 1.00 | -3.00 ± 1.00 | 50,000 |" in md
    assert "| share | top1 |" in md
    assert "ratio 0.5 (a, b): pear 35.50, adapter 36.00, difference -0.50: **met**" in md  # exactly adapter - 0.5 counts as met
    assert "0.75 (a, b): +2.00: **met**" in md
    assert "merge 29.00 ± 1.00, none 26.00 ± 1.00: **met**" in md


def test_only_tasks_with_every_seed_of_every_method_count(claim, tmp_path):
    csv_path = tmp_path / "results.csv"
    write(csv_path, {"pear@scale=1@prune_ratio=0.9": [20, 21, 22], "prune@scale=1@prune_ratio=0.9": [20, 20, 20]})
    keep_rows(csv_path, lambda r: not (r["task"] == "b" and r["seed"] == "2"))
    claim.main([str(csv_path), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "claim.md").read_text()
    assert "Tasks averaged: a;" in md and "0.9 (a): +1.00: **met**" in md


def test_a_run_in_two_files_is_refused(claim, tmp_path):
    write(tmp_path / "one.csv", {"linear": [1, 2, 3]})
    write(tmp_path / "two.csv", {"linear": [1, 2, 3]})
    with pytest.raises(SystemExit, match="appears in two of the files"):
        claim.main([str(tmp_path / "one.csv"), str(tmp_path / "two.csv"), "--out", str(tmp_path / "out")])


def test_a_method_on_fewer_tasks_gets_its_own_table_not_the_means(claim, tmp_path):
    csv_path = tmp_path / "results.csv"
    write(csv_path, {"linear": [10, 11, 12], "adapter@scale=1": [40, 41, 42],
                     "pear@scale=1@prune_ratio=0.75": [33, 35, 34], "prune@scale=1@prune_ratio=0.75": [31, 33, 32],
                     "pear@scale=1@prune_ratio=0.9": [20, 21, 22], "prune@scale=1@prune_ratio=0.9": [20, 20, 20],
                     "full": [50, 51, 52]})
    keep_rows(csv_path, lambda r: r["task"] == "a" or not r["method"].endswith(("0.9", "full")))  # so far
    claim.main([str(csv_path), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "claim.md").read_text()
    assert "Tasks averaged: a, b;" in md  # the anchor's tasks, not only a
    main_table = md.split("## Measured on fewer tasks")[0]
    assert "| full |" not in main_table and "prune_ratio=0.9 |" not in main_table
    assert "| full | a | 51.00 ± 1.00 | 41.00 ± 1.00 | 34.00 ± 1.00 | 50,000 |" in md
    assert "| 0.9 | a | 21.00 ± 1.00 | 20.00 ± 0.00 | 1.00 ± 1.00 |" in md  # still paired where it ran


def test_headline_table_for_the_readme(claim, tmp_path):
    csv_path = tmp_path / "results.csv"
    write(csv_path, {"linear": [10, 11, 12], "adapter@scale=1": [40, 41, 42],
                     "pear@scale=1@prune_ratio=0.75": [33, 35, 34], "prune@scale=1@prune_ratio=0.75": [31, 33, 32],
                     "full": [50, 51, 52]})
    claim.main([str(csv_path), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out" / "headline.md").read_text().splitlines()
    assert lines[0].startswith("| method | accuracy, mean over the 2 tasks |")
    assert "| **pear, ratio 0.75** | 29.00 ± 1.00 | 50,000 | +2.00 ± 0.00 |" in lines
    assert "| prune, ratio 0.75 | 27.00 ± 1.00 | 50,000 |  |" in lines
    assert lines[-1] == "| full fine-tuning | 46.00 ± 1.00 | 50,000 |  |" and "| linear probe | 6.00 ± 1.00 | 1,000 |  |" in lines


def test_scale_tuned_reports_the_runs_of_pear_suite_tune(claim, tmp_path):
    """--tune's runs name no scale: `--scale tuned` takes them as the family, and a later call
    without it reports s = 1 again (the script's state is set by each call)."""
    csv_path = tmp_path / "results.csv"
    write(csv_path, {
        "linear": [10, 11, 12],
        "adapter": [50, 51, 52],
        "pear@prune_ratio=0.75": [45, 46, 47],
        "prune@prune_ratio=0.75": [40, 41, 42],
        "adapter@scale=1": [40, 41, 42],  # an untuned run beside them is not the family
        "pear@prune_ratio=0.75@share=none": [41, 42, 43],
    })
    claim.main([str(csv_path), "--out", str(tmp_path / "out"), "--scale", "tuned"])
    md = (tmp_path / "out" / "claim.md").read_text()
    assert "| 0.75 | a, b | 41.00 ± 1.00 | 36.00 ± 1.00 | 5.00 ± 0.00 |" in md
    assert "| share | none | a, b | 37.00 ± 1.00 | matched: 41.00 ± 1.00 | -4.00 ± 0.00 |" in md
    assert "Ablations (pear, s = tuned," in md
    headline = (tmp_path / "out" / "headline.md").read_text()
    assert "| adapter | 46.00 ± 1.00 |" in headline
    write(csv_path, {"linear": [10, 11, 12], "adapter@scale=1": [40, 41, 42],
                     "pear@scale=1@prune_ratio=0.75": [33, 35, 34], "prune@scale=1@prune_ratio=0.75": [31, 33, 32]})
    claim.main([str(csv_path), "--out", str(tmp_path / "out1")])
    assert "| 0.75 | a, b | 29.00 ± 1.00 | 27.00 ± 1.00 | 2.00 ± 0.00 |" in (tmp_path / "out1" / "claim.md").read_text()


def test_at_scale_tuned_a_tuned_lora_replaces_its_default_run(claim, tmp_path):
    """The LoRAs at --tune's alpha (tuned table) beside the same LoRAs at their default alpha (the
    fixed table): the tuned runs are reported, and the choices are named; anything else in two files
    is still refused."""
    write(tmp_path / "tuned.csv", {"adapter": [50, 51, 52], "pear@prune_ratio=0.75": [45, 46, 47],
                                   "prune@prune_ratio=0.75": [40, 41, 42], "peft-lora": [30, 31, 32]},
          tuned={"adapter": "scale=4", "pear@prune_ratio=0.75": "scale=4", "prune@prune_ratio=0.75": "scale=4",
                 "peft-lora": "lora_alpha=32"})
    write(tmp_path / "fixed.csv", {"linear": [10, 11, 12], "peft-lora": [20, 21, 22], "full": [60, 60, 60]})
    claim.main([str(tmp_path / "tuned.csv"), str(tmp_path / "fixed.csv"), "--out", str(tmp_path / "out"),
                "--scale", "tuned"])
    md = (tmp_path / "out" / "claim.md").read_text()
    assert "| peft-lora | 26.00 ± 1.00 |" in md  # the tuned runs: 31 on a, 21 on b
    assert "peft-lora: a lora_alpha=32, b lora_alpha=32" in md and "adapter: a scale=4, b scale=4" in md
    assert "| full | 55.00 ± 0.00 |" in md
    with pytest.raises(SystemExit, match="appears in two of the files"):  # at a fixed scale: refused
        claim.main([str(tmp_path / "tuned.csv"), str(tmp_path / "fixed.csv"), "--out", str(tmp_path / "o2")])
    write(tmp_path / "fixed2.csv", {"linear": [10, 11, 12]})
    with pytest.raises(SystemExit, match="appears in two of the files"):  # two fixed runs: refused
        claim.main([str(tmp_path / "fixed.csv"), str(tmp_path / "fixed2.csv"), "--out", str(tmp_path / "o3"),
                    "--scale", "tuned"])


def test_a_run_trained_at_a_value_no_longer_chosen_is_refused(claim, tmp_path):
    write(tmp_path / "tuned.csv", {"adapter": [50, 51, 52]}, tuned={"adapter": "scale=4 (chosen now: 16)"})
    with pytest.raises(SystemExit, match=r"trained at scale=4 \(chosen now: 16\), not at --tune's choice now"):
        claim.main([str(tmp_path / "tuned.csv"), "--out", str(tmp_path / "out"), "--scale", "tuned"])
