"""Rows of `pear suite --tune`'s table taken from runs already made at a fixed scale: where the
protocol's val200 choice for a method is the scale that a fixed-scale phase already trained at
every seed (s = 1 for adapter and pear on sprites_ori), those runs are the tuned runs (the same
recipe, seeds and train800val200 split), so they are not trained a second time.

    python benchmarks/tuned_reuse.py ../suites/long_tune benchmarks/results/pear_vit_long/tuned \\
        benchmarks/results/pear_vit_long/adequacy/results.csv benchmarks/results/pear_vit_long/results.csv \\
        --tasks sprites_ori --methods adapter,pear

Reads each choice from SUITE/tuning/<task>/<method>/choice.json (the protocol's record), takes
the fixed tables' rows of `<method>@scale=<chosen>` (with any other settings), renames them as
--tune names its runs (`pear@prune_ratio=0.75`, `tuned` = `scale=1`; an ablation keeps its
setting: `pear@prune_ratio=0.75@share=top1`) and merges them into the tuned folder's results.csv / results.md. The `run` column keeps the fixed run's
folder, so the table says where each row came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pear.errors import PearError
from pear.harness.suites import tuning
from pear.harness.suites.grammar import split_name
from pear.harness.suites.results_csv import merge_into, read_command, read_csv


def tuned_name(method: str, option: str, value: str) -> str | None:
    """'pear@scale=1@prune_ratio=0.75' -> 'pear@prune_ratio=0.75' (the name --tune gives the same run)
    when option=value is among its settings; None for any other name. Its other settings stay: a
    --tune run of 'pear@prune_ratio=0.75@share=top1' takes pear's choice, as this run took s = 1."""
    try:
        base, settings = split_name(method)
    except PearError:
        return None
    if settings.get(option) != value:
        return None
    return "@".join([base, *(f"{k}={v}" for k, v in settings.items() if k != option)])


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
        rows = merge_into(  # a run --tune made itself wins over a reused one
            args.tuned,
            reused,
            new_wins=False,
            command=read_command(args.tuned / "results.md"),
            note=lambda n: (
                f"Runs: {n}; {len(reused)} of them ({args.methods} on {args.tasks}) are fixed-scale runs at "
                f"the scale --tune chose (benchmarks/tuned_reuse.py; their `run` column names the fixed run)"
            ),
        )
    except PearError as exc:
        print(f"tuned_reuse: {exc}", file=sys.stderr)
        return 2
    print(f"tuned_reuse: {len(reused)} rows reused, {len(rows)} in {args.tuned / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
