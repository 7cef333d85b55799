"""The recipe curve: val200 accuracy after the last epoch of runs trained on train800 for
several epoch counts, read from suite folders (`pear suite ... -c
benchmarks/configs/select_val200.yaml --epochs E --out SUITE_E`).

    python benchmarks/recipe_curve.py --out results/recipe_curve.md SUITE_10 SUITE_20 ...

Each suite's runs are OUT/runs/<task>/<method>/seed<k>/; the row is the method, the column
the epoch count, the cell the mean val200 accuracy over the seeds found (n in brackets).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def final_val(run: Path) -> float | None:
    hist = run / "history.json"
    if not (run / "metrics.json").is_file() or not hist.is_file():
        return None
    records = json.loads(hist.read_text())
    vals = [r["val_acc"] for r in records if isinstance(r, dict) and "val_acc" in r]
    return vals[-1] if vals else None


def collect(suites: list[Path]) -> dict:
    cells: dict = defaultdict(list)  # (task, method, epochs) -> [val]
    for suite in suites:
        for metrics in sorted(suite.glob("runs/*/*/seed*/metrics.json")):
            run = metrics.parent
            m = json.loads(metrics.read_text())
            val = final_val(run)
            if val is not None:
                cells[(m["task"], run.parent.name, int(m["epochs"]))].append(val)
    return cells


def table(cells: dict) -> str:
    epochs = sorted({e for _, _, e in cells})
    keys = sorted({(t, m) for t, m, _ in cells})
    lines = ["| task | method | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
             "| --- | --- |" + " --- |" * len(epochs)]
    for t, m in keys:
        row = []
        for e in epochs:
            v = cells.get((t, m, e))
            row.append(f"{statistics.mean(v):.2f} (n={len(v)})" if v else "–")
        lines.append(f"| {t} | {m} | " + " | ".join(row) + " |")
    means = []
    for m in sorted({m for _, m in keys}):
        row = []
        for e in epochs:
            per_task = [statistics.mean(v) for (t, mm, ee), v in cells.items() if mm == m and ee == e]
            row.append(f"{statistics.mean(per_task):.2f}" if per_task else "–")
        means.append(f"| mean over tasks | {m} | " + " | ".join(row) + " |")
    return "\n".join(lines + means) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write the table to this .md file too")
    args = p.parse_args(argv)
    cells = collect(args.suites)
    if not cells:
        print("recipe_curve: no finished runs with a val200 history in " + ", ".join(map(str, args.suites)),
              file=sys.stderr)
        return 2
    text = ("# Recipe curve: val200 accuracy after the last epoch (train800)\n\n" + table(cells))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
