"""Suite bookkeeping: method grammar, skip / resume, aggregation over seeds and tasks."""

import csv
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pear.errors import PearError
from pear.harness import suite
from pear.harness.results import aggregate
from pear.harness.suite import run_suite
from pear.harness.suite_methods import method_overrides
from pear.harness.suites.grammar import split_name

TINY = {"backbone": "vit_tiny_patch16_224", "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32,
                                                             "num_heads": 2},
        "img_size": 32, "epochs": 2, "batch_size": 20, "workers": 0, "device": "cpu"}


def make_task(root: Path, name: str = "toy", sizes=(40, 10, 40), classes: int = 3) -> None:
    """A VTAB-format task whose classes differ in brightness."""
    rng = np.random.default_rng(0)
    lines = {}
    for split, n in zip(("train800", "val200", "test"), sizes):
        (root / name / "images" / split).mkdir(parents=True)
        lines[split] = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.png"
            pixels = rng.integers(0, 60, (16, 16, 3)) + 80 * (i % classes)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / rel)
            lines[split].append(f"{rel} {i % classes}\n")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (root / name / f"{split}.txt").write_text("".join(entries))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_task(root)
    return root


@pytest.mark.parametrize("name, expected", [
    ("pear", {"method": "pear"}),
    ("lora", {"method": "lora"}),
    ("peft-lora", {"method": "peft-lora"}),
    ("pear-share-matched", {"method": "pear", "share": "matched"}),
    ("pear-share-rank", {"method": "pear", "share": "rank"}),
    ("pear@act=gelu@blocks=0+2", {"method": "pear", "act": "gelu", "blocks": (0, 2)}),
    ("adapter@sublayers=mlp@rank=4", {"method": "adapter", "sublayers": ("mlp",), "rank": 4}),
    ("pear@target=attn$", {"method": "pear", "target": "attn$"}),
    ("pear-share-nearest", {"method": "pear", "share": "nearest"}),
    ("pear-share-none", {"method": "pear", "share": "none"}),
    ("pear-kc-frozen", {"method": "pear", "knowledge": "frozen"}),
    ("pear-imp-random", {"method": "pear", "importance": "random"}),
    ("pear-r0.75", {"method": "pear", "prune_ratio": 0.75}),
    ("pear-r0", {"method": "pear", "prune_ratio": 0.0}),
    ("pear-r.3", {"method": "pear", "prune_ratio": 0.3}),
    ("pear-scope-group", {"method": "pear", "prune_scope": "group"}),
])
def test_method_grammar(name, expected):
    assert method_overrides(name) == expected


@pytest.mark.parametrize("name", ["pearl", "pear-share-", "pear-share-best", "pear-kc-merged", "pear-imp-",
                                  "pear-r1", "pear-r1.0", "pear-scope-", "pear-scope-stage", "pear-rnan", "pear-r1e-1", "pear-r-0.5", "adapter-r0.5",
                                  "PEAR", "", "pearl@rank=4", "pear@target=a/b"])
def test_method_grammar_rejects(name):
    with pytest.raises(PearError, match=r"pear-share-\{matched,nearest,top1,none\}.*pear-r<ratio"):
        method_overrides(name)


@pytest.mark.parametrize("name, problem", [("pear@rank", "is not FIELD=VALUE"), ("pear@nope=1", "is not FIELD=VALUE"),
                                           ("pear@rank=x", "'x' is not a valid rank")])
def test_method_grammar_rejects_bad_settings(name, problem):
    with pytest.raises(PearError, match=problem):
        method_overrides(name)


def test_split_name_reads_a_name_as_written():
    assert split_name("pear@scale=1@prune_ratio=0.75") == ("pear", {"scale": "1", "prune_ratio": "0.75"})
    assert split_name("adapter") == ("adapter", {})
    with pytest.raises(PearError, match="'pear@rank' has 'rank', which is not FIELD=VALUE"):
        split_name("pear@rank")
    with pytest.raises(PearError, match="sets rank twice"):
        split_name("pear@rank=4@rank=8")


