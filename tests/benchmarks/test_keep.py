"""benchmarks/keep.sh's keep_choices: a suite folder's tuning records copied beside those kept from
earlier suite folders, and choices.md made again from all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def record(folder: Path, task: str, method: str, option: str, chosen: float) -> None:
    folder.mkdir(parents=True)
    scores = {"0.1": 10.0, "1": 20.0, "4": 30.0} if option == "scale" else {"8": 1.0, "32": 2.0, "128": 3.0}
    (folder / "choice.json").write_text(json.dumps(
        {"task": task, "method": method, "option": option, "chosen": chosen, "val200_acc": scores}))


def keep_choices(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", 'source benchmarks/keep.sh && keep_choices "$@"', "keep", *args],
        cwd=ROOT, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )


def test_choices_md_lists_the_kept_records_and_the_new_ones(tmp_path):
    suite, kept = tmp_path / "suite", tmp_path / "results"
    record(kept / "tuning" / "loc" / "adapter", "loc", "adapter", "scale", 4.0)  # an earlier suite folder's
    record(suite / "tuning" / "loc" / "peft-lora", "loc", "peft-lora", "lora_alpha", 128.0)
    done = keep_choices(str(suite), str(kept / "tuning"))
    assert done.returncode == 0, done.stderr
    assert (kept / "tuning/loc/peft-lora/choice.json").is_file()
    table = (kept / "tuning" / "choices.md").read_text()
    assert "| loc | adapter | scale | 0.1: 10.0, 1: 20.0, **4: 30.0** | 4 |" in table
    assert "| loc | peft-lora | lora_alpha | 8: 1.0, 32: 2.0, **128: 3.0** | 128 |" in table


def test_a_destination_not_named_tuning_is_refused(tmp_path):
    record(tmp_path / "suite" / "tuning" / "loc" / "adapter", "loc", "adapter", "scale", 4.0)
    done = keep_choices(str(tmp_path / "suite"), str(tmp_path / "elsewhere"))
    assert done.returncode == 2 and "is no folder named tuning" in done.stderr
