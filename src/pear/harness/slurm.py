"""`pear suite ... --emit-slurm FILE`: the suite as one Slurm job array, one run per array task.

Each array task runs `pear suite <the same arguments> --index $SLURM_ARRAY_TASK_ID`; any
scheduler with indexed jobs (PBS `$PBS_ARRAY_INDEX`, LSF `$LSB_JOBINDEX`, Kubernetes
Indexed Jobs `$JOB_COMPLETION_INDEX`) can run the same command.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def slurm_script(command: list[str], runs: int, tuning_runs: int, out: str | Path, workdir: str | Path) -> str:
    """An sbatch script for `command` (a `pear suite` command line without --emit-slurm);
    `tuning_runs`: how many of the `runs` indices are --tune's, which must finish first."""
    cmd = shlex.join(command)
    logs = Path(out) / "logs" / "slurm-%A_%a.log"
    first = f"0-{tuning_runs - 1}" if tuning_runs else f"0-{runs - 1}"
    lines = ["#!/bin/bash",
             f"# pear suite as a job array: {runs} runs, one per array task (`{cmd} --list` shows them).",
             "# Add your site's --partition / --account / --time below.",
             "#SBATCH --job-name=pear-suite",
             f"#SBATCH --array={first}",
             "#SBATCH --gres=gpu:1",
             "#SBATCH --cpus-per-task=8",
             f"#SBATCH --output={logs}",
             "#"]
    if tuning_runs:
        lines += [f"# --tune: indices 0-{tuning_runs - 1} choose each method's option on val200; the real runs",
                  f"# ({tuning_runs}-{runs - 1}) need them finished. Submit twice:",
                  f"#   jid=$(sbatch --parsable {{this file}})",
                  f"#   sbatch --dependency=afterok:$jid --array={tuning_runs}-{runs - 1} {{this file}}"]
    lines += ["# When all have finished (or at any time, for the table so far):",
              f"#   {cmd} --aggregate",
              "set -euo pipefail",
              f"cd {shlex.quote(str(Path(workdir).resolve()))}",
              f'{cmd} --index "$SLURM_ARRAY_TASK_ID"', ""]
    return "\n".join(lines)