def test_suite_runs_skips_resumes_and_refuses_other_options(data, tmp_path, monkeypatch):
    out = tmp_path / "suite"
    suite_args = dict(data=data, tasks=["toy"], methods=["linear", "pear-kc-frozen"], seeds=[0], out=out)
    rows = run_suite(**suite_args, base=TINY, command="pear suite --test")
    assert [(r["method"], r["seed"]) for r in rows] == [("linear", 0), ("pear-kc-frozen", 0)]
    pear_run, linear_metrics = out / "runs/toy/pear-kc-frozen/seed0", out / "runs/toy/linear/seed0/metrics.json"
    args = (pear_run / "args.yaml").read_text()
    assert "knowledge: frozen" in args and "method: pear" in args
    for name in ("results.csv", "results.md", "accuracy_vs_bytes.png"):
        assert (out / name).stat().st_size > 0
    assert "pear suite --test" in (out / "results.md").read_text()

    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail(f"trained {cfg.out} again"))
    run_suite(**suite_args, base=TINY)
    monkeypatch.undo()

    # A run folder without metrics.json is a crashed run: resumed from its saved state.
    linear_mtime = linear_metrics.stat().st_mtime_ns
    (pear_run / "metrics.json").unlink()
    resumed = run_suite(**suite_args, base=TINY)
    for key in ("test_acc", "plan_digest", "checkpoint_file_bytes"):
        assert resumed[1][key] == rows[1][key]
    assert "resumed from" in (pear_run / "train.log").read_text()
    assert linear_metrics.stat().st_mtime_ns == linear_mtime

    with pytest.raises(PearError, match="epochs: 2 there, 3 now"):
        run_suite(**suite_args, base={**TINY, "epochs": 3})


# Stands in for `pear train -c CONFIG --device D` in a subprocess: writes the run's
# metrics.json, or fails for seed 1 the way the CLI does (exit status 2).
FAKE_TRAIN = """
import json, sys, time, yaml
from pathlib import Path
cfg = yaml.safe_load(open(sys.argv[1]))
if cfg["seed"] == 1:
    print("pear: error: loss became nan", file=sys.stderr)
    sys.exit(2)
time.sleep(0.2)
Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
metrics = {"task": cfg["task"], "seed": cfg["seed"], "test_acc": 40.0 + cfg["seed"], "checkpoint_file_bytes": 100,
           "device": sys.argv[2], "trainable_params": 10}
(Path(cfg["out"]) / "metrics.json").write_text(json.dumps(metrics))
print("done on", sys.argv[2], "resume", cfg["resume"])
"""


def test_several_devices_share_a_queue(data, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "_train_command", lambda config, device: [sys.executable, "-c", FAKE_TRAIN,
                                                                          str(config), device])
    (tmp_path / "runs/toy/linear/seed3").mkdir(parents=True)  # a run that crashed before its first epoch
    with pytest.raises(PearError, match=r"(?s)1 of 4 runs failed.*toy/linear/seed1: exit status 2: "
                                        r"pear: error: loss became nan \(log: .*seed1.log\)"):
        run_suite(data=data, tasks=["toy"], methods=["linear"], seeds=[0, 1, 2, 3], out=tmp_path, base=TINY,
                  devices=["cuda:0", "cuda:1"])
    rows = aggregate(tmp_path)
    # Seeds 0 and 1 start at once; 2 and 3 take whichever device frees first.
    assert [r["seed"] for r in rows] == [0, 2, 3] and rows[0]["device"] == "cuda:0"
    assert {r["device"] for r in rows} <= {"cuda:0", "cuda:1"}
    assert "resume True" in (tmp_path / "logs/toy/linear/seed3.log").read_text()
    assert not list(tmp_path.glob(".suite-*"))  # the per-run config files are cleaned up


@pytest.mark.slow
def test_several_devices_run_pear_train_subprocesses(data, tmp_path):
    rows = run_suite(data=data, tasks=["toy"], methods=["linear"], seeds=[0], out=tmp_path, base=TINY,
                     devices=["cpu", "cpu"])
    assert rows[0]["device"] == "cpu"
    assert "test accuracy" in (tmp_path / "logs/toy/linear/seed0.log").read_text()


