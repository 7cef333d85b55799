"""`RunDir`: one owner for the names and paths of everything a run folder holds."""

import json
from pathlib import Path

from pear.harness.rundir import BACKBONE_FILE, LOCK_FILE, RUN_FILES, RunDir, RunFolder

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_run"

# Each path property and the name it must point at: the run folder's documented layout.
LAYOUT = {"args": "args.yaml", "metrics": "metrics.json", "report": "report.json", "plan": "plan.json",
          "history": "history.json", "log": "train.log", "checkpoint": "checkpoint", "state": "state",
          "best": "best", "tensorboard": "tensorboard", "backbone": "backbone.safetensors", "lock": ".pear-lock"}


def test_every_path_is_the_folder_and_its_name():
    run = RunDir("runs/a")  # a string is taken as a path
    assert run.path == Path("runs/a")
    for prop, name in LAYOUT.items():
        assert getattr(run, prop) == Path("runs/a") / name, prop
    assert sorted(RunDir.NAMES) == sorted(LAYOUT.values())
    assert set(RunDir.FOLDERS) == {"checkpoint", "state", "best", "tensorboard"}
    assert (BACKBONE_FILE, LOCK_FILE) == (RunDir.BACKBONE, RunDir.LOCK)


def test_run_files_mark_the_folders_with_a_slash():
    """What `check_replaceable` is given: a folder's name ends in '/'."""
    assert len(RUN_FILES) == len(RunDir.NAMES)
    for entry, name in zip(RUN_FILES, RunDir.NAMES):
        assert entry == (f"{name}/" if name in RunDir.FOLDERS else name)


def test_a_finished_run_holds_only_the_layouts_files(tiny_run):
    run = RunDir(tiny_run.run)
    assert run.is_run and run.finished
    assert {p.name for p in run.path.iterdir()} <= set(RunDir.NAMES)
    for prop in ("args", "metrics", "report", "plan", "history", "log"):
        assert getattr(run, prop).is_file(), prop
    assert run.checkpoint.is_dir() and run.state.is_dir()
    assert json.loads(run.metrics.read_text())["task"] == tiny_run.task


def test_the_legacy_runs_are_laid_out_the_same():
    for name in ("finished", "interrupted"):
        run = RunDir(LEGACY / name)
        assert run.is_run and run.finished == (name == "finished")
        assert {p.name for p in run.path.iterdir()} <= set(RunDir.NAMES)


def test_a_folder_is_a_run_once_its_options_are_written_and_finished_once_its_metrics_are(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_run and not run.finished
    run.args.write_text("task: t\n")
    assert run.is_run and not run.finished
    run.metrics.mkdir()  # a folder in its place is not a result
    assert not run.finished
    run.metrics.rmdir()
    run.metrics.write_text("{}")
    assert run.finished


def test_a_staged_run_folder_is_laid_out_where_it_writes(tmp_path):
    folder = RunFolder(tmp_path / ".run.new-1", tmp_path / "run")
    assert folder.staged and folder.dir == RunDir(tmp_path / ".run.new-1")
    assert folder.dir.metrics == tmp_path / ".run.new-1" / "metrics.json"
