"""User-named output files (`pear inspect --plot`, `pear suite --emit-slurm`): one rule,
`pear.harness.outputs.write_output`; and the Slurm script the second one writes."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pear.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _refused(argv, capsys) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pear: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.run, copy)
    return copy


@pytest.mark.parametrize("inside", ["checkpoint/adapters.safetensors", "checkpoint/new.png", "state/x.png",
                                    "metrics.json"])
def test_a_plot_is_never_written_into_a_run_folders_own_files(run, capsys, inside):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    err = _refused(["inspect", run, "--plot", run / inside], capsys)
    assert str(run / inside) in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_plot_replaces_only_a_png(run, tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes")
    assert "not a PNG" in _refused(["inspect", run, "--plot", mine], capsys)
    assert mine.read_text() == "my notes"
    assert "is a folder" in _refused(["inspect", run, "--plot", tmp_path], capsys)
    assert "does not exist" in _refused(["inspect", run, "--plot", tmp_path / "nowhere" / "map.png"], capsys)
    assert not (tmp_path / "nowhere").exists()
    link = tmp_path / "link.png"
    link.symlink_to(mine)
    assert "symbolic link" in _refused(["inspect", run, "--plot", link], capsys)
    assert mine.read_text() == "my notes"

    png = tmp_path / "map.png"
    assert main(["inspect", str(run), "--plot", str(png)]) == 0
    first = png.read_bytes()
    assert first.startswith(PNG)
    assert main(["inspect", str(run), "--plot", str(png)]) == 0  # its own earlier plot is replaced
    assert png.read_bytes().startswith(PNG)


@pytest.fixture
def suite_args(tiny_vtab, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_vtab, data)
    monkeypatch.chdir(tmp_path)
    return ["suite", "--data", data, "--tasks", "toy", "--methods", "linear", "--out", "suite"]


def test_emit_slurm_never_writes_into_the_data_root_or_a_folder(suite_args, tmp_path, capsys):
    data = Path(suite_args[2])
    listing = data / "toy" / "train800.txt"
    before = listing.read_bytes()
    assert "data root" in _refused([*suite_args, "--emit-slurm", listing], capsys)
    assert "data root" in _refused([*suite_args, "--emit-slurm", data / "new.sbatch"], capsys)
    assert listing.read_bytes() == before and not (data / "new.sbatch").exists()
    assert "is a folder" in _refused([*suite_args, "--emit-slurm", tmp_path], capsys)
    assert "does not exist" in _refused([*suite_args, "--emit-slurm", tmp_path / "nonexist" / "x.sbatch"], capsys)
    assert not (tmp_path / "nonexist").exists()
    mine = tmp_path / "job.sbatch"
    mine.write_text("#!/bin/bash\nmy own job\n")
    assert "not a Slurm script Pear wrote" in _refused([*suite_args, "--emit-slurm", mine], capsys)
    assert mine.read_text() == "#!/bin/bash\nmy own job\n"

    script = tmp_path / "sweep.sbatch"
    assert main([str(a) for a in [*suite_args, "--emit-slurm", script]]) == 0
    assert main([str(a) for a in [*suite_args, "--seeds", "0,1", "--emit-slurm", script]]) == 0  # its own: replaced
    assert "#SBATCH --array=0-1" in script.read_text()


def test_emit_slurm_takes_no_abbreviation(suite_args, tmp_path, capsys):
    """An abbreviated --emit would survive into every array task's command line."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in [*suite_args, "--emit", tmp_path / "s.sbatch"]])
    assert exc.value.code == 2 and not (tmp_path / "s.sbatch").exists()
    assert "--emit" in capsys.readouterr().err


def test_the_slurm_log_path_survives_spaces_and_odd_characters(tiny_vtab, tmp_path, monkeypatch):
    work = tmp_path / 'my work "100%" #1'
    work.mkdir()
    monkeypatch.chdir(work)
    script = work / "sweep.sbatch"
    assert main(["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--out", "suite",
                 "--emit-slurm", str(script)]) == 0
    (line,) = [ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH --output=")]
    # sbatch reads '%%' as a literal '%'; %A and %a are its own patterns.
    expected = str(work).replace("%", "%%") + "/suite/logs/slurm-%A_%a.log"
    assert _sbatch_argument(line.removeprefix("#SBATCH --output=")) == expected
    subprocess.run(["bash", "-n", str(script)], check=True)


def _sbatch_argument(text: str) -> str:
    """What sbatch reads from one #SBATCH argument: double quotes group, a backslash escapes the next
    character, an unquoted unescaped space or '#' ends it (Slurm's sbatch/opt.c)."""
    out, quoted, i = [], False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in " \t#":
            break
        else:
            out.append(c)
        i += 1
    return "".join(out)
