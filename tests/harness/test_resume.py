"""Crashes: a run SIGKILLed anywhere and resumed reproduces the uninterrupted run bit
for bit; a run whose loss or weights blow up, or whose disk fails, stops with a
PearError and keeps its last good state.

The reference run is a plain `python -m pear train` process. The crashing and
resuming runs are processes forked, one per run, from FORKSERVER below, which imports
torch, timm and Pear once (a fresh interpreter per run would spend most of this test's
time importing). Each fork runs `pear.cli.main(argv)`, so its files, its exit and its
SIGKILL are those of a real `pear` process. Most are killed at an exact point where the
fork patches one library function to SIGKILL itself; one is killed from here when a
log line appears. Every process runs single-threaded (OMP_NUM_THREADS=1) and so
computes the same floats.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import pear.atomic as A
import pear.checkpoint as C
from pear.atomic import recover_dir
from pear.checkpoint import read_tensor_dir
from pear.cli import main
from pear.harness import rundir
from pear.harness import train as T
from pear.harness.rundir import LOCK_FILE
from pear.harness.state import STATE_FILES, STATE_FORMAT, load_state

# 64 train800val200 images in batches of 16: 4 steps per epoch. Epochs 0-1 score the
# adapters, epoch 2 starts with the prune, epoch 3 trains the pruned model.
STEPS_PER_EPOCH = 4
RUN_ARGS = ["--method", "pear", "--epochs", "4", "--warmup-epochs", "1", "--prune-epoch", "2", "--batch-size", "16",
            "--deterministic", "--workers", "0", "--no-progress"]

# Reads one JSON request per line, {"point", "argv", "log"}; forks a child that arms
# the crash point, sends its output to "log" and runs pear; answers {"pid"} at once
# and {"status"} (an exit code, -9 for SIGKILL) when the child is gone.
FORKSERVER = r"""
import json, os, signal, sys, traceback

