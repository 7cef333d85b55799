"""Running a suite's pending runs (`pear.harness.suites.suite.Suite.run`): one after another in this
process, or one subprocess per device at a time, each writing only its own run folder.

A run that fails does not stop the others: both return the failures, one line each
(`label: what went wrong`), for the suite to raise after it has aggregated the rest.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ...errors import PearError
from .suite_runs import Run

# (run, device, config file, suite folder) -> (process, run, open log file), as `pear.harness.suites.suite._spawn`.
Spawn = Callable[[Run, str, Path, Path], tuple]


def run_here(todo: list[Run], train: Callable) -> list[str]:
    """`train(run.cfg)` for each run in turn."""
    failures = []
    for i, run in enumerate(todo, 1):
        print(f"suite: [{i}/{len(todo)}] {run.label}{' (resuming)' if run.cfg.resume else ''}", flush=True)
        try:
            train(run.cfg)
        except Exception as exc:
            if not isinstance(exc, PearError):
                traceback.print_exc()
            failures.append(f"{run.label}: {type(exc).__name__}: {exc}")
            print(f"suite: {failures[-1]}", file=sys.stderr, flush=True)
    return failures


def run_queue(todo: list[Run], devices: list[str], out: Path, spawn: Spawn) -> list[str]:
    """One subprocess (`spawn`) per device slot at a time; each writes only its own run folder."""
    pending, failures = list(todo), []
    busy: list[tuple | None] = [None] * len(devices)
    started = 0
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".suite-", dir=out) as tmp:
        try:
            while pending or any(busy):
                for slot, device in enumerate(devices):
                    if busy[slot] is None and pending:
                        run = pending.pop(0)
                        started += 1
                        busy[slot] = spawn(run, device, Path(tmp) / f"{started}.yaml", out)
                        print(
                            f"suite: [{started}/{len(todo)}] {run.label} on {device}"
                            f"{' (resuming)' if run.cfg.resume else ''}",
                            flush=True,
                        )
                for slot, job in enumerate(busy):
                    if job is not None and job[0].poll() is not None:
                        busy[slot] = None
                        failures += _ended(*job)
                time.sleep(0.2)
        finally:
            for job in busy:
                if job is not None:
                    job[0].terminate()
                    job[0].wait()
                    job[2].close()
    return failures


def _ended(proc, run: Run, log_file) -> list[str]:
    """The failure of a subprocess that has ended, if it failed."""
    log_file.close()
    if not proc.returncode:
        return []
    return [f"{run.label}: exit status {proc.returncode}: {_last_line(log_file.name)} (log: {log_file.name})"]


def _last_line(path: str) -> str:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
