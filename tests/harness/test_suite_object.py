"""The suite as a value (`pear.harness.suite.Suite`): its runs computed once, its methods, the
flags it shares with `pear train`, and --emit-slurm's same-run check."""

import collections
from pathlib import Path

import pytest
import yaml
from test_sweep import TINY, _train_writing_args  # tests/harness is on sys.path

from pear.cli import build_parser, main
from pear.config import PearConfig
from pear.errors import PearError
from pear.harness import suite, suite_runs, tuning
from pear.harness.suite import PRESETS, Suite


def _count_calls(monkeypatch, names) -> collections.Counter:
    """Count the calls of these functions of `suite_runs`, which still do what they did."""
    calls: collections.Counter = collections.Counter()

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    for name in names:
        monkeypatch.setattr(suite_runs, name, counted(name, getattr(suite_runs, name)))
    return calls


def test_a_suite_computes_its_runs_once(tiny_vtab, tmp_path, monkeypatch, capsys):
    calls = _count_calls(monkeypatch, ("checked", "planned", "tuning_runs", "real_runs", "recorded_choices"))
    trained = []
    monkeypatch.setattr(suite, "train", lambda cfg: trained.append(cfg) or _train_writing_args(cfg))
    base = {k: v for k, v in TINY.items() if k != "device"}  # --devices cpu gives it
    s = Suite(str(tiny_vtab), ["toy", "toy"], ["linear", "adapter"], [0, 1], str(tmp_path), base, tune=True)
    assert (s.tasks, s.methods, s.seeds) == (("toy",), ("linear", "adapter"), (0, 1))
    assert calls == {"checked": 1}
    rows = s.run(devices=["cpu"])
    once = {"checked": 1, "planned": 1, "tuning_runs": 1, "real_runs": 1, "recorded_choices": 1}
    assert calls == once
    grid = tuning.GRIDS["adapter"][1]
    assert len(trained) == len(grid) + 4 and {cfg.device for cfg in trained} == {"cpu"}
    # The real adapter runs train with the choice (the largest scale scores best), linear with none.
    assert [(c.method, c.seed, c.pear.scale) for c in trained[len(grid):]] == [
        ("linear", 0, PearConfig().scale), ("adapter", 0, max(grid)), ("linear", 1, PearConfig().scale),
        ("adapter", 1, max(grid))]
    assert sorted((r["method"], r["seed"]) for r in rows) == [("adapter", 0), ("adapter", 1), ("linear", 0),
                                                              ("linear", 1)]

    # The same value again: its runs now hold the choice; nothing is recomputed or trained.
    assert s.run() == rows and len(trained) == len(grid) + 4
    assert [r.cfg.pear.scale for r in s.runs if r.method == "adapter"] == [max(grid)] * 2
    capsys.readouterr()
    n = len(grid) + 4
    assert s.list().splitlines()[0].startswith(f"{n} runs (indices 0-{n - 1}); tuning runs 0-{len(grid) - 1} first")
    assert len(s.aggregate(command="pear suite ...")) == 4
    assert s.run_index(n - 1) is None
    assert f"run {n - 1} (toy/adapter/seed1) has already finished" in capsys.readouterr().out
    assert calls == once


def test_every_cli_mode_builds_one_suite_and_computes_its_runs_once(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", _train_writing_args)
    monkeypatch.chdir(tmp_path)
    argv = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear,adapter", "--out", "s",
            "--epochs", "2", "--tune"]
    calls = _count_calls(monkeypatch, ("checked", "planned", "tuning_runs", "real_runs"))
    for mode in ([], ["--index", "0"], ["--list"], ["--aggregate"], ["--emit-slurm", "s.sbatch"]):
        calls.clear()
        assert main([*argv, *mode]) == 0, capsys.readouterr().err
        assert calls == {"checked": 1, "planned": 1, "tuning_runs": 1, "real_runs": 1}, mode


