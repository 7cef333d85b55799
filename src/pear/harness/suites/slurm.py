"""`pear suite ... --emit-slurm FILE`: the suite as one Slurm job array, one run per array task.

Each array task runs `pear suite <the same arguments> --index $SLURM_ARRAY_TASK_ID`; any
scheduler with indexed jobs (PBS `$PBS_ARRAY_INDEX`, LSF `$LSB_JOBINDEX`, Kubernetes
Indexed Jobs `$JOB_COMPLETION_INDEX`) can run the same command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ...errors import PearError
from ..outputs import OutputKind, check_output, write_output

HEADER = "#!/bin/bash\n# pear suite as a job array"
# The script's first bytes: an earlier script of Pear's is replaced, any other file is not.
SCRIPT = OutputKind("Slurm script", HEADER.encode("ascii"))


def emit_slurm(
    path: str | Path,
    command: list[str],
    runs: int,
    tuning_runs: int,
    out: str | Path,
    data: str | Path,
    gres: str = "gpu:1",
) -> Path:
    """Write `slurm_script` to the user-named `path` (`pear.harness.outputs.write_output`:
    never into `data`, over a folder or over a file that is not such a script), and make
    OUT/logs, where sbatch puts the logs but does not create the folder."""
    workdir = Path.cwd()
    script = slurm_script(command, runs, tuning_runs, out, workdir, path, gres=gres)
    check_output(Path(path), SCRIPT, data)  # before OUT/logs is made
    try:
        (workdir / out / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PearError(f"cannot create {Path(out) / 'logs'} for the Slurm logs: {exc.strerror or exc}") from None
    return write_output(path, lambda fh: fh.write(script.encode("utf-8")), SCRIPT, data)


def slurm_script(
    command: list[str],
    runs: int,
    tuning_runs: int,
    out: str | Path,
    workdir: str | Path,
    path: str | Path,
    gres: str = "gpu:1",
) -> str:
    """The sbatch script `path` for `command` (a `pear suite` command line without --emit-slurm,
    run in `workdir`); `tuning_runs`: how many of the `runs` indices are --tune's, which must
    finish first; `gres`: each task's generic resources (--gres), '' for none."""
    if any(c.isspace() for c in gres):
        raise PearError(f"--slurm-gres {gres!r} must be one word such as gpu:1 or gpu:a100:2 ('' for none)")
    cmd = shlex.join(command)
    workdir = Path(workdir).resolve()
    logs = _sbatch_quote(str(workdir / out / "logs").replace("%", "%%") + "/slurm-%A_%a.log")
    me = shlex.quote(str(path))
    first = f"0-{tuning_runs - 1}" if tuning_runs else f"0-{runs - 1}"
    lines = [
        HEADER + f": {runs} runs, one per array task (`{_line(cmd)} --list` shows them).",
        "# Add your site's --partition / --account / --time below.",
        "#SBATCH --job-name=pear-suite",
        f"#SBATCH --array={first}",
        *([f"#SBATCH --gres={gres}"] if gres else []),
        "#SBATCH --cpus-per-task=8",
        f"#SBATCH --output={logs}",  # sbatch resolves --output where it is called: an absolute path
        "#",
    ]
    if tuning_runs:
        lines += [
            f"# --tune: indices 0-{tuning_runs - 1} choose each method's option on val200; the real runs",
            f"# ({tuning_runs}-{runs - 1}) need them finished. Submit twice:",
            f"#   jid=$(sbatch --parsable {_line(me)})",
            f"#   sbatch --dependency=afterok:$jid --array={tuning_runs}-{runs - 1} {_line(me)}",
        ]
    lines += [
        "# When all have finished (or at any time, for the table so far):",
        f"#   {_line(cmd)} --aggregate",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        f'{cmd} --index "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


def _sbatch_quote(text: str) -> str:
    """One #SBATCH argument as sbatch reads it back: in double quotes (sbatch splits these
    lines on whitespace), with a backslash before '"', '\\' and '#' (an unescaped '#' starts a
    comment). A line break cannot be written in an #SBATCH line at all."""
    if "\n" in text or "\r" in text:
        raise PearError(
            f"the Slurm log path {text!r} holds a line break, which an #SBATCH line cannot; run "
            f"from a folder without one"
        )
    return '"' + re.sub(r'(["\\#])', r"\\\1", text) + '"'


def _line(text: str) -> str:
    """`text` for a comment line: a line break in a quoted argument would end the comment and
    turn the rest into a command."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
