"""A suite on a cluster's scheduler: --list, --index, --aggregate, --emit-slurm; the vtab1k preset."""

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pear.cli import main
from pear.errors import PearError
from pear.harness import suite, tuning
from pear.harness.data import VTAB_TASKS
from pear.harness.results import aggregate, vtab_summary

TINY = {"backbone": "vit_tiny_patch16_224", "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32,
                                                             "num_heads": 2},
        "img_size": 32, "epochs": 2, "batch_size": 20, "workers": 0, "device": "cpu"}
# Columns that depend on the machine's load, not on what was computed.
TIMING = ("train_seconds", "images_per_second")


def _suite_args(data: Path, out: Path, config: Path) -> list[str]:
    return ["suite", "--data", str(data), "--tasks", "toy", "--methods", "linear,pear", "--seeds", "0,1",
            "--out", str(out), "-c", str(config)]


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    return subprocess.Popen([sys.executable, "-m", "pear", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _tables(out: Path) -> tuple[list[dict], str]:
    with open(out / "results.csv", newline="") as fh:
        rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]
    md = (out / "results.md").read_text()
    return rows, md[md.index("## Test accuracy"):]


def test_indices_as_separate_processes_equal_a_plain_suite(tiny_vtab, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    plain = _start(_suite_args(tiny_vtab, tmp_path / "plain", config))

    out = tmp_path / "indexed"
    args = _suite_args(tiny_vtab, out, config)
    assert main([*args, "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "4 runs (indices 0-3)"
    assert [line.split()[:3] for line in listing[1:]] == [
        ["0", "pending", "toy/linear/seed0"], ["1", "pending", "toy/pear/seed0"],
        ["2", "pending", "toy/linear/seed1"], ["3", "pending", "toy/pear/seed1"]]

    # Index 1 twice at once: one process trains it, the other is refused (or finds it finished).
    twins = [_start([*args, "--index", "1"]) for _ in range(2)]
    outputs = []
    for p in twins:
        text = p.communicate(timeout=600)[0]
        outputs.append((p.returncode, text))
    assert sorted(rc for rc, _ in outputs) in ([0, 0], [0, 2]), outputs
    assert all(rc == 0 or "is in use by another Pear process" in text for rc, text in outputs), outputs
    # The other indices in a shuffled order, two processes at a time.
    order = [0, 2, 3]
    random.Random(7).shuffle(order)
    for pair in (order[:2], order[2:]):
        procs = [_start([*args, "--index", str(i)]) for i in pair]
        for p in procs:
            text = p.communicate(timeout=600)[0]
            assert p.returncode == 0, text

    assert main([*args, "--aggregate"]) == 0
    assert "aggregated 4 of 4 runs" in capsys.readouterr().out
    text = plain.communicate(timeout=900)[0]
    assert plain.returncode == 0, text
    assert _tables(out) == _tables(tmp_path / "plain")
    assert len(_tables(out)[0]) == 4
    assert main([*args, "--index", "1"]) == 0
    assert "run 1 (toy/pear/seed0) has already finished" in capsys.readouterr().out


def _fake_finish(run_dir: Path, val_acc: float = 50.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.json").write_text(json.dumps([{"epoch": 0, "val_acc": val_acc}]))
    (run_dir / "metrics.json").write_text(json.dumps({"task": "toy", "seed": 0, "test_acc": val_acc,
                                                      "checkpoint_file_bytes": 10}))


def test_tune_runs_come_first_and_a_tuned_run_waits_for_them(tiny_vtab, tmp_path, monkeypatch, capsys):
    spec = dict(data=str(tiny_vtab), tasks=["toy"], methods=["linear", "adapter"], seeds=[0], out=str(tmp_path),
                base=TINY, tune=True)
    runs = suite.sweep(**spec)
    grid = tuning.GRIDS["adapter"][1]
    assert [r.label for r in runs] == [*(f"toy/adapter@scale={v:g}/seed0" for v in grid), "toy/linear/seed0",
                                       "toy/adapter/seed0"]
    assert [r.tuning for r in runs] == [True] * len(grid) + [False, False]
    n = len(grid)
    assert suite.list_runs(runs).splitlines()[0] == f"{n + 2} runs (indices 0-{n + 1}); tuning runs 0-{n - 1} " \
                                                    "first: a tuned run needs its task's tuning runs finished"
    trained = []
    monkeypatch.setattr(suite, "train", lambda cfg: trained.append(cfg) or _fake_finish(Path(cfg.out)))
    suite.run_index(n, **spec)  # linear: nothing to tune
    waiting = ", ".join(f"{i} .*" for i in range(n))
    with pytest.raises(PearError, match=rf"run {n + 1} \(toy/adapter/seed0\) trains with the scale that --tune "
                                        rf"chooses on val200, and tuning runs {waiting} have not finished"):
        suite.run_index(n + 1, **spec)
    for i, v in enumerate(grid):
        _fake_finish(tuning.tune_run_dir(tmp_path, "toy", "adapter", v), val_acc=60.0 if v == grid[1] else 40.0)
    suite.run_index(n + 1, **spec)
    assert trained[-1].pear.scale == grid[1] and trained[-1].train_split == "train800val200"
    assert json.loads((tuning.grid_dir(tmp_path, "toy", "adapter") / tuning.CHOICE_FILE).read_text())["chosen"] \
        == grid[1]
    with pytest.raises(PearError, match=rf"--index {n + 2} is out of range: this suite has {n + 2} runs"):
        suite.run_index(n + 2, **spec)


def test_aggregate_names_what_is_missing(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", lambda cfg: _fake_finish(Path(cfg.out)))
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--seeds", "0,1,2",
            "--out", str(tmp_path), "--epochs", "2"]
    assert main([*args, "--index", "1"]) == 0
    assert main([*args, "--aggregate"]) == 0
    printed = capsys.readouterr().out
    assert "aggregated 1 of 3 runs" in printed and "0 toy/linear/seed0" in printed and "2 toy/linear/seed2" in printed
    assert "- Not finished (2, by index): `0 toy/linear/seed0`, `2 toy/linear/seed2`" in \
        (tmp_path / "results.md").read_text()
    assert main([*args, "--list"]) == 0
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()[1:]] == ["pending", "finished", "pending"]
    assert main([*args, "--list", "--aggregate"]) == 2


def test_emit_slurm_writes_a_job_array(tiny_vtab, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "sweep.sbatch"
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear,pear", "--seeds", "0,1",
            "--out", "suite"]
    assert main([*args, "--emit-slurm", str(script)]) == 0
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and f'#SBATCH --output="{tmp_path}/suite/logs/slurm-%A_%a.log"' in text
    last = text.strip().splitlines()[-1]
    assert last.endswith('--out suite --index "$SLURM_ARRAY_TASK_ID"') and "--emit-slurm" not in last
    assert last.startswith(f"{sys.executable} -m pear suite --data")
    assert f"cd {tmp_path}" in text and (tmp_path / "suite" / "logs").is_dir()
    subprocess.run(["bash", "-n", str(script)], check=True)

    assert main([*args, "--tune", "--emit-slurm", str(script)]) == 0
    text = script.read_text()  # one run per scale value for pear's tuning, then 2 linear + 2 pear runs
    n = len(tuning.SCALE_GRID)
    assert f"#SBATCH --array=0-{n - 1}" in text
    assert f"sbatch --dependency=afterok:$jid --array={n}-{n + 3} {script}" in text


def test_vtab1k_preset_needs_every_task_folder(tmp_path, capsys):
    data = tmp_path / "vtab"  # the suite folder lies outside it
    for task in list(VTAB_TASKS)[:-2]:
        (data / ("cifar100" if task == "cifar" else task)).mkdir(parents=True)
    assert main(["suite", "--preset", "vtab1k", "--data", str(data), "--list"]) == 2
    err = capsys.readouterr().err
    assert "--preset vtab1k: " in err and "lacks 2 of the 19 task folders: smallnorb_azi, smallnorb_ele" in err
    (data / "smallnorb_azi").mkdir()
    (data / "smallnorb_ele").mkdir()
    runs = suite.sweep(str(data), suite.check_preset("vtab1k", str(data)), ["pear"], [0], str(tmp_path / "s"),
                       base=suite.PRESETS["vtab1k"]["recipe"])
    assert [r.task for r in runs] == list(VTAB_TASKS)
    cfg = runs[0].cfg
    assert (cfg.epochs, cfg.warmup_epochs, cfg.prune_epoch, cfg.lr, cfg.wd, cfg.batch_size, cfg.img_size) == \
        (100, 10, 10, 1e-3, 1e-4, 64, 224)
    assert main(["suite", "--preset", "vtab1k", "--data", str(data), "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "19 runs (indices 0-18)"


def test_vtab_summary_names_both_means():
    rows = [{"task": t, "method": "pear", "test_acc": acc} for t, acc in
            (("cifar", 70.0), ("dtd", 60.0), ("eurosat", 90.0), ("kitti", 80.0), ("dsprites_loc", 40.0))]
    (line,) = vtab_summary(rows)
    # Natural (cifar, dtd) 65, Specialized 90, Structured (kitti, dsprites_loc) 60; tasks 68, groups 71.67.
    assert line == "pear: Mean over tasks 68.00; Mean of group means 71.67 (Natural 65.00, Specialized 90.00, " \
                   "Structured 60.00)"
    assert vtab_summary([{"task": "toy", "method": "pear", "test_acc": 1.0}]) == []


def _train_writing_args(cfg) -> None:
    """Stands in for `train`: the run's args.yaml and metrics.json, as a finished run has them."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "history.json").write_text(json.dumps([{"epoch": 0, "val_acc": 50.0 + cfg.pear.scale}]))
    (out / "metrics.json").write_text(json.dumps({"task": cfg.task, "seed": cfg.seed, "test_acc": 50.0,
                                                  "checkpoint_file_bytes": 10}))


def test_list_aggregate_and_index_use_one_same_run_rule(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", _train_writing_args)
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--out", str(tmp_path),
            "--epochs", "1"]
    assert main([*args, "--index", "0"]) == 0
    assert main([*args, "--aggregate"]) == 0
    md = (tmp_path / "results.md").read_text()
    capsys.readouterr()
    for mode in (["--index", "0"], ["--list"], ["--aggregate"]):
        assert main([*args, "--epochs", "7", "--lr", "0.5", *mode]) == 2, mode
        err = capsys.readouterr().err
        assert f"run folder {tmp_path}/runs/toy/linear/seed0 was made with other options (" in err, (mode, err)
        assert "epochs: 1 there, 7 now" in err and "lr: 0.001 there, 0.5 now" in err, (mode, err)
    assert (tmp_path / "results.md").read_text() == md  # nothing aggregated under the other options
    # Options that change how a run executes, not what it computes, keep it the same run.
    assert main([*args, "--workers", "1", "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "finished"


def test_a_tuned_run_is_listed_with_its_recorded_choice(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", _train_writing_args)
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "adapter", "--out", str(tmp_path),
            "--epochs", "2", "--tune"]
    n = len(tuning.SCALE_GRID)
    for index in range(n + 1):  # the tuning runs (the largest scale wins), then the real run
        assert main([*args, "--index", str(index)]) == 0
    capsys.readouterr()
    assert main([*args, "--list"]) == 0
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()[1:]] == ["finished"] * (n + 1)
    record = tuning.grid_dir(tmp_path, "toy", "adapter") / tuning.CHOICE_FILE
    top = max(tuning.SCALE_GRID)
    record.write_text(record.read_text().replace(f'"chosen": {top}', '"chosen": 1.0'))
    assert main([*args, "--list"]) == 2
    assert f"scale: {top} there, 1.0 now" in capsys.readouterr().err
    # The table says which value the run trained with, and that it is not the choice now.
    assert [r["tuned"] for r in aggregate(tmp_path)] == [f"scale={top:g} (chosen now: 1)"]


def test_a_choice_made_over_another_grid_is_made_again_once_the_new_values_have_run(tiny_vtab, tmp_path,
                                                                                    monkeypatch):
    """A grid widened since a choice was recorded: the record does not count (its runs wait for the new
    values' tuning runs), and the choice is made again over the whole grid once they have finished."""
    spec = dict(data=str(tiny_vtab), tasks=["toy"], methods=["adapter"], seeds=[0], out=str(tmp_path), base=TINY,
                tune=True)
    narrow, wide = (0.1, 1.0), (0.1, 1.0, 4.0)
    monkeypatch.setitem(tuning.GRIDS, "adapter", ("scale", narrow))
    for v in narrow:
        _fake_finish(tuning.tune_run_dir(tmp_path, "toy", "adapter", v), val_acc=60.0 if v == 1.0 else 40.0)
    assert tuning.choose(tmp_path, "toy", "adapter")["chosen"] == 1.0
    monkeypatch.setitem(tuning.GRIDS, "adapter", ("scale", wide))
    assert tuning.current_choice(tmp_path, "toy", "adapter") is None
    assert [r.stand_in for r in suite.sweep(**spec) if not r.tuning] == ["scale"]  # no choice yet
    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail(f"trained {cfg.out}"))
    with pytest.raises(PearError, match=r"tuning runs 2 \(toy/adapter@scale=4/seed0\) have not finished"):
        suite.run_index(3, **spec)
    _fake_finish(tuning.tune_run_dir(tmp_path, "toy", "adapter", 4.0), val_acc=70.0)
    trained = []
    monkeypatch.setattr(suite, "train", lambda cfg: trained.append(cfg) or _fake_finish(Path(cfg.out)))
    suite.run_index(3, **spec)
    assert trained[-1].pear.scale == 4.0
    record = tuning.current_choice(tmp_path, "toy", "adapter")
    assert record is not None and record["grid"] == list(wide) and record["chosen"] == 4.0


def test_a_recorded_choice_stands_without_its_tuning_runs(tiny_vtab, tmp_path, monkeypatch, capsys):
    """Tuning run folders deleted (to save disk, or a suite folder made anew with the records kept):
    the choice stands, nothing tunes again, the indices stay, and nothing is named as missing."""
    spec = dict(data=str(tiny_vtab), tasks=["toy"], methods=["adapter"], seeds=[0], out=str(tmp_path), base=TINY,
                tune=True)
    grid = tuning.GRIDS["adapter"][1]
    for v in grid:
        _fake_finish(tuning.tune_run_dir(tmp_path, "toy", "adapter", v), val_acc=60.0 if v == grid[1] else 40.0)
    assert tuning.choose(tmp_path, "toy", "adapter")["chosen"] == grid[1]
    for v in grid:
        shutil.rmtree(tuning.tune_run_dir(tmp_path, "toy", "adapter", v))
    trained = []
    monkeypatch.setattr(suite, "train", lambda cfg: trained.append(cfg) or _fake_finish(Path(cfg.out)))
    capsys.readouterr()
    suite.run_suite(**{**spec, "seeds": [0, 1]})
    assert [(Path(c.out).parent.name, c.pear.scale) for c in trained] == [("adapter", grid[1])] * 2
    printed = capsys.readouterr().out
    assert f"tuning, {len(grid)} runs, 0 finished, {len(grid)} not needed (their choice is recorded), 0 to run" \
        in printed and "not finished" not in printed
    runs = suite.sweep(**spec)
    assert [r.settled for r in runs] == [True] * len(grid) + [False]
    assert [ln.split()[1] for ln in suite.list_runs(runs).splitlines()[1:]] == ["recorded"] * len(grid) + ["finished"]
    assert suite.run_index(0, **spec) is None and len(trained) == 2  # a tuning index: not needed
    assert "Not finished" not in (tmp_path / "results.md").read_text()


def test_a_config_file_with_dashed_keys_works_as_in_train(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", _train_writing_args)
    config = tmp_path / "c.yaml"
    config.write_text("batch-size: 20\nepochs: 2\nwarmup-epochs: 1\n")
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--out",
            str(tmp_path / "s"), "-c", str(config)]
    assert main([*args, "--index", "0"]) == 0, capsys.readouterr().err
    recorded = yaml.safe_load((tmp_path / "s/runs/toy/linear/seed0/args.yaml").read_text())
    assert (recorded["batch_size"], recorded["warmup_epochs"]) == (20, 1)


@pytest.mark.parametrize("tasks, named", [("/etc", "'/etc'"), ("toy,", "''"), ("toy,..", "'..'")])
@pytest.mark.parametrize("mode", ["--list", "--emit-slurm"])
def test_list_and_emit_slurm_refuse_tasks_training_refuses(tiny_vtab, tmp_path, capsys, tasks, named, mode):
    argv = ["suite", "--data", str(tiny_vtab), "--tasks", tasks, "--methods", "linear", "--out",
            str(tmp_path / "s"), mode, *([str(tmp_path / "s.sbatch")] if mode == "--emit-slurm" else [])]
    assert main(argv) == 2
    assert f"task {named} is not a folder name" in capsys.readouterr().err
    assert not (tmp_path / "s.sbatch").exists()


def _train_scoring_by_ratio(cfg) -> None:
    """Stands in for `train`: at prune ratio 0.9 the smallest scale scores best on val200, else the largest."""
    _train_writing_args(cfg)
    scale = cfg.pear.scale
    val = 50.0 - scale if cfg.pear.prune_ratio > 0.8 else 50.0 + scale
    (Path(cfg.out) / "history.json").write_text(json.dumps([{"epoch": 0, "val_acc": val}]))


def test_tune_each_chooses_apart_for_each_ratio_a_name_sets(tiny_vtab, tmp_path, monkeypatch, capsys):
    """--tune-each prune_ratio: prune@prune_ratio=0.9 has a choice of its own, and a Pear ablation at that
    ratio uses pear's choice at that ratio; the table says the value each run trained with."""
    monkeypatch.setattr(suite, "train", _train_scoring_by_ratio)
    methods = ["prune", "prune@prune_ratio=0.9", "pear@prune_ratio=0.9@knowledge=none"]
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", ",".join(methods), "--out",
            str(tmp_path), "--epochs", "2", "--tune"]
    assert main([*args, "--tune-each", "prune_ratio", "--list"]) == 0
    labels = [ln.split()[2] for ln in capsys.readouterr().out.splitlines()[1:]]
    owners, grid = ["prune", "prune@prune_ratio=0.9", "pear@prune_ratio=0.9"], tuning.SCALE_GRID
    assert labels == [f"toy/{o}@scale={v:g}/seed0" for o in owners for v in grid] + [f"toy/{m}/seed0" for m in methods]
    assert main([*args, "--tune-each", "prune_ratio"]) == 0
    low, high = f"scale={min(grid):g}", f"scale={max(grid):g}"
    assert {r["method"]: r["tuned"] for r in aggregate(tmp_path)} == dict(zip(methods, [high, low, low]))
    assert tuning.current_choice(tmp_path, "toy", "prune@prune_ratio=0.9")["chosen"] == min(grid)
    # Without --tune-each those runs would train at prune's and pear's choice: the folder does not mix them.
    capsys.readouterr()
    assert main([*args, "--list"]) == 2
    assert f"scale: {min(grid)} there, {max(grid)} now" in capsys.readouterr().err
