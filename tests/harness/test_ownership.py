"""Issue 12: nothing a user owns is ever deleted, contradicted or read by mistake.

Each case ends as one `pear: error:` line with exit code 2, no traceback, and what the
user had (a finished run, the data, their own files) is byte for byte as before.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pear
from pear.checkpoint import CONFIG_FILE, seal
from pear.cli import main
from pear.errors import PearError
from pear.harness.rundir import LOCK_FILE, lock_folder, unlock
from pear.harness.state import STATE_FILES


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _refused(argv, capsys) -> str:
    rc, err = _cli(argv, capsys)
    assert rc == 2 and err.startswith("pear: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


@pytest.fixture
def finished(tiny_run, tmp_path):
    """(a private copy of the session's finished 2-epoch pear run, its data root, its argv)."""
    run = tmp_path / "runs" / "finished"
    shutil.copytree(tiny_run.run, run)
    args = yaml.safe_load((run / "args.yaml").read_text())
    argv = ["train", "--data", tiny_run.data, "--task", "toy", "--out", run, "--backbone", args["backbone"],
            "--model-kwargs", json.dumps(args["model_kwargs"]), "--img-size", "32", "--epochs", "2",
            "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu"]
    return run, tiny_run.data, argv


def _with(argv: list, **flags) -> list:
    """argv with each --flag's value replaced (or added); value None drops the flag."""
    argv = list(argv)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
        if value is not None:
            argv += [flag, value] if value is not True else [flag]
    return argv


# ---------------------------------------------------------------- 1. --overwrite never deletes first

def test_overwrite_with_a_typo_in_the_task_keeps_the_finished_run(finished, capsys):
    run, _, argv = finished
    before = _snapshot(run)
    err = _refused(_with(argv, task="tinyy", overwrite=True), capsys)
    assert "tinyy" in err
    assert _snapshot(run) == before


@pytest.mark.parametrize("where", ["the data root", "a parent of it", "inside it"])
def test_a_run_folder_is_never_the_data_root_or_near_it(finished, tmp_path, capsys, where):
    _, data, argv = finished
    copy_root = tmp_path / "data"
    shutil.copytree(data, copy_root)
    out = {"the data root": copy_root, "a parent of it": tmp_path, "inside it": copy_root / "toy" / "run"}[where]
    before = _snapshot(copy_root)
    err = _refused(_with(argv, data=copy_root, out=out, overwrite=True), capsys)
    assert "outside the data root" in err
    assert _snapshot(copy_root) == before


def test_overwrite_refuses_a_folder_pear_did_not_make(finished, tmp_path, capsys):
    _, _, argv = finished
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "args.yaml").write_text("looks like a run\n")
    err = _refused(_with(argv, out=mine, overwrite=True), capsys)
    assert "thesis.tex" in err and str(mine) in err
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_overwrite_that_fails_after_validation_keeps_the_old_run(finished, capsys, monkeypatch):
    """The new run trains beside the old one and replaces it only when complete."""
    from pear.harness import train as T

    run, _, argv = finished
    before = _snapshot(run)

    def broken(*a, **k):
        raise PearError("disk on fire")

    monkeypatch.setattr(T, "write_results", broken)
    assert "disk on fire" in _refused(_with(argv, overwrite=True), capsys)
    assert _snapshot(run) == before
    assert not list(run.parent.glob(".finished.new-*"))
    monkeypatch.undo()
    rc, err = _cli(_with(argv, overwrite=True, seed="1"), capsys)
    assert rc == 0, err
    assert yaml.safe_load((run / "args.yaml").read_text())["seed"] == 1
    assert not list(run.parent.glob(".finished.*"))


def test_yaml_booleans_must_be_booleans(finished, tmp_path, capsys):
    run, _, argv = finished
    before = _snapshot(run)
    config = tmp_path / "c.yaml"
    config.write_text('overwrite: "no"\n')
    err = _refused(["train", "-c", config, *_with(argv[1:], overwrite=None)], capsys)
    assert "--overwrite must be true or false" in err and "'no'" in err
    assert _snapshot(run) == before