def test_failed_run_is_reported_after_the_others(data, tmp_path, monkeypatch):
    def train(cfg):
        if cfg.seed == 1:
            raise PearError("loss became nan")
        Path(cfg.out).mkdir(parents=True)
        (Path(cfg.out) / "metrics.json").write_text(json.dumps({"task": cfg.task, "seed": cfg.seed,
                                                                "test_acc": 50.0, "checkpoint_file_bytes": 10}))
    monkeypatch.setattr(suite, "train", train)
    with pytest.raises(PearError, match=r"(?s)1 of 3 runs failed.*toy/linear/seed1: PearError: loss became nan"):
        run_suite(data=data, tasks=["toy"], methods=["linear"], seeds=[0, 1, 2], out=tmp_path, base=TINY)
    assert [r["seed"] for r in csv.DictReader((tmp_path / "results.csv").open())] == ["0", "2"]


def test_checks_everything_before_training(data, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail("trained despite a bad suite"))
    monkeypatch.setattr(suite, "build_dataset",
                        lambda name, root, **_: built.append(name) or make_task(Path(root), name))
    with pytest.raises(PearError, match="unknown suite method 'pear-kc-best'"):
        run_suite(data=data, tasks=["toy"], methods=["pear", "pear-kc-best"], seeds=[0], out=tmp_path, base=TINY)
    with pytest.raises(PearError, match="task folder .*nope does not exist"):
        run_suite(data=data, tasks=["toy", "nope"], methods=["pear"], seeds=[0], out=tmp_path, base=TINY)
    with pytest.raises(PearError, match="pass --build"):
        run_suite(data=tmp_path, tasks=["sprites_ori"], methods=["pear"], seeds=[0], out=tmp_path, base=TINY)
    with pytest.raises(PearError, match=r"must not set \['method'\]"):
        run_suite(data=data, tasks=["toy"], methods=["pear"], seeds=[0], out=tmp_path,
                  base={**TINY, "method": "lora"})
    with pytest.raises(PearError, match="unknown training option"):
        run_suite(data=data, tasks=["toy"], methods=["pear"], seeds=[0], out=tmp_path, base={"epoch": 3})
    monkeypatch.setattr(suite, "train", lambda cfg: None)
    run_suite(data=tmp_path / "built", tasks=["sprites_ori"], methods=["linear"], seeds=[0], out=tmp_path / "s",
              base=TINY, build_missing=True)
    assert built == ["sprites_ori"]


