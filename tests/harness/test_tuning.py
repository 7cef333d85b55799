"""The VTAB-1k tuning protocol of `pear suite --tune`: which runs it makes, what it reads,
what it chooses and where the choice goes."""

import csv
import json
from pathlib import Path

import pytest

from pear.errors import PearError
from pear.harness import suite, tuning
from pear.harness.results import aggregate
from pear.harness.suite import run_suite

from test_suite import TINY, make_task  # noqa: E402  (tests/harness is on sys.path under pytest)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_task(root)
    return root


def _fake_history(run: Path, val: float) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "history.json").write_text(json.dumps([{"epoch": 0, "val_acc": 10.0}, {"epoch": 1, "val_acc": val}]))


def test_choose_takes_the_best_last_epoch_val_score_and_the_earlier_value_on_a_tie(tmp_path):
    for value, acc in zip(tuning.SCALE_GRID, (40.0, 55.0, 55.0, 30.0), strict=True):
        _fake_history(tuning.tune_run_dir(tmp_path, "t", "adapter", value), acc)
    record = tuning.choose(tmp_path, "t", "adapter")
    assert record["chosen"] == tuning.SCALE_GRID[1]
    assert record["val200_acc"] == {"0.1": 40.0, "1": 55.0, "4": 55.0, "16": 30.0}
    assert tuning.read_choices(tmp_path) == [json.loads(json.dumps(record))]


def test_a_tuning_run_without_val_scores_is_named(tmp_path):
    (tuning.tune_run_dir(tmp_path, "t", "pear", 0.1)).mkdir(parents=True)
    with pytest.raises(PearError, match="scale=0.1"):
        tuning.choose(tmp_path, "t", "pear")


def test_who_is_tuned_by_what():
    assert tuning.tuned_by("adapter", "adapter") == "adapter"
    assert tuning.tuned_by("peft-lora-eq", "peft-lora-eq") == "peft-lora-eq"
    assert tuning.tuned_by("pear-kc-none", "pear") == "pear"  # ablations use pear's choice
    assert tuning.tuned_by("linear", "linear") is None
    # A method with @options is tuned by the method it names: not left at the default scale.
    assert tuning.tuned_by("prune@prune_ratio=0.9", "prune") == "prune"
    assert tuning.tuned_by("adapter@rank=4", "adapter") == "adapter"
    assert tuning.tuned_by("pear@prune_ratio=0.9@share=none", "pear") == "pear"
    assert tuning.tuned_by("peft-lora-eq@lora_rank=2", "peft-lora-eq") == "peft-lora-eq"
    assert tuning.tuned_by("linear@lr=0.01", "linear") is None
    assert tuning.tune_overrides("peft-lora", 32.0) == {"lora_alpha": 32.0, "seed": 0, "select_on": "val200"}