import pear.atomic as atomic
import pear.checkpoint as checkpoint
import pear.harness.train as train
from pear.cli import main


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point):
    name, _, n = point.partition("=")
    if name == "step":  # just before global optimisation step n (counted from 0)
        lr_factor = train.lr_factor

        def patched_lr_factor(step, total, warmup):
            if step == int(n):
                die()
            return lr_factor(step, total, warmup)

        train.lr_factor = patched_lr_factor
    elif name == "pruned":  # the plan is applied, the pruned epoch has not trained yet
        prune = train._prune

        def patched_prune(*args, **kwargs):
            prune(*args, **kwargs)
            die()

        train._prune = patched_prune
    elif name in ("tensors", "renames", "exchanged"):  # in save_state for epoch n
        save_state, saving = train.save_state, [False]

        def patched_save_state(*args, epoch, **kwargs):
            saving[0] = epoch == int(n)
            save_state(*args, epoch=epoch, **kwargs)

        train.save_state = patched_save_state
        save_file, exchange, replace = checkpoint.save_file, atomic._exchange, os.replace

        def patched_save_file(tensors, path, metadata=None):  # "tensors": half-way through the tensor file
            save_file(tensors, path, metadata=metadata)
            if saving[0] and name == "tensors":
                os.truncate(path, os.path.getsize(path) // 2)
                die()

        def patched_exchange(a, b):  # "exchanged": new state swapped in, old one not yet removed
            if saving[0] and name == "renames":
                return False  # as on a file system without renameat2
            done = exchange(a, b)
            if done and saving[0] and name == "exchanged":
                die()
            return done

        def patched_replace(src, dst):  # "renames": between the two renames of the fallback
            if saving[0] and name == "renames" and os.path.basename(src).startswith(".state.tmp-"):
                die()
            return replace(src, dst)

        checkpoint.save_file, atomic._exchange, os.replace = patched_save_file, patched_exchange, patched_replace

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            arm(req["point"])
            rc = main(req["argv"])
        except BaseException:
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    print(json.dumps({"pid": pid}), flush=True)
    print(json.dumps({"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def run_argv(tiny_vit_args):
    """argv of the crash-test run: `pear train` of the tiny ViT with method pear."""
    def argv(data: Path, out: Path, resume: bool = False) -> list[str]:
        return ["train", "--data", str(data), "--task", "toy", "--out", str(out), *tiny_vit_args, *RUN_ARGS,
                *(["--resume"] if resume else [])]
    return argv


class Forks:
    """Client of FORKSERVER: run(point, argv, kill_on=None) -> (exit status, output)."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "forkserver.py").write_text(FORKSERVER)
        self.server = subprocess.Popen([sys.executable, str(folder / "forkserver.py")], env=_env(), text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.runs = 0

    def _answer(self) -> dict:
        line = self.server.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def run(self, point: str, argv: list[str], kill_on: str | None = None) -> tuple[int, str]:
        """`kill_on`: SIGKILL the run from here when a line of its output matches."""
        self.runs += 1
        log = self.folder / f"run{self.runs}.log"
        self.server.stdin.write(json.dumps({"point": point, "argv": argv, "log": str(log)}) + "\n")
        self.server.stdin.flush()
        pid = self._answer()["pid"]
        deadline = time.monotonic() + 120
        while kill_on and time.monotonic() < deadline:
            if select.select([self.server.stdout], [], [], 0.005)[0]:
                break  # the run ended by itself: its status is waiting
            if log.is_file() and re.search(kill_on, log.read_text()):
                os.kill(pid, signal.SIGKILL)
                break
        return self._answer()["status"], log.read_text()

    def crash(self, point: str, argv: list[str], kill_on: str | None = None) -> str:
        status, out = self.run(point, argv, kill_on)
        assert status == -signal.SIGKILL, f"the crash at {point or kill_on!r} did not happen:\n{out}"
        return out

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


def _state_info(run: Path) -> dict:
    return json.loads((run / "state" / STATE_FILES[1]).read_text())


def _load_saved_state(run: Path) -> dict:
    """load_state into a freshly built model, as `--resume` does."""
    cfg = T.TrainConfig.from_dict({**yaml.safe_load((run / "args.yaml").read_text()), "resume": False})
    model, _, _ = T.build(cfg, 3, torch.device("cpu"))
    tracker = T.ImportanceTracker(model)
    try:
        return load_state(run / "state", model, T.make_optimizer(model, cfg.lr, cfg.wd), tracker, torch.device("cpu"))
    finally:
        tracker.close()


def _can_exchange(folder: Path) -> bool:
    a, b = folder / "exchange-a", folder / "exchange-b"
    a.mkdir()
    b.mkdir()
    try:
        return A._exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def _leftovers(run: Path) -> list[str]:
    """Hidden leftovers of interrupted writes (the run's lock file is not one)."""
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE)


def test_runs_killed_anywhere_and_resumed_match_the_uninterrupted_run_bit_for_bit(tmp_path, vtab_factory,
                                                                                  run_argv):
    data = tmp_path / "data"
    vtab_factory(data, train=48, val=16, test=40)
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = subprocess.Popen([sys.executable, "-m", "pear", *run_argv(data, ref)], env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    forks = Forks(tmp_path)
    try:
        # Before pruning: mid-epoch 1, while the tracker is scoring.
        forks.crash(f"step={STEPS_PER_EPOCH + 2}", run_argv(data, run))
        assert _state_info(run)["epoch"] == 0

        # The pruning epoch: plan applied, nothing trained after it. The resume must
        # re-make the same plan from the saved importance sums.
        forks.crash("pruned", run_argv(data, run, resume=True))
        info = _state_info(run)
        assert info["epoch"] == 1 and info["plan"] is None
        assert info["tracker"]["steps"] == 2 * STEPS_PER_EPOCH

        # After pruning, killed from outside when the end of epoch 3 is logged (its
        # state may or may not be written yet: either is a valid crash).
        forks.crash("", run_argv(data, run, resume=True), kill_on=r"epoch 3/4")
        assert _state_info(run)["epoch"] in (1, 2)

        # Inside save_state, half-way through the tensor file: the previous state is
        # intact, loadable, and the only thing a resume reads.
        forks.crash("tensors=3", run_argv(data, run, resume=True))
        info = _state_info(run)
        assert info["epoch"] == 2 and info["plan"] is not None
        read_tensor_dir(run / "state", STATE_FORMAT, *STATE_FILES)
        assert _load_saved_state(run)["epoch"] == 2
        assert any(name.startswith(".state.tmp-") for name in _leftovers(run))

        # Between the two renames that replace `state` where the file system cannot
        # swap folders atomically: `state` is moved aside, the new one not yet in
        # place. recover_dir (run by --resume) puts the previous one back.
        forks.crash("renames=3", run_argv(data, run, resume=True))
        assert not (run / "state").exists()
        assert any(name.startswith(".state.old-") for name in _leftovers(run))
        copy = tmp_path / "copy"
        shutil.copytree(run, copy, symlinks=True)
        recover_dir(copy / "state")
        assert _load_saved_state(copy)["epoch"] == 2
        assert _leftovers(copy) == []

        resumed_at = 3
        if _can_exchange(tmp_path):
            # Right after the atomic swap: the new state is complete, the previous
            # one (in the temporary folder) not yet removed.
            out = forks.crash("exchanged=3", run_argv(data, run, resume=True))
            assert f"at epoch 3 (step {3 * STEPS_PER_EPOCH})" in out  # it found the recovered state
            assert _state_info(run)["epoch"] == 3
            assert any(name.startswith(".state.tmp-") for name in _leftovers(run))
            resumed_at = 4

        status, out = forks.run("", run_argv(data, run, resume=True))
        assert status == 0, out
        assert f"at epoch {resumed_at} (step {resumed_at * STEPS_PER_EPOCH})" in out
        out, _ = reference.communicate(timeout=120)
        assert reference.returncode == 0, out
    finally:
        reference.kill()
        forks.close()

    assert _leftovers(run) == []
    assert json.loads((run / "plan.json").read_text()) == json.loads((ref / "plan.json").read_text())
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run, ref))
    for key in ("test_acc", "plan_digest", "trainable_params", "checkpoint_file_bytes"):
        assert got[key] == want[key], key
    history, ref_history = (json.loads((d / "history.json").read_text()) for d in (run, ref))
    timings = ("images_per_second", "seconds")
    assert [{k: v for k, v in r.items() if k not in timings} for r in history] == \
           [{k: v for k, v in r.items() if k not in timings} for r in ref_history]
    # Throughput covers all epochs, not only those of the last process.
    assert got["train_seconds"] == sum(r["seconds"] for r in history)
    assert got["images_per_second"] * got["train_seconds"] == pytest.approx(4 * 64)
    a, b = (load_file(d / "checkpoint" / "adapters.safetensors") for d in (run, ref))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].view(torch.uint8).equal(b[k].view(torch.uint8)), k
    for name in ("adapters.safetensors", "pear_config.json"):
        assert (run / "checkpoint" / name).read_bytes() == (ref / "checkpoint" / name).read_bytes(), name


# ---------------------------------------------------------------- in-process failures

@pytest.fixture
def pear_train(tiny_vit_args):
    """pear_train(data, out, *flags) -> exit code of an in-process 3-epoch pear run."""
    def run(data: Path, out: Path, *extra: str) -> int:
        return main(["train", "--data", str(data), "--task", "toy", "--out", str(out), *tiny_vit_args,
                     "--method", "pear", "--epochs", "3", "--batch-size", "16", "--workers", "0", "--no-progress",
                     *extra])
    return run


def _finite_state(run: Path) -> int:
    info, tensors = read_tensor_dir(run / "state", STATE_FORMAT, *STATE_FILES)
    bad = [k for k, t in tensors.items() if k.startswith(("model.", "optim.")) and not torch.isfinite(t).all()]
    assert not bad, bad
    return _load_saved_state(run)["epoch"]


def test_huge_lr_stops_at_the_first_bad_step(tiny_vtab, tmp_path, capsys, pear_train):
    assert pear_train(tiny_vtab, tmp_path / "run", "--lr", "1e30") == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"pear: error: loss became (nan|inf|-inf) at epoch 1, step \d+ \(global step \d+\); "
                        r"stopped\. No state was saved yet \(.*\); try a lower --lr\n", err), err
    assert not (tmp_path / "run" / "state").exists()


def test_loss_blowing_up_later_keeps_the_last_good_state(tiny_vtab, tmp_path, capsys, pear_train, monkeypatch):
    # A huge learning rate from epoch 2 on (40 images, batches of 16: 3 steps per epoch).
    lr_factor = T.lr_factor
    monkeypatch.setattr(T, "lr_factor", lambda step, total, warmup: 1e30 if step >= 3 else lr_factor(step, total,
                                                                                                      warmup))
    run = tmp_path / "run"
    assert pear_train(tiny_vtab, run) == 2
    err = capsys.readouterr().err
    assert re.search(r"loss became (nan|inf|-inf) at epoch 2, step \d+ \(global step \d+\); stopped\. The last "
                     rf"good state \(end of epoch 1\) is kept in {re.escape(str(run))}/state", err), err
    assert "Traceback" not in err
    assert _finite_state(run) == 0


def test_weights_blowing_up_at_the_end_of_an_epoch_are_not_saved(tiny_vtab, tmp_path, capsys, pear_train, monkeypatch):
    # The last step of epoch 2 (global step 5) makes every weight NaN while its loss,
    # computed before the step, is still finite.
    lr_factor = T.lr_factor
    monkeypatch.setattr(T, "lr_factor", lambda step, total, warmup: float("nan") if step == 5 else lr_factor(
        step, total, warmup))
    run = tmp_path / "run"
    assert pear_train(tiny_vtab, run) == 2
    err = capsys.readouterr().err
    assert re.search(r"parameter '.+' became non-finite during epoch 2 \(the loss was still finite\); stopped\. "
                     r"The last good state \(end of epoch 1\)", err), err
    assert _finite_state(run) == 0


@pytest.mark.parametrize("fails", ["write", "rename"])
def test_disk_full_while_saving_state_keeps_the_previous_state(tiny_vtab, tmp_path, capsys, pear_train, monkeypatch,
                                                               fails):
    saves = []
    if fails == "write":
        save_file = C.save_file

        def flaky(tensors, path, metadata=None):
            if Path(path).name == STATE_FILES[0]:
                saves.append(path)
                if len(saves) == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            save_file(tensors, path, metadata=metadata)

        monkeypatch.setattr(C, "save_file", flaky)
    else:
        monkeypatch.setattr(A, "_exchange", lambda a, b: False)  # the two-rename path
        replace = os.replace

        def flaky(src, dst):
            if Path(src).name.startswith(".state.tmp-"):
                saves.append(src)
                if len(saves) == 2:  # `state` is already moved aside at this point
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return replace(src, dst)

        monkeypatch.setattr(os, "replace", flaky)
    run = tmp_path / "run"
    assert pear_train(tiny_vtab, run) == 2
    err = capsys.readouterr().err
    assert f"pear: error: could not write {run / 'state'}: No space left on device. The previous complete state" in err
    monkeypatch.undo()
    assert _finite_state(run) == 0
    assert _leftovers(run) == []


def test_disk_full_while_saving_the_checkpoint_keeps_the_previous_one(tiny_vtab, tmp_path, capsys, pear_train,
                                                                      monkeypatch):
    run = tmp_path / "run"
    assert pear_train(tiny_vtab, run) == 0
    before = {f.name: f.read_bytes() for f in (run / "checkpoint").iterdir()}
    save_file = C.save_file

    def full(tensors, path, metadata=None):
        if Path(path).parent.name.startswith(".checkpoint.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(C, "save_file", full)
    assert pear_train(tiny_vtab, run, "--resume") == 2  # a finished run: re-evaluates, re-writes the checkpoint
    err = capsys.readouterr().err
    assert f"pear: error: could not write {run / 'checkpoint'}: No space left on device" in err
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in (run / "checkpoint").iterdir()} == before
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0


@pytest.mark.parametrize("name", ["args.yaml", "metrics.json"])
def test_disk_full_while_writing_run_files_is_a_clear_error(tiny_vtab, tmp_path, capsys, pear_train, monkeypatch,
                                                            name):
    atomic_write_text = rundir.atomic_write_text

    def full(path, text):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        atomic_write_text(path, text)

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    assert pear_train(tiny_vtab, tmp_path / "run", "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert err == f"pear: error: could not write {tmp_path / 'run' / name}: No space left on device. " \
                  f"The previous complete {name} (if any) is intact.\n"


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_run_folder_that_cannot_be_a_folder(tiny_vtab, tmp_path, capsys, pear_train, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "run"
    assert pear_train(tiny_vtab, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("pear: error: ") and str(out) in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_a_fresh_run_with_resume_says_it_starts_fresh(tiny_vtab, tmp_path, tiny_vit_args):
    """`pear suite --index` always trains with --resume; a first start is not a failed resume."""
    assert main(["train", "--data", str(tiny_vtab), "--task", "toy", "--out", str(tmp_path / "run"), *tiny_vit_args,
                 "--method", "linear", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress",
                 "--resume"]) == 0
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "no saved state" not in log_text and "starting from scratch" not in log_text
    assert "fresh start at epoch 1 (nothing saved to resume from yet)" in log_text
