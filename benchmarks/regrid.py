"""Before `pear suite --tune` trains again over a widened grid: keep the tuned table as it stands
(the choices made over the old grid) in an archive folder, and take out of it the rows that the new
grid chooses again, so the table never mixes runs of the two grids.

    python benchmarks/regrid.py benchmarks/results/pear_vit_long/tuned \\
        benchmarks/results/pear_vit_long/tuning benchmarks/results/pear_vit_long/tuned_grid3 \\
        --option scale --tasks fashion_mnist,sprites_loc

Copies TUNED (results.csv, results.md, claim.md, ...) and TUNING (every choice.json, choices.md)
into ARCHIVE (ARCHIVE/tuning for the records); refuses an ARCHIVE that exists (with --archived, an
earlier call's ARCHIVE already holds them, and nothing is copied). Then rewrites
TUNED's tables without the rows whose `tuned` cell is OPTION=... on TASKS (adapter, pear, prune and
the Pear ablations for --option scale): the rows the next `pear suite --tune` call trains again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pear.errors import PearError
from pear.harness.suites.results import write_tables
from pear.harness.suites.results_csv import read_command, read_csv


def regrid(
    tuned: Path, tuning: Path, archive: Path, option: str, tasks: list[str], archived: bool = False
) -> tuple[int, int]:
    """Archive the tables and records (unless `archived`: an earlier call kept them there, and the rows
    to drop are among them), then drop the rows the new grid chooses again; returns (rows dropped, rows kept)."""
    if archived and not archive.is_dir():
        raise PearError(f"{archive} is not a folder: --archived needs the archive an earlier call made (nothing was changed)")
    if not archived and archive.exists():
        raise PearError(f"{archive} exists; choose another archive folder (nothing was changed)")
    rows = read_csv(tuned / "results.csv")
    if not archived:
        shutil.copytree(tuned, archive)
        shutil.copytree(tuning, archive / "tuning")
    again, kept = [], []
    for r in rows:
        trains_again = r["task"] in tasks and str(r.get("tuned") or "").startswith(f"{option}=")
        (again if trains_again else kept).append(r)
    note = (
        f"Runs: {len(kept)}; the {len(again)} runs that --tune chose {option} for on {', '.join(tasks)} "
        f"over the earlier grid are in {archive.name}/ (benchmarks/regrid.py), to be trained again"
    )
    write_tables(tuned, kept, read_command(tuned / "results.md"), notes=[note])
    return len(again), len(kept)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tuned", type=Path, help="the tuned results folder (its results.csv is rewritten)")
    ap.add_argument("tuning", type=Path, help="the folder of kept tuning records (copied, not changed)")
    ap.add_argument("archive", type=Path, help="a new folder: the tables and records as they were")
    ap.add_argument("--option", required=True, help="the option whose grid changed: scale or lora_alpha")
    ap.add_argument("--tasks", required=True, help="comma-separated tasks where the new grid trains again")
    ap.add_argument("--archived", action="store_true", help="ARCHIVE already holds these rows: only drop them")
    args = ap.parse_args(argv)
    try:
        dropped, kept = regrid(
            args.tuned, args.tuning, args.archive, args.option, args.tasks.split(","), archived=args.archived
        )
    except PearError as exc:
        print(f"regrid: {exc}", file=sys.stderr)
        return 2
    print(f"regrid: {dropped} rows archived in {args.archive} and taken out of {args.tuned}; {kept} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