def write_metrics(out: Path, task: str, method: str, seed: int, acc: float, **extra) -> None:
    run = out / "runs" / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {"task": task, "method": method.split("-")[0], "seed": seed, "test_acc": acc,
               "trainable_params": 100, "checkpoint_file_bytes": 4000, "device": "cpu", "backbone": "vit", **extra}
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_aggregate_means_over_seeds_tasks_and_vtab_groups(tmp_path):
    accs = {  # task -> method -> per-seed accuracies
        "dtd": {"adapter": [60.0, 62.0, 67.0], "pear-share-top1": [58.0, 61.0]},
        "eurosat": {"adapter": [90.0, 92.0, 94.0], "pear-share-top1": [91.0]},
        "kitti": {"adapter": [70.0, 80.0, 75.0]},
        "dsprites_loc": {"adapter": [50.0, 52.0, 54.0]},
    }
    for task, by_method in accs.items():
        for method, values in by_method.items():
            for seed, acc in enumerate(values):
                adapter_bytes = 2000 if method == "adapter" else 1000
                write_metrics(tmp_path, task, method, seed, acc, adapter_bytes=adapter_bytes,
                              trainable_params_before=200 if method != "adapter" else 100)
    rows = aggregate(tmp_path, command="pear suite --tasks dtd,eurosat")
    assert len(rows) == 15 and rows[0]["task"] == "dtd" and rows[0]["method"] == "adapter"
    assert {r["method"] for r in rows} == {"adapter", "pear-share-top1"}  # the suite's names, not 'pear'
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 15

    md = (tmp_path / "results.md").read_text()
    dtd_std = statistics.stdev([60.0, 62.0, 67.0])
    assert f"63.00 ± {dtd_std:.2f} (n=3)" in md
    assert "59.50 ± 2.12 (n=2)" in md and "91.00 (n=1)" in md
    task_means = [63.0, 92.0, 75.0, 52.0]
    group_means = [63.0, 92.0, (75.0 + 52.0) / 2]
    assert "Mean over tasks" in md and "Mean of group means" in md
    adapter_row = next(line for line in md.splitlines() if line.startswith("| adapter |"))
    assert adapter_row.endswith(f"| {statistics.fmean(task_means):.2f} | 63.00 | 92.00 | 63.50 | "
                                f"{statistics.fmean(group_means):.2f} |")
    top1_row = next(line for line in md.splitlines() if line.startswith("| pear-share-top1 |"))
    assert top1_row.endswith("| 75.25 (2/4 tasks) | 59.50 | 91.00 | – | 75.25 (2/3 groups) |")
    assert "| dtd | pear-share-top1 | 59.50 ± 2.12 (n=2) | 200 → 100 | 4,000 | 1,000 | 0.50× |" in md
    assert "pear suite --tasks dtd,eurosat" in md and "CPUs" in md
    assert (tmp_path / "accuracy_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"


def test_aggregate_reads_older_metrics_names(tmp_path):
    """Before the rename, metrics.json called the checkpoint's size on disk 'stored_bytes'."""
    write_metrics(tmp_path, "toy", "pear", 0, 40.0)
    path = tmp_path / "runs/toy/pear/seed0/metrics.json"
    old = json.loads(path.read_text())
    old["stored_bytes"] = old.pop("checkpoint_file_bytes")
    path.write_text(json.dumps(old))
    assert aggregate(tmp_path)[0]["checkpoint_file_bytes"] == 4000
    assert "| toy | pear | 40.00 (n=1) | 100 | 4,000 |" in (tmp_path / "results.md").read_text()


def test_aggregate_without_vtab_tasks_or_runs(tmp_path):
    assert aggregate(tmp_path) == [] and "No run has finished yet" in (tmp_path / "results.md").read_text()
    write_metrics(tmp_path, "toy", "pear", 0, 40.0)
    write_metrics(tmp_path, "toy", "pear", 10, 60.0)
    write_metrics(tmp_path, "toy", "pear", 2, 50.0)
    rows = aggregate(tmp_path)
    assert [r["seed"] for r in rows] == [0, 2, 10]
    md = (tmp_path / "results.md").read_text()
    assert "50.00 ± 10.00 (n=3)" in md and "Mean over tasks" in md and "group" not in md
    (tmp_path / "runs/toy/pear/seed0/metrics.json").write_text("{")
    with pytest.raises(PearError, match="not a readable metrics file"):
        aggregate(tmp_path)


@pytest.mark.parametrize("name, problem", [
    ("linear@rank=4", "method linear has no Pear options"), ("full@scale=2", "method full has no Pear options"),
    ("peft-lora@act=gelu", "method peft-lora takes only rank"),
    ("pear@rank=4@rank=8", "sets rank twice"),
    ("pear@target=a|b", "'|'"), ("pear@target=a\nb", "'\\\\n'"), ("pear@target=a b", "' '"),
    ("pear@target=" + "a" * 300, "is 312 characters long; at most 100"),
])
def test_method_grammar_refuses_names_a_suite_cannot_hold(name, problem):
    with pytest.raises(PearError, match=problem):
        method_overrides(name)


def test_a_method_name_too_long_for_a_folder_is_refused_before_anything_runs(data, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail("trained despite a bad method name"))
    with pytest.raises(PearError, match="at most 100"):
        run_suite(data=data, tasks=["toy"], methods=["linear", "pear@target=" + "a" * 300], seeds=[0], out=tmp_path,
                  base=TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value, named", [
    ("seed", "abc", "seed is 'abc'"), ("seed", None, "seed is None"), ("seed", 1.5, "seed is 1.5"),
    ("test_acc", "NaN", "test_acc is 'NaN'"), ("test_acc", float("nan"), "test_acc is nan"),
    ("test_acc", None, "test_acc is None"), ("task", 5, "task is 5"), ("task", ["toy"], "task is ['toy']"),
    ("trainable_params", "many", "trainable_params is 'many'"), ("device", ["cpu"], "device is ['cpu']"),
])
def test_aggregate_names_the_bad_field_of_a_metrics_file(tmp_path, field, value, named):
    write_metrics(tmp_path, "toy", "pear", 0, 40.0)
    write_metrics(tmp_path, "toy", "pear", 1, 50.0)
    path = tmp_path / "runs/toy/pear/seed1/metrics.json"
    metrics = json.loads(path.read_text())
    metrics[field] = value
    path.write_text(json.dumps(metrics))
    with pytest.raises(PearError) as info:
        aggregate(tmp_path)
    assert str(path) in str(info.value) and named in str(info.value), str(info.value)


