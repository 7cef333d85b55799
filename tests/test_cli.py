"""`pear train` / `pear eval` end to end through `pear.cli.main`, on the tiny ViT and
the tiny VTAB task: every method, the run folder it writes, `eval` reproducing its
accuracy, YAML configs, and each bad input as one clear error (exit 2, no traceback).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import timm
import yaml
from safetensors.torch import save_file

from pear.cli import main

METHODS = ("linear", "full", "adapter", "pear", "prune", "peft-lora")
ADAPTER_METHODS = ("adapter", "pear", "prune")
N_TEST = 40  # tiny_vtab's test images


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def runs(tiny_vtab, tiny_vit_args, tmp_path_factory):
    """method -> (run folder, its stdout: log lines, then the metrics summary) for a
    2-epoch run of each method."""
    root = tmp_path_factory.mktemp("cli_runs")
    out = {}
    for method in METHODS:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = main(["train", "--data", str(tiny_vtab), "--task", "toy", "--out", str(root / method),
                       *tiny_vit_args, "--method", method, "--epochs", "2", "--batch-size", "16", "--workers", "0",
                       "--no-progress", "--device", "cpu"])
        assert rc == 0, method
        out[method] = (root / method, printed.getvalue())
    return out


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_a_complete_run_folder(runs, method):
    run, printed = runs[method]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "toy" and metrics["method"] == method and metrics["epochs"] == 2
    assert 0 <= metrics["test_acc"] <= 100 and (metrics["test_acc"] * N_TEST / 100).is_integer()  # a percentage
    assert isinstance(metrics["trainable_params"], int) and metrics["trainable_params"] > 0
    # The model card (README.md) is documentation, not counted as the stored task.
    assert metrics["checkpoint_file_bytes"] == sum(f.stat().st_size for f in (run / "checkpoint").iterdir()
                                                   if f.name != "README.md")
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    summary = {k: metrics[k] for k in ("task", "method", "test_acc", "trainable_params", "checkpoint_file_bytes")}
    assert json.loads(printed[printed.index("{\n"):]) == summary
    for name in ("args.yaml", "metrics.json", "train.log", "history.json"):
        assert (run / name).is_file(), name
    assert (run / "report.json").is_file() == (method in ADAPTER_METHODS)
    assert (run / "plan.json").is_file() == (method in ("pear", "prune"))
    assert yaml.safe_load((run / "args.yaml").read_text())["method"] == method
    assert f"test accuracy {metrics['test_acc']:.2f}%" in (run / "train.log").read_text()


def test_trainable_parameters_order_the_methods(runs):
    n = {m: json.loads((runs[m][0] / "metrics.json").read_text())["trainable_params"] for m in METHODS}
    assert n["linear"] == 32 * 3 + 3  # the head of a width-32 ViT, 3 classes
    assert n["linear"] < n["peft-lora"] < n["full"]
    assert n["linear"] < n["pear"] <= n["prune"] < n["adapter"] < n["full"]


def test_lora_is_an_alias_of_peft_lora():
    from pear.harness.options import TrainConfig

    assert TrainConfig(data="d", task="t", out="o", method="lora").method == "peft-lora"
    assert TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", "method": "lora", "rank": 4}).pear.rank == 4


@pytest.mark.parametrize("method", METHODS)
def test_eval_reproduces_the_test_accuracy(runs, method, capsys):
    run, _ = runs[method]
    rc, out, err = _run_cli(["eval", "--run", run, "--device", "cpu"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["test_acc"] == result["recorded_test_acc"]
    assert result["test_acc"] == json.loads((run / "metrics.json").read_text())["test_acc"]


@pytest.mark.slow
def test_compiled_pear_run_compiles_a_few_graphs_not_one_per_step(tiny_vtab, tiny_vit_args, tmp_path,
                                                                capsys, monkeypatch):
    """--compile: the model is wrapped again after pruning (a new parameter set) and compiles
    a handful of graphs, never one per step; the recorded accuracy is the one `pear eval` gets."""
    import torch._dynamo

    compiles, graphs = [], []
    real = torch.compile
    inductor = torch._dynamo.lookup_backend("inductor")

    def counting(gm, example_inputs):
        graphs.append(len(compiles))
        return inductor(gm, example_inputs)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiles.append(model) or real(model, backend=counting))
    torch._dynamo.reset()
    run = tmp_path / "run"
    rc, out, err = _run_cli(["train", "--data", tiny_vtab, "--task", "toy", "--out", run, *tiny_vit_args,
                             "--method", "pear", "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "16",
                             "--workers", "0", "--no-progress", "--device", "cpu", "--compile"], capsys)
    assert rc == 0, err
    assert len(compiles) == 2  # before training, and after the prune step
    # 9 steps (3 epochs of 16 + 16 + 8 images). Graphs: the first batch, the short last batch
    # (dynamic batch size), and at most one after pruning (none where the pruned model keeps
    # the same structure: every pruned position shares, so dynamo's cached graph still fits).
    assert 1 <= len(graphs) <= 3, graphs
    assert json.loads((run / "plan.json").read_text())["pruned"]
    rc, out, err = _run_cli(["eval", "--run", run, "--device", "cpu"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["test_acc"] == result["recorded_test_acc"]


def test_yaml_config_gives_defaults_and_flags_override_it(tiny_vtab, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(tiny_vtab), "task": "toy", "backbone": "vit_tiny_patch16_224", "img_size": 32,
        "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
        "method": "linear", "epochs": 3, "lr": 0.01, "batch-size": 8, "seed": 5, "workers": 0, "progress": False,
    }))
    out = tmp_path / "run"
    rc, _, err = _run_cli(["train", "-c", config, "--out", out, "--epochs", "1", "--lr", "0.02"], capsys)
    assert rc == 0, err
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert (args["epochs"], args["lr"]) == (1, 0.02)  # flags
    assert (args["method"], args["batch_size"], args["seed"], args["img_size"]) == ("linear", 8, 5, 32)  # YAML
    assert args["model_kwargs"]["depth"] == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


# ---------------------------------------------------------------- bad inputs

@pytest.fixture
def data(tiny_vtab, tmp_path) -> Path:
    """A private copy of tiny_vtab to break."""
    shutil.copytree(tiny_vtab, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def fails(tiny_vit_args, tmp_path, capsys):
    """fails(*flags, data=...) -> the error message of a `pear train` that must exit 2
    with one `pear: error:` message and no traceback."""
    def run(*flags, data, out=None):
        argv = ["train", "--data", data, "--task", "toy", "--out", out or tmp_path / "run", *tiny_vit_args,
                "--method", "linear", "--epochs", "1", "--workers", "0", "--no-progress", *flags]
        rc, _, err = _run_cli(argv, capsys)
        assert rc == 2 and err.startswith("pear: error: ") and "Traceback" not in err, err
        return err
    return run


def _append(path: Path, line: str) -> int:
    """Append a list line; returns its line number."""
    text = path.read_text()
    path.write_text(text + line + "\n")
    return text.count("\n") + 1


def test_missing_data_root(fails, tmp_path):
    err = fails(data=tmp_path / "nowhere")
    assert f"data root {tmp_path / 'nowhere'} does not exist" in err


def test_task_folder_without_its_list_files(fails, data):
    (data / "toy" / "test.txt").unlink()
    assert f"task folder {data / 'toy'} has no test.txt" in fails(data=data)


def test_list_line_with_a_missing_image(fails, data):
    line = _append(data / "toy" / "test.txt", "images/test/999999.png 1")
    err = fails(data=data)
    assert f"{data / 'toy' / 'test.txt'}:{line}:" in err and "999999.png" in err and "does not exist" in err


@pytest.mark.parametrize("label", ["3", "-1"])
def test_label_outside_the_classes(fails, data, label):
    (data / "toy" / "classes.txt").write_text("red\ngreen\nblue\n")
    line = _append(data / "toy" / "train800val200.txt", f"images/train800/000000.png {label}")
    err = fails(data=data)
    assert f"train800val200.txt:{line}: label {label} is out of range; expected a label in [0, 3)" in err


def test_a_huge_label_without_class_names(fails, data):
    _append(data / "toy" / "test.txt", "images/test/000000.png 99999999999")
    err = fails(data=data)
    assert "largest label, 99999999999" in err and "classes.txt" in err


@pytest.mark.parametrize("workers", ["0", "2"])
def test_unreadable_image(fails, data, workers):
    bad = data / "toy" / "images" / "test" / "000007.png"
    bad.write_bytes(b"\x89PNG but not really")
    err = fails("--workers", workers, data=data)
    assert f"cannot read image {bad}" in err and err.count("\n") == 1


@pytest.mark.parametrize("change", [{"depth": 3}, {"embed_dim": 48, "num_heads": 3}])
def test_weights_that_do_not_fit_the_backbone(fails, tiny_vtab, tmp_path, change):
    kwargs = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, **change}
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, **kwargs)
    weights = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    err = fails("--weights", weights, data=tiny_vtab)
    assert str(weights) in err
    if "depth" in change:
        assert "unexpected" in err and "blocks.2." in err
    else:
        assert "file (48" in err and "model (32" in err


def test_existing_run_folder_needs_overwrite(fails, tiny_vtab, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = fails(data=tiny_vtab, out=out)
    assert f"run folder {out} already exists" in err and "--overwrite" in err and "--resume" in err
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("flags, needle", [
    (["--method", "pear", "--epochs", "2", "--prune-ratio", "1.5"], "1.5"),
    (["--method", "pear", "--epochs", "2", "--prune-ratio", "-0.1"], "-0.1"),
    (["--method", "pear", "--epochs", "2", "--share", "everything"], "'everything'"),
    (["--method", "bogus"], "--method 'bogus' is unknown"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--model-kwargs", "{depth: 2}"], "--model-kwargs '{depth: 2}' is not valid JSON"),
    (["--model-kwargs", "[2]"], "--model-kwargs '[2]' must be a JSON object"),
    (["--model-kwargs", '{"no_such_argument": 1}'], "no_such_argument"),
])
def test_invalid_options(fails, tiny_vtab, flags, needle):
    assert needle in fails(*flags, data=tiny_vtab)


def test_yaml_model_kwargs_that_are_not_a_mapping(tiny_vtab, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model_kwargs: [1, 2]\n")
    rc, _, err = _run_cli(["train", "-c", config, "--data", tiny_vtab, "--task", "toy", "--out", tmp_path / "run",
                           "--backbone", "vit_tiny_patch16_224", "--method", "linear"], capsys)
    assert rc == 2 and err == "pear: error: --model-kwargs must be a mapping, got [1, 2] (list)\n"


def test_every_pear_option_is_a_train_flag(tmp_path):
    from pear.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--task", "t", "--out", "o", "--act", "gelu",
                                      "--blocks", "0,1", "--sublayers", "mlp", "--target", "attn", "--init", "random",
                                      "--share", "matched", "--rank", "4"])
    pear = _train_config(args).pear
    assert (pear.act, pear.blocks, pear.sublayers, pear.target, pear.init, pear.share, pear.rank) == (
        "gelu", (0, 1), ("mlp",), "attn", "random", "matched", 4)
    config = tmp_path / "c.yaml"
    config.write_text("data: d\ntask: t\nout: o\npear: {act: identity, blocks: [1, 2]}\n")
    pear = _train_config(build_parser().parse_args(["train", "-c", str(config), "--scale", "0.5"])).pear
    assert (pear.act, pear.blocks, pear.scale) == ("identity", (1, 2), 0.5)


# ---------------------------------------------------------------- help, version, share policy spelling

def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_option_of_every_subcommand_has_help():
    import argparse

    from pear.cli import build_parser

    missing = [f"pear {name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in _subparsers(build_parser()) for a in sub._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not (a.help or "").strip()]
    assert missing == []


def test_version(capsys):
    import pear

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"pear {pear.__version__}"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_texts_say_what_the_code_does(capsys):
    top = _help([], capsys)
    assert "EfficientNet" not in top and "pear_vit_tiny6_patch4_32" in top
    train = _help(["train"], capsys)
    assert "L-BFGS" in train and "Adam steps" not in train
    assert "(default matched)" in train and "(default rank)" not in train
    assert "peft-lora-eq" in _help(["suite"], capsys)


def test_suite_help_lists_the_registered_methods_and_presets(capsys):
    from pear.harness.suites.grammar import grammar
    from pear.harness.suites.presets import PRESETS

    suite = _help(["suite"], capsys).replace("- ", "-")  # argparse wraps at the hyphens of pear-share-...
    assert all(form in suite for form in grammar())
    assert all(f"{name}: " in suite for name in PRESETS) and "batch-size 64" in suite


def test_the_matched_share_policy_is_written_matched_and_rank_still_reads(tmp_path):
    from pear.config import PearConfig
    from pear.harness.options import TrainConfig

    assert PearConfig().share == "matched" and PearConfig().to_dict()["share"] == "matched"
    assert PearConfig(share="rank").share == "matched"  # args.yaml and pear_config.json of earlier runs
    old = TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", "share": "rank"})
    assert old.to_dict()["pear"]["share"] == "matched"


def test_a_pear_run_logs_and_stores_the_matched_policy(runs):
    run, printed = runs["pear"]
    assert yaml.safe_load((run / "args.yaml").read_text())["pear"]["share"] == "matched"
    assert json.loads((run / "checkpoint" / "pear_config.json").read_text())["pear_config"]["share"] == "matched"
    assert json.loads((run / "plan.json").read_text())["policy"] == "matched"
    assert "(matched sharing" in (run / "train.log").read_text()


# ---------------------------------------------------------------- run folders from anywhere, and moved

def _train_relative(root: Path, tiny_vtab: Path, tiny_vit_args, monkeypatch) -> Path:
    """A 1-epoch linear run trained from `root` with --data and --out given relative, as the demo does."""
    shutil.copytree(tiny_vtab, root / "data")
    monkeypatch.chdir(root)
    assert main(["train", "--data", "data", "--task", "toy", "--out", "runs/r", *tiny_vit_args, "--method", "linear",
                 "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu"]) == 0
    return root / "runs" / "r"


def test_a_run_folder_evaluates_from_any_folder(tiny_vtab, tiny_vit_args, tmp_path, monkeypatch, capsys):
    run = _train_relative(tmp_path / "demo", tiny_vtab, tiny_vit_args, monkeypatch)
    monkeypatch.chdir(tmp_path)  # the parent folder: 'data' is not here
    rc, out, err = _run_cli(["eval", "--run", "demo/runs/r", "--device", "cpu"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["test_acc"] == result["recorded_test_acc"]
    assert Path(yaml.safe_load((run / "args.yaml").read_text())["data"]).is_absolute()


def test_a_moved_run_folder_takes_the_data_again(tiny_vtab, tiny_vit_args, tmp_path, monkeypatch, capsys):
    from pear.harness.options import TrainConfig
    from pear.harness.rundir import check_same_run
    from pear.harness.runs import load_run_config

    run = _train_relative(tmp_path / "a", tiny_vtab, tiny_vit_args, monkeypatch)
    # Another machine: the run folder and the data under other paths, the old ones gone.
    shutil.move(tmp_path / "a" / "runs" / "r", tmp_path / "moved")
    shutil.move(tmp_path / "a" / "data", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved"
    rc, out, err = _run_cli(["eval", "--run", moved, "--data", "elsewhere", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert json.loads(out)["test_acc"] == json.loads(out)["recorded_test_acc"]
    recorded = load_run_config(moved)
    check_same_run(moved, TrainConfig.from_dict({**recorded, "data": "elsewhere", "out": str(moved)}))  # --resume
    # Data whose task lists differ is not the run's data.
    test_list = tmp_path / "elsewhere" / "toy" / "test.txt"
    test_list.write_text("".join(test_list.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(Exception, match=r"--data .*elsewhere.* holds other task lists for 'toy'"):
        check_same_run(moved, TrainConfig.from_dict({**recorded, "data": "elsewhere", "out": str(moved)}))
    rc, _, err = _run_cli(["eval", "--run", moved, "--data", "elsewhere", "--device", "cpu"], capsys)
    assert rc == 2 and "holds other task lists for 'toy'" in err


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`pear suite --list | head -1`: the pipe closes under a long listing; pear stops quietly."""
    import subprocess
    import sys

    seeds = ",".join(str(i) for i in range(300))  # a listing far over a pipe's buffer
    cmd = (f"{sys.executable} -m pear suite --data {tmp_path / 'data'} --tasks fashion_mnist,sprites_loc "
           f"--seeds {seeds} --methods linear,adapter,pear,prune --out {tmp_path / 's'} --list | head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("2400 runs (indices 0-2399)")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141
