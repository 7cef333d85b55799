"""A results.csv read back into rows (with its numbers as numbers), and the rows of several
tables merged: how benchmarks/merge_results.py joins a new suite folder's runs to tables kept
from an earlier one (`merge_into`, which writes them out again with `results.write_tables`)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from ...errors import PearError
from .results import _COUNTS, CSV_FIELDS, _method_key, _task_key, write_tables

# Columns that results.csv files written before them lack: read as empty.
LATER_COLUMNS = ("cpu", "gpu")


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a results.csv that write_tables wrote, with its numbers as numbers again."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            lacking = [k for k in CSV_FIELDS if k not in (reader.fieldnames or ()) and k not in LATER_COLUMNS]
            if lacking:
                raise PearError(f"{path} is not a suite's results.csv: it has no column {', '.join(lacking)}")
            raw = list(reader)
    except OSError as exc:
        raise PearError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = []
    for line, r in enumerate(raw, start=2):
        row: dict = {k: (r.get(k) or None) for k in CSV_FIELDS}
        try:
            row["seed"] = int(r["seed"])
            row["test_acc"] = float(r["test_acc"])
            for k in (*_COUNTS, "world_size"):
                if row[k] is not None:
                    v = float(row[k])
                    row[k] = int(v) if v.is_integer() and k not in ("train_seconds", "images_per_second") else v
        except ValueError as exc:
            raise PearError(f"{path}, line {line}: a number was expected ({exc})") from None
        rows.append(row)
    return rows


def merge_rows(*tables: list[dict]) -> list[dict]:
    """One row per (task, method, seed); a later table's row replaces an earlier one's. Sorted
    as aggregate sorts."""
    merged = {(r["task"], r["method"], r["seed"]): r for rows in tables for r in rows}
    return sorted(merged.values(), key=lambda r: (_task_key(r["task"]), _method_key(r["method"]), r["seed"]))


def merge_into(
    kept: str | Path, rows: list[dict], note: Callable[[int], str], command: str | None = None, new_wins: bool = True
) -> list[dict]:
    """Join `rows` to the tables kept in folder `kept` (its results.csv, if any) and write them there
    again (`write_tables`), one row per (task, method, seed): `rows` replace kept ones unless
    new_wins is False. `note(runs)` says where the rows came from; `command` is the one results.md
    names. Returns the merged rows."""
    kept = Path(kept)
    old = read_csv(kept / "results.csv") if (kept / "results.csv").is_file() else []
    merged = merge_rows(old, rows) if new_wins else merge_rows(rows, old)
    kept.mkdir(parents=True, exist_ok=True)
    write_tables(kept, merged, command, notes=[note(len(merged))])
    return merged


def read_command(path: str | Path) -> str | None:
    """The command a results.md written by write_tables names ('- Command: `...`'), if any."""
    path = Path(path)
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("- Command: `") and line.endswith("`"):
            return line[len("- Command: `") : -1]
    return None