def test_save_never_replaces_user_files(model_factory, tmp_path):
    model = model_factory("vit")
    pear.attach(model)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(PearError, match="notes.txt"):
        pear.save(model, folder)
    assert (folder / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(PearError, match="is not a folder"):
        pear.save(model, a_file)
    assert a_file.read_text() == "mine"
    pear.save(model, tmp_path / "ckpt")
    pear.save(model, tmp_path / "ckpt")  # its own checkpoint is replaced


def test_data_build_overwrite_refuses_a_folder_it_did_not_build(tmp_path, capsys):
    (tmp_path / "sprites_loc").mkdir()
    (tmp_path / "sprites_loc" / "photo.jpg").write_bytes(b"mine")
    err = _refused(["data", "build", "sprites_loc", "--out", tmp_path, "--overwrite"], capsys)
    assert "photo.jpg" in err
    assert (tmp_path / "sprites_loc" / "photo.jpg").read_bytes() == b"mine"


# ---------------------------------------------------------------- 2. --resume resumes the same run

@pytest.mark.parametrize("flags, named", [
    ({"prune_ratio": "0.25"}, ["--prune-ratio 0.25 (the run has 0.5)"]),
    ({"method": "adapter", "seed": "3"}, ["--method 'adapter' (the run has 'pear')", "--seed 3 (the run has 0)"]),
])
def test_resume_with_other_options_is_refused(finished, capsys, flags, named):
    run, _, argv = finished
    before = _snapshot(run)
    err = _refused(_with(argv, resume=True, **flags), capsys)
    assert all(n in err for n in named), err
    assert _snapshot(run) == before


def test_resume_with_overwrite_is_refused(finished, capsys):
    run, _, argv = finished
    before = _snapshot(run)
    assert "pass one of them" in _refused(_with(argv, resume=True, overwrite=True), capsys)
    assert _snapshot(run) == before


def test_resume_may_change_how_it_runs(finished, capsys):
    run, _, argv = finished
    rc, err = _cli(_with(argv, resume=True, workers="1", cache_gb="0"), capsys)
    assert rc == 0, err


# ---------------------------------------------------------------- 3. one writer per run folder

def test_a_second_writer_is_refused_naming_the_holder(finished, capsys):
    run, _, argv = finished
    fd = lock_folder(run, "run folder")
    try:
        err = _refused(_with(argv, resume=True), capsys)
    finally:
        unlock(fd)
    assert f"in use by another Pear process (PID {os.getpid()})" in err


def test_a_killed_writers_lock_never_blocks_a_resume(finished, capsys):
    run, _, argv = finished
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from pear.harness.rundir import lock_folder; "
                               f"lock_folder(__import__('pathlib').Path({str(run)!r}), 'run folder'); "
                               "print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert f"PID {holder.pid}" in _refused(_with(argv, resume=True), capsys)
    holder.send_signal(signal.SIGKILL)
    holder.communicate()  # reaps it and closes its pipes
    assert (run / LOCK_FILE).read_text().strip() == str(holder.pid)  # the stale lock file is still there
    rc, err = _cli(_with(argv, resume=True), capsys)
    assert rc == 0, err


@pytest.fixture
def suite_argv(tiny_vtab, tmp_path):
    """`pear suite` of two tiny linear runs into tmp_path/suite; its train is faked where a test says so."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"backbone": "vit_tiny_patch16_224", "img_size": 32, "epochs": 1,
                                      "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
                                      "batch_size": 20, "workers": 0, "device": "cpu"}))
    return ["suite", "--data", tiny_vtab, "--tasks", "toy", "--methods", "linear", "--seeds", "0,1",
            "--out", tmp_path / "suite", "-c", config]


def _fake_train(trained: list, during=lambda cfg: None):
    def train(cfg):
        during(cfg)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "metrics.json").write_text(json.dumps({"task": cfg.task, "method": cfg.method,
                                                                 "seed": cfg.seed, "test_acc": 50.0}))
        trained.append(cfg.seed)
    return train


def test_a_whole_suite_holds_its_folder_alone(suite_argv, tmp_path, capsys, monkeypatch):
    from pear.harness import suite

    out, seen, inside = tmp_path / "suite", [], []

    def during(cfg):  # while the suite trains: a second suite and an --index are refused
        if inside:  # not again inside a second suite that was let in
            return
        inside.append(cfg.seed)
        for argv in (suite_argv, [*suite_argv, "--index", "1"]):
            rc = main([str(a) for a in argv])
            seen.append((rc, capsys.readouterr().err))
        with pytest.raises(PearError, match=f"PID {os.getpid()}"):
            lock_folder(out, "suite folder", shared=True)

    trained = []
    monkeypatch.setattr(suite, "train", _fake_train(trained, during))
    rc, err = _cli(suite_argv, capsys)
    assert rc == 0, err
    assert trained == [0, 1]
    assert all(rc == 2 and f"suite folder {out} is in use by another Pear process (PID {os.getpid()})" in e
               and e.count("\n") == 1 for rc, e in seen), seen
    unlock(lock_folder(out, "suite folder"))  # released when the suite ends


def test_index_runs_share_the_suite_folder(suite_argv, tmp_path, capsys, monkeypatch):
    """Several `--index` processes on one suite folder at once are the cluster's normal case; only a whole
    suite is refused beside them (each run folder still has its own lock, held by train)."""
    from pear.harness import suite

    out, trained = tmp_path / "suite", []
    monkeypatch.setattr(suite, "train", _fake_train(trained))
    out.mkdir()
    other_index = lock_folder(out, "suite folder", shared=True)
    try:
        rc, err = _cli([*suite_argv, "--index", "1"], capsys)
        assert rc == 0 and trained == [1], err
        err = _refused(suite_argv, capsys)
        assert f"suite folder {out} is in use by other Pear processes that share it (PID" in err
    finally:
        unlock(other_index)
    assert trained == [1]


# ---------------------------------------------------------------- 4. the checkpoint's JSON is sealed

def _edit(ckpt: Path, change, reseal: bool = False) -> None:
    info = json.loads((ckpt / CONFIG_FILE).read_text())
    change(info)
    (ckpt / CONFIG_FILE).write_text(json.dumps(seal(info) if reseal else info))


def _share(info, pairs: dict[str, str]):
    """Each position in `pairs` shares the given one, in both places that say so."""
    for p in info["positions"]:
        if p["name"] in pairs:
            p["source"], p["pruned"] = pairs[p["name"]], True
    info["share_map"].update(pairs)


def _repoint(info):
    """The tiny run's blocks.1.attn shares blocks.1.mlp; point it at blocks.0.attn."""
    _share(info, {"blocks.1.attn": "blocks.0.attn"})


def _orphan(info):
    """blocks.1.mlp stops owning its adapter, whose tensors stay in the file."""
    _share(info, {"blocks.1.attn": "blocks.0.attn", "blocks.1.mlp": "blocks.0.attn"})


@pytest.fixture
def ckpt(finished):
    return finished[0] / "checkpoint"


def test_an_edited_share_map_is_refused_naming_the_fields(finished, ckpt, capsys):
    _edit(ckpt, _repoint)
    err = _refused(["eval", "--run", finished[0], "--device", "cpu"], capsys)
    assert "was edited after it was saved" in err and "'positions'" in err and "'share_map'" in err


@pytest.mark.parametrize("change, message", [
    (_orphan, "stored for a position that owns no adapter"),
    (lambda i: i["share_map"].update({"blocks.1.mlp": "blocks.0.attn"}), "'share_map' disagrees"),
    (lambda i: i["positions"][0].update(pruned=True), "is pruned but its source is"),
])
def test_consistency_rules_hold_even_for_a_resealed_json(ckpt, model_factory, change, message):
    """A tool that recomputes the hashes still cannot make an inconsistent checkpoint load."""
    _edit(ckpt, change, reseal=True)
    with pytest.raises(PearError, match=message):
        pear.checkpoint.read_checkpoint(ckpt)


def test_nan_in_the_json_is_refused(ckpt):
    text = (ckpt / CONFIG_FILE).read_text()
    (ckpt / CONFIG_FILE).write_text(text.replace('"importance": ', '"importance": NaN, "x": ', 1))
    with pytest.raises(PearError, match="NaN is not a JSON number"):
        pear.checkpoint.read_checkpoint(ckpt)


# ---------------------------------------------------------------- 5. reads stay inside the data root

@pytest.fixture
def data(tiny_vtab, tmp_path):
    shutil.copytree(tiny_vtab, tmp_path / "data")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-LINE\n" * 3)
    return tmp_path / "data", secret


@pytest.mark.parametrize("name", ["classes.txt", "test.txt"])
def test_lists_that_link_outside_the_task_are_never_read(data, tiny_vit_args, tmp_path, capsys, name):
    root, secret = data
    target = root / "toy" / name
    target.unlink(missing_ok=True)
    target.symlink_to(secret)
    err = _refused(["train", "--data", root, "--task", "toy", "--out", tmp_path / "run", *tiny_vit_args,
                    "--method", "linear", "--epochs", "1", "--workers", "0", "--no-progress"], capsys)
    assert "outside the task folder" in err and "SECRET" not in err
    assert not (tmp_path / "run").exists()


def test_error_messages_quote_a_short_snippet(data, tiny_vit_args, tmp_path, capsys):
    root, _ = data
    with open(root / "toy" / "test.txt", "a") as fh:
        fh.write("a b c " + "x" * 5000 + "\n")
    err = _refused(["train", "--data", root, "--task", "toy", "--out", tmp_path / "run", *tiny_vit_args,
                    "--method", "linear", "--epochs", "1", "--workers", "0", "--no-progress"], capsys)
    assert "field(s)" in err and len(err) < 400


# ---------------------------------------------------------------- 6. messages, not tracebacks

@pytest.fixture
def train_argv(tiny_vtab, tiny_vit_args, tmp_path):
    return ["train", "--data", tiny_vtab, "--task", "toy", "--out", tmp_path / "run", *tiny_vit_args,
            "--method", "linear", "--epochs", "1", "--workers", "0", "--no-progress"]


@pytest.mark.parametrize("flags, needle", [
    (["--device", "tpu"], "--device 'tpu' is not a device"),
    (["--workers", "-1"], "--workers must be 0"),
    (["--img-size", "7"], "--img-size 7 is smaller than the patch size 8"),
    (["--method", "adapter", "--rank", "1000000000"], "adapter rank 1000000000 (--rank, PearConfig.rank) would give"),
    (["--scale", "0"], "--scale must be a finite number > 0, got 0.0"),
    (["--scale", "-1"], "--scale must be a finite number > 0"),
    (["--cache-gb", "nan"], "--cache-gb must be a finite number >= 0"),
    (["--cache-gb", "-1"], "--cache-gb must be a finite number >= 0"),
    (["--method", "pear", "--prune-ratio", "2"], "--prune-ratio must be in [0, 1)"),
    (["--method", "pear", "--epochs", "1"], "needs --epochs 2 or more; got --epochs 1"),
])
def test_bad_options_are_one_message(train_argv, tmp_path, capsys, flags, needle):
    err = _refused([*train_argv, *flags], capsys)
    assert needle in err, err
    assert not (tmp_path / "run").exists()  # 7: a run that fails validation leaves no folder


@pytest.mark.parametrize("command", [["eval", "--run", "R"], ["predict", "--ckpt", "R/checkpoint", "x.png"]])
def test_eval_and_predict_refuse_an_unknown_device(tiny_run, capsys, command):
    argv = [str(tiny_run.run if a == "R" else tiny_run.run / "checkpoint" if a == "R/checkpoint" else a)
            for a in command]
    assert "--device 'tpu' is not a device" in _refused([*argv, "--device", "tpu"], capsys)


@pytest.mark.parametrize("flags, needle", [
    (["--seeds", "a,b"], "--seeds must be comma-separated integers, e.g. 0,1,2; got 'a,b'"),
    (["--devices", "tpu:0"], "--devices 'tpu:0' is not a device this Pear runs on"),
    (["--devices", "cpu,tpu:0,tpu:1"], "--devices 'tpu:0' is not a device this Pear runs on"),
    (["--out", "FILE"], "suite folder --out FILE exists and is not a folder"),
    (["--out", "FILE", "--aggregate"], "suite folder --out FILE exists and is not a folder"),
    (["--out", "DATA/suite"], "a suite folder must lie outside the data root"),
])
def test_bad_suite_options_are_one_message_checked_up_front(suite_argv, tiny_vtab, tmp_path, capsys, monkeypatch,
                                                             flags, needle):
    from pear.harness import suite

    monkeypatch.setattr(suite, "train", lambda cfg: pytest.fail("trained despite a bad suite"))
    monkeypatch.setattr(suite, "_spawn", lambda *a: pytest.fail("started a run despite a bad suite"))
    (tmp_path / "FILE").write_text("mine\n")
    flags = [str(tmp_path / "FILE") if f == "FILE" else f"{tiny_vtab}/suite" if f == "DATA/suite" else f
             for f in flags]
    err = _refused([*(_with(suite_argv, out=None) if "--out" in flags else suite_argv), *flags], capsys)
    assert needle.replace("FILE", str(tmp_path / "FILE")) in err, err
    assert (tmp_path / "FILE").read_text() == "mine\n"
    assert not (tmp_path / "suite").exists() and not (tiny_vtab / "suite").exists()


def test_a_text_file_named_pth(train_argv, tmp_path, capsys):
    weights = tmp_path / "w.pth"
    weights.write_text("this is not a checkpoint\n")
    assert "is not a PyTorch checkpoint" in _refused([*train_argv, "--weights", weights], capsys)


@pytest.mark.parametrize("line, needle", [
    ('amp: "yes"', "--amp must be true or false or unset, got 'yes'"),
    ('cache_gb: "big"', "--cache-gb must be a number, got 'big'"),
    ("data: [a, b]", "--data must be a string, got ['a', 'b']"),
    ("device: 5", "--device must be a string, got 5"),
    ("seed: 1.5", "--seed must be an integer, got 1.5"),
    ('workers: "2"', "--workers must be an integer, got '2'"),
    ('lr: "0.01"', "--lr must be a number, got '0.01'"),
])
def test_yaml_with_wrong_types(train_argv, tmp_path, capsys, line, needle):
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    argv = _with(train_argv, **{line.split(":")[0]: None})  # the flag would override the YAML value
    assert needle in _refused([argv[0], "-c", config, *argv[1:]], capsys)


def test_yaml_reads_exponents_as_numbers(tmp_path):
    from pear.harness.files import read_mapping

    (tmp_path / "c.yaml").write_text("lr: 1e-3\n")
    assert read_mapping(tmp_path / "c.yaml") == {"lr": 0.001}


@pytest.mark.parametrize("field, value, needle", [
    ("epoch", "3", "'epoch' must be a count"),
    ("history", {"a": 1}, "'history' must be a list"),
    ("best", {"epoch": "x"}, "'best' must be null or an object"),
    ("optim_state_keys", ["0"], "'optim_state_keys' must be a list of counts"),
])
def test_hand_edited_state_json(finished, capsys, field, value, needle):
    run, _, argv = finished
    path = run / "state" / STATE_FILES[1]
    info = json.loads(path.read_text())
    info[field] = value
    path.write_text(json.dumps(info))
    assert "was edited after it was saved" in _refused(_with(argv, resume=True), capsys)
    path.write_text(json.dumps(seal(info)))  # even with the hashes recomputed: the types are checked
    assert needle in _refused(_with(argv, resume=True), capsys)


# ---------------------------------------------------------------- 7. smaller

def test_a_run_that_fails_later_writes_its_error_into_train_log(finished, capsys, monkeypatch):
    from pear.harness import train as T

    run, _, argv = finished

    def broken(*a, **k):
        raise PearError("disk on fire")

    monkeypatch.setattr(T, "write_results", broken)
    _refused(_with(argv, resume=True), capsys)
    assert "error: disk on fire" in (run / "train.log").read_text()


def test_demo_epochs_zero_is_refused(tmp_path, capsys):
    assert "--epochs must be a positive integer, got 0" in _refused(
        ["demo", "--out", tmp_path / "demo", "--data", tmp_path / "nodata", "--epochs", "0"], capsys)
    assert not (tmp_path / "nodata").exists()


def test_demo_does_not_report_another_run_as_its_own(finished, tmp_path, capsys):
    run, data, _ = finished
    err = _refused(["demo", "--out", run, "--data", data], capsys)
    assert "not the demo's" in err and "--backbone" in err


def test_pear_error_is_a_value_error_and_the_library_raises_it(model_factory):
    assert issubclass(PearError, ValueError)
    with pytest.raises(PearError, match="PearConfig.rank"):
        pear.PearConfig(rank=0)
    model = model_factory("vit")
    pear.attach(model)
    with pytest.raises(PearError, match="already"):
        pear.attach(model)


def test_train_help_marks_required_flags_and_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--data DATA VTAB-format data root (required" in out
    assert "--workers WORKERS data loader worker processes (default 2)" in out
    assert "--overwrite replace an existing run folder (default off)" in out
    assert "--weights" in out and "(default none)" in out


def test_help_does_not_import_torch():
    """`pear --help` took 1.7 s, almost all of it importing torch: the CLI imports it only in the
    commands that need it, and `import pear` only when a torch-backed name is first used."""
    code = """
import sys, warnings
from pear.cli import build_parser
for argv in (["--help"], ["train", "--help"], ["suite", "--help"]):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pass
import pear
assert pear.PearConfig(rank=4).rank == 4 and issubclass(pear.PearError, ValueError)
print("torch" in sys.modules, "timm" in sys.modules, file=sys.stderr)
from pear.report import checkpoint_report  # the submodule pear.report, imported first ...
assert callable(pear.report) and pear.report.__name__ == "report"  # ... does not hide the function
assert pear.attach.__module__ == "pear.adapters" and pear.save.__module__ == "pear.checkpoint"
assert set(pear.__all__) <= set(dir(pear)) and pear.checkpoint.read_checkpoint
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert pear.plan is pear.make_plan
assert caught and caught[0].category is DeprecationWarning
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "False False", proc.stderr


# ---------------------------------------------------------------- issue 22: TensorBoard runs, lock files

def test_a_tensorboard_run_can_be_resumed_and_replaced(finished, capsys):
    run, _, argv = finished
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"")  # what a crashed --tensorboard run left
    rc, err = _cli(_with(argv, resume=True, tensorboard=True), capsys)
    assert rc == 0, err
    rc, err = _cli(_with(argv, overwrite=True, tensorboard=True), capsys)
    assert rc == 0, err
    assert any((run / "tensorboard").iterdir())


@pytest.mark.parametrize("plant", ["symlink", "hard link", "someone's file"])
def test_a_run_lock_never_writes_into_a_file_it_did_not_make(finished, tmp_path, capsys, plant):
    run, _, argv = finished
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (run / LOCK_FILE).unlink(missing_ok=True)
    if plant == "symlink":
        (run / LOCK_FILE).symlink_to(notes)
    elif plant == "hard link":
        os.link(notes, run / LOCK_FILE)
    else:
        (run / LOCK_FILE).write_text("my notes\n")
    err = _refused(_with(argv, resume=True), capsys)
    assert LOCK_FILE in err and "Pear will not" in err
    assert notes.read_text() == "my notes\n"
    if plant == "someone's file":
        assert (run / LOCK_FILE).read_text() == "my notes\n"


def test_the_suite_folder_lock_never_follows_a_symlink(suite_argv, tmp_path, capsys, monkeypatch):
    from pear.harness import suite

    trained = []
    monkeypatch.setattr(suite, "train", _fake_train(trained))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / LOCK_FILE).symlink_to(notes)
    for argv in (suite_argv, [*suite_argv, "--index", "0"]):
        err = _refused(argv, capsys)
        assert "symbolic link" in err
    assert notes.read_text() == "my notes\n" and trained == []


def test_a_missing_tensorboard_package_is_found_before_the_run_folder_exists(finished, tmp_path, capsys,
                                                                              monkeypatch, suite_argv):
    _, _, argv = finished
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "fresh"
    err = _refused(_with(argv, out=out, tensorboard=True), capsys)
    assert "--tensorboard needs the tensorboard package" in err
    assert not out.exists()
    err = _refused([*suite_argv, "--tensorboard"], capsys)
    assert "--tensorboard needs the tensorboard package" in err
    assert not (tmp_path / "suite").exists()