def test_aggregate_names_a_seed_folder_that_is_no_seed(tmp_path):
    write_metrics(tmp_path, "toy", "pear", 0, 40.0)
    path = tmp_path / "runs/toy/pear/seed0/metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["seed"]
    path.write_text(json.dumps(metrics))
    (tmp_path / "runs/toy/pear/seed0").rename(tmp_path / "runs/toy/pear/seedx")
    with pytest.raises(PearError, match="seedx.*has no seed"):
        aggregate(tmp_path)


@pytest.mark.parametrize("damage, named", [
    ({"pear": 5}, "'pear' must be a mapping"), ({"epochs": [1]}, "--epochs must be an integer"),
    ({"pear": {"rank": [1]}}, "rank"), ({"data": "a\x00b"}, "a\\x00b' is not a path"), ("- 1\n", "must hold a mapping"),
])
def test_a_damaged_args_yaml_in_a_suite_is_named(data, tmp_path, monkeypatch, capsys, damage, named):
    import yaml

    from pear.cli import main

    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail("trained despite a damaged run folder"))
    (real,) = suite.sweep(data, ["toy"], ["linear"], [0], tmp_path, base=TINY)
    run = real.dir
    run.mkdir(parents=True)
    recorded = damage if isinstance(damage, str) else yaml.safe_dump({**real.cfg.to_dict(), **damage})
    (run / "args.yaml").write_text(recorded)
    with pytest.raises(PearError) as info:
        run_suite(data=data, tasks=["toy"], methods=["linear"], seeds=[0], out=tmp_path, base=TINY)
    assert str(run / "args.yaml") in str(info.value) and named in str(info.value), str(info.value)
    argv = ["suite", "--data", str(data), "--tasks", "toy", "--methods", "linear", "--out", str(tmp_path)]
    for mode in (["--index", "0"], ["--list"], ["--aggregate"]):
        assert main([*argv, *mode]) == 2
        assert str(run / "args.yaml") in capsys.readouterr().err


# ---------------------------------------------------------------- on a scheduler: the Slurm script, --aggregate

def _fake_finish(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"task": "toy", "seed": 0, "test_acc": 50.0,
                                                      "checkpoint_file_bytes": 10}))


def _suite_argv(data, out) -> list[str]:
    return ["suite", "--data", str(data), "--tasks", "toy", "--methods", "linear", "--seeds", "0", "--out", str(out)]


def test_slurm_gres_is_an_option(tiny_vtab, tmp_path, monkeypatch):
    import subprocess

    from pear.cli import main

    monkeypatch.chdir(tmp_path)
    script = tmp_path / "a.sbatch"
    assert main([*_suite_argv(tiny_vtab, "s"), "--emit-slurm", str(script)]) == 0
    assert "#SBATCH --gres=gpu:1\n" in script.read_text()  # the default, as before
    assert main([*_suite_argv(tiny_vtab, "s"), "--slurm-gres", "gpu:a100:2", "--emit-slurm", str(script)]) == 0
    text = script.read_text()
    assert "#SBATCH --gres=gpu:a100:2\n" in text and "--gres=gpu:1" not in text
    assert "--slurm-gres" not in text.strip().splitlines()[-1]  # the array tasks' command does not need it
    assert main([*_suite_argv(tiny_vtab, "s"), "--slurm-gres", "", "--emit-slurm", str(script)]) == 0
    assert "--gres" not in script.read_text()  # '': a CPU cluster, no GPU asked for
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_aggregate_records_the_suite_command_not_its_own(tiny_vtab, tmp_path, monkeypatch):
    from pear.cli import main

    monkeypatch.setattr(suite, "train", lambda cfg: _fake_finish(Path(cfg.out)))
    argv = _suite_argv(tiny_vtab, tmp_path)
    assert main([*argv, "--index", "0"]) == 0
    assert main([*argv, "--aggregate"]) == 0
    command = next(ln for ln in (tmp_path / "results.md").read_text().splitlines() if ln.startswith("- Command:"))
    assert command == f"- Command: `pear {' '.join(argv)}`"
