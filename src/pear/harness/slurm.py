"""`pear suite ... --emit-slurm FILE`: the suite as one Slurm job array, one run per array task.

Each array task runs `pear suite <the same arguments> --index $SLURM_ARRAY_TASK_ID`; any
scheduler with indexed jobs (PBS `$PBS_ARRAY_INDEX`, LSF `$LSB_JOBINDEX`, Kubernetes
Indexed Jobs `$JOB_COMPLETION_INDEX`) can run the same command.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import PearError


def slurm_script(command: list[str], runs: int, tuning_runs: int, out: str | Path, workdir: str | Path,
                 path: str | Path, gres: str = "gpu:1") -> str:
    """The sbatch script `path` for `command` (a `pear suite` command line without --emit-slurm,
    run in `workdir`); `tuning_runs`: how many of the `runs` indices are --tune's, which must
    finish first; `gres`: each task's generic resources (--gres), '' for none."""
    if any(c.isspace() for c in gres):
        raise PearError(f"--slurm-gres {gres!r} must be one word such as gpu:1 or gpu:a100:2 ('' for none)")
    cmd = shlex.join(command)
    workdir = Path(workdir).resolve()
    logs = workdir / out / "logs" / "slurm-%A_%a.log"  # sbatch resolves --output where it is called
    me = shlex.quote(str(path))
    first = f"0-{tuning_runs - 1}" if tuning_runs else f"0-{runs - 1}"
    lines = ["#!/bin/bash",
             f"# pear suite as a job array: {runs} runs, one per array task (`{cmd} --list` shows them).",
             "# Add your site's --partition / --account / --time below.",
             "#SBATCH --job-name=pear-suite",
             f"#SBATCH --array={first}",
             *([f"#SBATCH --gres={gres}"] if gres else []),
             "#SBATCH --cpus-per-task=8",
             f"#SBATCH --output={logs}",
             "#"]
    if tuning_runs:
        lines += [f"# --tune: indices 0-{tuning_runs - 1} choose each method's option on val200; the real runs",
                  f"# ({tuning_runs}-{runs - 1}) need them finished. Submit twice:",
                  f"#   jid=$(sbatch --parsable {me})",
                  f"#   sbatch --dependency=afterok:$jid --array={tuning_runs}-{runs - 1} {me}"]
    lines += ["# When all have finished (or at any time, for the table so far):",
              f"#   {cmd} --aggregate",
              "set -euo pipefail",
              f"cd {shlex.quote(str(workdir))}",
              f'{cmd} --index "$SLURM_ARRAY_TASK_ID"', ""]
    return "\n".join(lines)