def test_emit_slurm_refuses_run_folders_made_with_other_options(tiny_vtab, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite, "train", _train_writing_args)
    monkeypatch.chdir(tmp_path)
    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--seeds", "0,1",
            "--out", "s", "--epochs", "1"]
    assert main([*args, "--index", "0"]) == 0
    capsys.readouterr()
    script = tmp_path / "s.sbatch"
    assert main([*args, "--epochs", "7", "--emit-slurm", str(script)]) == 2
    err = capsys.readouterr().err
    assert "run folder s/runs/toy/linear/seed0 was made with other options (epochs: 1 there, 7 now" in err, err
    assert not script.exists() and not (tmp_path / "s" / "logs").exists()
    # The suite that made it (an option of how runs execute aside) writes its script.
    assert main([*args, "--workers", "1", "--emit-slurm", str(script)]) == 0
    assert "#SBATCH --array=0-1" in script.read_text()


def test_configure_applies_the_preset_under_the_given_options(tmp_path):
    data = tmp_path / "vtab"
    for task in PRESETS["vtab1k"]["tasks"]:
        (data / ("cifar100" if task == "cifar" else task)).mkdir(parents=True)
    s = Suite.configure(str(data), None, None, [0, 0], None, base={"epochs": 3}, preset="vtab1k")
    assert (s.tasks, s.methods, s.seeds, s.out) == (tuple(PRESETS["vtab1k"]["tasks"]), ("pear",), (0,),
                                                    "suites/vtab1k")
    assert s.base == {**PRESETS["vtab1k"]["recipe"], "epochs": 3}
    mine = Suite.configure(str(data), ["dtd"], ["linear"], [1], str(tmp_path / "s"), preset="vtab1k")
    assert (mine.tasks, mine.methods, mine.out) == (("dtd",), ("linear",), str(tmp_path / "s"))
    with pytest.raises(PearError, match=r"pear suite needs --tasks, --out \(or --preset vtab1k\)"):
        Suite.configure(str(data), None, ["pear"], [0], None)
    with pytest.raises(PearError, match="unknown --preset 'vtab2k'; presets: vtab1k"):
        Suite.configure(str(data), ["dtd"], ["pear"], [0], "s", preset="vtab2k")
    with pytest.raises(PearError, match=r"must not set \['seed'\]"):
        Suite(str(data), ["dtd"], ["pear"], [0], "s", {"seed": 3})


def _actions(argv: list[str]) -> dict:
    """dest -> argparse action of the subcommand argv[0]."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[argv[0]]._actions}


def test_the_suite_shares_train_s_flags_as_train_defines_them():
    train, suite_flags = _actions(["train"]), _actions(["suite"])
    shared = ("backbone", "weights", "img_size", "epochs", "warmup_epochs", "batch_size", "lr", "workers",
              "tensorboard")
    for dest in shared:
        mine, theirs = suite_flags[dest], train[dest]
        assert (mine.option_strings, mine.help, mine.default, mine.nargs, mine.const) == \
            (theirs.option_strings, theirs.help, theirs.default, theirs.nargs, theirs.const), dest
        assert getattr(mine.type, "__name__", None) == getattr(theirs.type, "__name__", None), dest
    assert "method" not in suite_flags and "seed" not in suite_flags  # the suite sets those for each run


def test_the_suite_base_takes_the_shared_flags_over_the_config_file(tiny_vtab, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(Suite, "list", lambda self: seen.append(self) or "")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"epochs": 5, "lr": 0.1, "workers": 0}))
    assert main(["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "linear", "--out",
                 str(tmp_path / "s"), "-c", str(config), "--lr", "0.5", "--img-size", "32", "--tensorboard",
                 "--list"]) == 0
    (s,) = seen
    assert s.base == {"epochs": 5, "lr": 0.5, "workers": 0, "img_size": 32, "tensorboard": True}
    assert Path(s.out) == tmp_path / "s" and s.tune is False