@pytest.mark.slow
def test_suite_tune_runs_the_grid_on_train800_then_every_seed_with_the_choice(data, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "GRIDS", {"adapter": ("scale", (0.1, 2.0)), "pear": ("scale", (0.1, 2.0))})
    out = tmp_path / "suite"
    rows = run_suite(str(data), ["toy"], ["linear", "adapter", "pear-kc-none"], [0, 1], str(out), base=TINY,
                     tune=True)
    # Tuning runs: one per (task, grid owner, value), trained on train800 and validated.
    for owner in ("adapter", "pear"):
        record = json.loads((out / "tuning" / "toy" / owner / "choice.json").read_text())
        assert set(record["val200_acc"]) == {"0.1", "2"} and record["chosen"] in (0.1, 2.0)
        for value in (0.1, 2.0):
            args = (tuning.tune_run_dir(out, "toy", owner, value) / "args.yaml").read_text()
            assert "train_split: train800\n" in args and "select_on: val200" in args
    assert not (out / "tuning" / "toy" / "linear").exists()
    # Real runs: every seed with the chosen value, on train800val200.
    chosen = {o: json.loads((out / "tuning" / "toy" / o / "choice.json").read_text())["chosen"] for o in ("adapter", "pear")}
    for method, owner in (("adapter", "adapter"), ("pear-kc-none", "pear")):
        for seed in (0, 1):
            args = (out / "runs" / "toy" / method / f"seed{seed}" / "args.yaml").read_text()
            assert f"scale: {chosen[owner]}" in args and "train_split: train800val200" in args
    table = {(r["method"], r["seed"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert table[("adapter", "0")]["tuned"] == f"scale={chosen['adapter']:g}"
    assert table[("pear-kc-none", "1")]["tuned"] == f"scale={chosen['pear']:g}"
    assert table[("linear", "0")]["tuned"] == ""
    assert "## Tuning (val200)" in (out / "results.md").read_text()
    assert len(rows) == 6
    # A second call trains nothing more and chooses the same.
    assert run_suite(str(data), ["toy"], ["linear", "adapter", "pear-kc-none"], [0, 1], str(out), base=TINY,
                     tune=True) == rows


@pytest.mark.slow
def test_tune_only_runs_the_grid_and_records_the_choices_then_the_suite_reuses_them(data, tmp_path, monkeypatch):
    from pear.harness.suites.suite import Suite

    monkeypatch.setattr(tuning, "GRIDS", {"adapter": ("scale", (0.1, 2.0))})
    out = tmp_path / "suite"
    spec = (str(data), ("toy",), ("linear", "adapter"), (0,), str(out))
    records = Suite(*spec, base=TINY, tune=True).tune_only()
    assert [(r["task"], r["method"], r["chosen"] in (0.1, 2.0)) for r in records] == [("toy", "adapter", True)]
    table = (out / "tuning" / tuning.CHOICES_TABLE).read_text()
    assert table.startswith("## Tuning (val200)") and "| toy | adapter | scale | " in table
    assert not (out / "runs").exists()  # no real run yet
    # The whole suite afterwards trains only the real runs, with the recorded choice.
    trained = []
    real_train = suite.train
    monkeypatch.setattr(suite, "train", lambda cfg: trained.append(Path(cfg.out).parent.name) or real_train(cfg))
    Suite(*spec, base=TINY, tune=True).run()
    assert sorted(trained) == ["adapter", "linear"]
    args = (out / "runs" / "toy" / "adapter" / "seed0" / "args.yaml").read_text()
    assert f"scale: {records[0]['chosen']}" in args


def test_tune_only_needs_a_method_with_a_grid(data, tmp_path):
    from pear.harness.suites.suite import Suite

    with pytest.raises(PearError, match="none of the methods linear has an option that --tune chooses"):
        Suite(str(data), ("toy",), ("linear",), (0,), str(tmp_path / "s"), base=TINY, tune=True).tune_only()
    with pytest.raises(PearError, match="tune=True"):
        Suite(str(data), ("toy",), ("adapter",), (0,), str(tmp_path / "s"), base=TINY).tune_only()
    assert not (tmp_path / "s").exists()


def test_tune_refuses_a_fixed_value_of_the_tuned_option(data, tmp_path):
    with pytest.raises(PearError, match="--tune chooses scale"):
        run_suite(str(data), ["toy"], ["adapter"], [0], str(tmp_path), base={**TINY, "scale": 1.0}, tune=True)


@pytest.mark.parametrize("method", ["pear@scale=2", "pear@rank=4@scale=0.5"])
def test_tune_refuses_a_method_that_fixes_the_tuned_option(data, tmp_path, monkeypatch, method):
    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail(f"trained {cfg.out}"))
    with pytest.raises(PearError, match=rf"--tune chooses scale on val200, but suite method '{method}' sets it; "
                                        r"drop @scale=.* or --tune"):
        run_suite(str(data), ["toy"], ["linear", method], [0], str(tmp_path), base=TINY, tune=True)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tuning").exists()


def _record(tmp_path: Path, **changes) -> Path:
    for value in tuning.SCALE_GRID:
        _fake_history(tuning.tune_run_dir(tmp_path, "toy", "pear", value), 50.0)
    record = tuning.choose(tmp_path, "toy", "pear")
    path = tuning.grid_dir(tmp_path, "toy", "pear") / tuning.CHOICE_FILE
    record.update(changes)
    for key in [k for k, v in changes.items() if v is _MISSING]:
        del record[key]
    path.write_text(json.dumps(record))
    return path


_MISSING = object()


@pytest.mark.parametrize("changes, named", [
    ({"chosen": "big"}, "chosen is 'big'"), ({"chosen": _MISSING}, "chosen is missing"),
    ({"chosen": None}, "chosen is None"), ({"chosen": True}, "chosen is True"),
    ({"val200_acc": {"0.1": "high"}}, "val200_acc['0.1'] is 'high'"), ({"val200_acc": [1]}, "val200_acc is [1]"),
    ({"task": ["toy"]}, "task is ['toy']"), ({"option": 5}, "option is 5"),
    ({"method": "pear@prune_ratio"}, "'prune_ratio', which is not FIELD=VALUE"),
])
def test_a_damaged_choice_file_is_named(tmp_path, changes, named):
    path = _record(tmp_path, **changes)
    for read in (lambda: tuning.read_choices(tmp_path), lambda: aggregate(tmp_path)):
        with pytest.raises(PearError) as info:
            read()
        assert str(path) in str(info.value) and named in str(info.value), str(info.value)


def test_cli_tune_only_implies_tune_and_is_one_mode(data, tmp_path, monkeypatch, capsys):
    from pear.cli import main
    from pear.harness.suites.suite import Suite

    seen = []
    monkeypatch.setattr(Suite, "tune_only", lambda self, devices, build_missing: seen.append((self.tune, devices)))
    argv = ["suite", "--data", str(data), "--tasks", "toy", "--methods", "adapter", "--out", str(tmp_path / "s")]
    assert main([*argv, "--tune-only", "--devices", "cpu,cpu"]) == 0
    assert seen == [(True, ["cpu", "cpu"])]
    assert main([*argv, "--tune-only", "--list"]) == 2
    assert "pass one of --list, --tune-only" in capsys.readouterr().err


def test_tune_grid_sets_the_values_tried_and_the_record_names_its_grid(tiny_vtab, tmp_path, capsys):
    from pear.cli import main

    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "adapter,peft-lora", "--out",
            str(tmp_path), "--epochs", "2", "--tune", "--tune-grid", "scale=2,8,2", "--list"]
    assert main(args) == 0
    labels = [ln.split()[2] for ln in capsys.readouterr().out.splitlines()[1:]]
    lora = [f"toy/peft-lora@lora_alpha={v:g}/seed0" for v in tuning.LORA_ALPHA_GRID]  # the built-in grid
    assert labels == ["toy/adapter@scale=2/seed0", "toy/adapter@scale=8/seed0", *lora, "toy/adapter/seed0",
                      "toy/peft-lora/seed0"]
    grids = {"scale": (2.0, 8.0)}
    for value, acc in ((2.0, 50.0), (8.0, 60.0)):
        _fake_history(tuning.tune_run_dir(tmp_path, "toy", "adapter", value), acc)
    assert tuning.choose(tmp_path, "toy", "adapter", grids)["grid"] == [2.0, 8.0]
    assert tuning.current_choice(tmp_path, "toy", "adapter", grids)["chosen"] == 8.0
    assert tuning.current_choice(tmp_path, "toy", "adapter") is None  # the built-in grid chooses again


@pytest.mark.parametrize("flags, named", [
    (["--tune", "--tune-grid", "scale"], "--tune-grid 'scale': expected OPTION=VALUE,VALUE,..."),
    (["--tune", "--tune-grid", "scale=1,x"], "--tune-grid 'scale=1,x': expected OPTION=VALUE,VALUE,..."),
    (["--tune", "--tune-grid", "rank=1,2"], "--tune chooses lora_alpha and scale, not 'rank'"),
    (["--tune", "--tune-grid", "scale=0,4"], "--tune-grid scale: expected one or more finite values > 0, got [0.0, 4.0]"),
    (["--tune", "--tune-grid", "scale=inf"], "expected one or more finite values > 0, got [inf]"),
    (["--tune-grid", "scale=1,4"], "--tune-grid sets the values --tune tries; pass --tune (or --tune-only) with it"),
    (["--tune", "--tune-each", "scale"], "--tune-each scale: --tune chooses scale itself"),
    (["--tune", "--tune-each", "prune_ratio,nope"], "--tune-each 'nope': expected one of the Pear options"),
    (["--tune-each", "prune_ratio"], "--tune-each says what --tune chooses apart; pass --tune"),
])
def test_a_bad_tune_grid_or_tune_each_is_named(tiny_vtab, tmp_path, capsys, flags, named):
    from pear.cli import main

    args = ["suite", "--data", str(tiny_vtab), "--tasks", "toy", "--methods", "adapter", "--out", str(tmp_path / "s"),
            *flags, "--list"]
    assert main(args) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_field_tuned_apart_joins_the_owner_and_the_most_specific_record_owns_a_run():
    assert tuning.tuned_by("prune@prune_ratio=0.9", "prune", {"prune_ratio": 0.9}) == "prune@prune_ratio=0.9"
    assert tuning.tuned_by("pear-r0.75", "pear", {"prune_ratio": 0.75}) == "pear@prune_ratio=0.75"
    assert tuning.tuned_by("pear@blocks=0+6", "pear", {"blocks": [0, 6]}) == "pear@blocks=0+6"
    assert tuning.tuned_by("linear", "linear", {"prune_ratio": 0.9}) is None
    assert tuning.grid_for("prune@prune_ratio=0.9") == ("scale", tuning.SCALE_GRID)
    records = [{"task": "t", "method": "prune", "chosen": 16.0}, {"task": "t", "method": "prune@prune_ratio=0.9",
                                                                    "chosen": 4.0}]
    at = {"method": "prune", "prune_ratio": 0.9, "knowledge": "none"}
    assert tuning.owner_record(records, "t", "prune@prune_ratio=0.9@knowledge=none", at)["chosen"] == 4.0
    assert tuning.owner_record(records, "t", "prune@prune_ratio=0.75", {**at, "prune_ratio": 0.75})["chosen"] == 16.0
    assert tuning.owner_record(records, "u", "prune", {"method": "prune"}) is None
