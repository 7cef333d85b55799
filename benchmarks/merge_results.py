"""Keep a suite's tables beside tables kept from an earlier suite folder: the union of their
results.csv rows, one per (task, method, seed), the suite folder's rows winning, written as
results.csv, results.md and accuracy_vs_bytes.png (`pear.harness.suites.results`).

A suite folder holds the run folders (checkpoints) and is not committed; when it is lost, the
runs still to make go to a new one, and this keeps the committed rows of the old one:

    python benchmarks/merge_results.py benchmarks/results/pear_vit_long ../suites/long
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pear.errors import PearError
from pear.harness.suites.results_csv import merge_into, read_command, read_csv


def merge(kept: Path, suite: Path) -> list[dict]:
    """kept/results.csv (if any) merged with suite/results.csv, written into kept."""
    new = read_csv(suite / "results.csv")
    return merge_into(
        kept,
        new,
        command=read_command(suite / "results.md"),
        note=lambda n: (
            f"Runs: {n}; {len(new)} from the latest call's suite folder, the others kept from earlier "
            f"suite folders' tables (benchmarks/merge_results.py)"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept", type=Path, help="the results folder kept in the repo (its results.csv is kept)")
    ap.add_argument("suite", type=Path, help="the suite folder whose results.csv joins it")
    args = ap.parse_args(argv)
    try:
        rows = merge(args.kept, args.suite)
    except PearError as exc:
        print(f"merge_results: {exc}", file=sys.stderr)
        return 2
    print(f"merge_results: {len(rows)} runs in {args.kept / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
