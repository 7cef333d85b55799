"""Rows of `pear suite --tune`'s table taken from runs already made at a fixed scale: where the
protocol's val200 choice for a method is the scale that a fixed-scale phase already trained at
every seed (s = 1 for adapter and pear on sprites_ori), those runs are the tuned runs (the same
recipe, seeds and train800val200 split), so they are not trained a second time.

    python benchmarks/tuned_reuse.py ../suites/long_tune benchmarks/results/pear_vit_long/tuned \\
        benchmarks/results/pear_vit_long/adequacy/results.csv benchmarks/results/pear_vit_long/results.csv \\
        --tasks sprites_ori --methods adapter,pear

Reads each choice from SUITE/tuning/<task>/<method>/choice.json (the protocol's record), takes
the fixed tables' rows of `<method>@scale=<chosen>` (with `@prune_ratio=` and nothing else),
renames them as --tune names its runs (`pear@prune_ratio=0.75`, `tuned` = `scale=1`) and merges
them into the tuned folder's results.csv / results.md. The `run` column keeps the fixed run's
folder, so the table says where each row came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pear.errors import PearError
from pear.harness.suites import tuning
from pear.harness.suites.results import write_tables
from pear.harness.suites.results_csv import merge_rows, read_command, read_csv

KEPT_OPTIONS = ("prune_ratio",)  # options a reused row may name beside the tuned one


def tuned_name(method: str, option: str, value: str) -> str | None:
    """'pear@scale=1@prune_ratio=0.75' -> 'pear@prune_ratio=0.75' when option=value is among its
    options and the rest are KEPT_OPTIONS; None for any other name."""
    base, *settings = method.split("@")
    pairs = [s.split("=", 1) for s in settings]
    if any(len(p) != 2 for p in pairs) or [option, value] not in pairs:
        return None
    rest = [f"{k}={v}" for k, v in pairs if k != option]
    if any(k not in KEPT_OPTIONS for k, _ in (r.split("=", 1) for r in rest)):
        return None
    return "@".join([base, *rest])


def reused_rows(suite: Path, fixed: list[dict], tasks: list[str], methods: list[str]) -> list[dict]:
    """The fixed rows that are the tuned runs of each (task, method), renamed; PearError when a
    choice is missing or no fixed run was made at the chosen value."""
    out = []
    for task in tasks:
        for method in methods:
            record = tuning.read_choice(tuning.grid_dir(suite, task, method) / tuning.CHOICE_FILE)
            option, value = record["option"], f"{record['chosen']:g}"
            found = []
            for row in fixed:
                name = tuned_name(row["method"], option, value) if row["task"] == task else None
                if name is not None and name.split("@", 1)[0] == method:
                    found.append({**row, "method": name, "tuned": f"{option}={value}"})
            if not found:
                raise PearError(
                    f"{task}/{method}: the protocol chose {option} = {value}, and the fixed tables hold no "
                    f"run of {method}@{option}={value}: train it with `pear suite --tune` instead"
                )
            out += found
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path, help="the --tune suite folder (its tuning/*/*/choice.json)")
    ap.add_argument("tuned", type=Path, help="the tuned results folder kept in the repo (its results.csv)")
    ap.add_argument("fixed", type=Path, nargs="+", help="results.csv files of fixed-scale runs")
    ap.add_argument("--tasks", required=True, help="comma-separated tasks")
    ap.add_argument("--methods", required=True, help="comma-separated tuned methods (adapter, pear, prune)")
    args = ap.parse_args(argv)
    try:
        fixed = [r for path in args.fixed for r in read_csv(path)]
        reused = reused_rows(args.suite, fixed, args.tasks.split(","), args.methods.split(","))
        kept_csv = args.tuned / "results.csv"
        old = read_csv(kept_csv) if kept_csv.is_file() else []
        rows = merge_rows(reused, old)  # a run --tune made itself wins over a reused one
        command = read_command(args.tuned / "results.md")
        note = (
            f"Runs: {len(rows)}; {len(reused)} of them ({args.methods} on {args.tasks}) are fixed-scale runs at "
            f"the scale --tune chose (benchmarks/tuned_reuse.py; their `run` column names the fixed run)"
        )
        args.tuned.mkdir(parents=True, exist_ok=True)
        write_tables(args.tuned, rows, command, notes=[note])
    except PearError as exc:
        print(f"tuned_reuse: {exc}", file=sys.stderr)
        return 2
    print(f"tuned_reuse: {len(reused)} rows reused, {len(rows)} in {args.tuned / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
