"""`torchrun --nproc_per_node 2 -m pear train` on the CPU (gloo) against one process.

Both runs see the same global batches (GlobalBatches), start from the same seed and
compute the same plan, so they differ only in floating-point summation order: each
rank's forward runs on 8 or 7 images instead of 15, and each gradient is the
all-reduced sum of two partial sums instead of one sum. That is a relative difference of ~1e-7 per
step, which is what the tolerances below allow for (measured: parameters within
~5e-8, equal accuracy).

The batch size is odd (15 of tiny_vtab's 40 training images), so every global batch
splits 8 / 7 between the ranks: that exercises the loss normalisation by the global
batch size, without which (each rank averaging its own share) the two runs pruned
different adapters and their tensors differed by 0.18.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from pear.errors import PearError
from pear.harness import distributed as D
from pear.harness.rundir import prepare_run_dir
from pear.harness.train import TrainConfig
from pear.pruning import PrunePlan

BATCH = 15
TIMEOUT_S = 150


def _lines(data: Path, split: str) -> int:
    return len((data / "toy" / f"{split}.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_vtab, tiny_vit_args) -> dict:
    """The same run as one process and as two torchrun processes, started together."""
    n = _lines(tiny_vtab, "train800val200")
    # A last global batch of one image would be dropped by two ranks but not by one.
    assert n % BATCH != 1 and BATCH % 2 == 1
    root = tmp_path_factory.mktemp("ddp")
    # One thread per process: torchrun would set it anyway (with a warning), and the
    # single process then runs the same kernels.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "pear", "train", "--data", str(tiny_vtab), "--task", "toy", *tiny_vit_args, "--method", "pear",
            "--epochs", "3", "--batch-size", str(BATCH), "--lr", "0.01", "--workers", "0", "--device", "cpu",
            "--no-progress",
            # In fp32, as written: under bf16 autocast (the CPU default with AMX) each rank's half
            # batch rounds otherwise than the whole batch, far beyond these tolerances.
            "--no-amp"]
    commands = {
        "single": [sys.executable, *args, "--out", str(root / "single")],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *args,
                "--out", str(root / "ddp")],
    }
    procs = {}
    for name, cmd in commands.items():
        (root / f"cwd_{name}").mkdir()
        procs[name] = subprocess.Popen(cmd, cwd=root / f"cwd_{name}", env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out[name] = {"dir": root / name, "cwd": root / f"cwd_{name}", "stdout": stdout, "stderr": stderr,
                     "rc": p.returncode}
    for name, run in out.items():
        assert run["rc"] == 0, f"{name} run failed ({run['rc']}):\n{run['stdout']}\n{run['stderr']}"
    return out


def _json(run: dict, name: str):
    return json.loads((run["dir"] / name).read_text())


def test_prune_plan_is_identical(runs):
    one, two = _json(runs["single"], "plan.json"), _json(runs["ddp"], "plan.json")
    assert (one["pruned"], one["kept"], one["shares"]) == (two["pruned"], two["kept"], two["shares"])
    assert one["pruned"] and one["shares"]
    assert one["scores"] == pytest.approx(two["scores"], rel=1e-5)


def test_metrics_match(runs, tiny_vtab):
    one, two = _json(runs["single"], "metrics.json"), _json(runs["ddp"], "metrics.json")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["plan_digest"] == two["plan_digest"]
    assert one["trainable_params"] == two["trainable_params"]
    # Logits differ by ~1e-7 at most, so a prediction flips only for an image whose top
    # two logits are that close: allow one image, expect none.
    assert abs(one["test_acc"] - two["test_acc"]) <= 100 / _lines(tiny_vtab, "test") + 1e-9
    assert one["test_acc"] > 50  # 3 classes: the runs learned something worth comparing
    # Epoch statistics are summed over the ranks, not rank 0's half.
    h1, h2 = _json(runs["single"], "history.json"), _json(runs["ddp"], "history.json")
    assert [r["loss"] for r in h1] == pytest.approx([r["loss"] for r in h2], abs=1e-5)


def test_checkpoint_tensors_match(runs):
    one = load_file(runs["single"]["dir"] / "checkpoint" / "adapters.safetensors")
    two = load_file(runs["ddp"]["dir"] / "checkpoint" / "adapters.safetensors")
    assert sorted(one) == sorted(two)
    worst = max((one[k].double() - two[k].double()).abs().max().item() for k in one)
    assert worst < 1e-4


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_only_rank_zero_writes_and_logs(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert _tree(ddp["dir"]) == _tree(single["dir"])
    assert _tree(ddp["cwd"]) == []
    log = (ddp["dir"] / "train.log").read_text().splitlines()
    epochs = [line for line in log if " epoch " in line]
    assert len(epochs) == 3 and len(set(line.split(" ", 1)[1] for line in log)) == len(log)
    # stdout: rank 0's log lines and one metrics summary; stderr: each warning once.
    assert ddp["stdout"].count(" epoch 1/3 ") == 1
    assert ddp["stdout"].count('"test_acc"') == 1
    assert "[rank 1]" not in ddp["stdout"] + ddp["stderr"]
    assert ddp["stderr"].count("no pretrained weights") == single["stderr"].count("no pretrained weights") == 1
    assert "Traceback" not in ddp["stderr"] and "pear: error" not in ddp["stderr"]


def test_plan_checked_across_ranks_is_logged(runs):
    digest = _json(runs["ddp"], "metrics.json")["plan_digest"]
    assert f"plan {digest} checked: identical on all 2 ranks" in (runs["ddp"]["dir"] / "train.log").read_text()
    assert "checked" not in (runs["single"]["dir"] / "train.log").read_text()


# ---------------------------------------------------------------- collectives, 2 gloo processes

def _plan(pruned: str, kept: str, score: float) -> PrunePlan:
    return PrunePlan(pruned=[pruned], kept=[kept], shares={pruned: kept}, scores={pruned: score, kept: 1.0},
                     ratio=0.5, policy="rank")


def _shared_net() -> nn.Module:
    """`a` is used at two positions, as a shared adapter is after pruning."""
    torch.manual_seed(0)
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    return nn.Sequential(a, b, a)


def _collectives(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ctx = D.Context(True, rank, 2, rank, torch.device("cpu"))
    result = {}
    try:
        # Scores differing in the last bits do not matter, only the decisions do.
        result["same"] = D.check_same_plan(_plan("a", "b", 0.1 + rank * 1e-12), ctx)
        try:
            D.check_same_plan(_plan("a", "b", 0.1) if rank == 0 else _plan("b", "a", 0.1), ctx)
        except PearError as exc:
            result["error"] = str(exc)

        model = nn.Sequential(_shared_net(), nn.BatchNorm1d(3))
        with torch.no_grad():
            for t in model.state_dict().values():
                t.fill_(rank + 1)
        D.broadcast_module(model, ctx)
        result["broadcast"] = sorted({t.float().mean().item() for t in model.state_dict().values()})

        # DDP, then "pruning" (b frozen), then DDP rebuilt over what still trains.
        net = _shared_net()
        x = torch.full((2, 3), float(rank + 1))
        fwd = D.wrap_ddp(net, ctx)
        fwd(x).sum().backward()
        net[1].requires_grad_(False)
        fwd = D.wrap_ddp(net, ctx, previous=fwd)
        for _ in range(2):
            net.zero_grad(set_to_none=True)
            fwd(x).sum().backward()
        result["grad"] = net[0].weight.grad.tolist()
        result["frozen_grad"] = net[1].weight.grad is None

        taken = Path(out_dir, "taken")
        try:
            prepare_run_dir(TrainConfig(data="d", task="t", out=str(taken)), ctx)
        except PearError as exc:
            result["run_dir_error"] = str(exc)
    finally:
        # The last collective (prepare_run_dir's broadcast) is just before exit: without
        # teardown's drain, this process aborted at exit about one run in ten.
        D.teardown(ctx)
    result["initialized_after_teardown"] = dist.is_initialized()
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def collectives(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("gloo")
    (tmp / "taken").mkdir()
    (tmp / "taken" / "old.txt").write_text("an earlier run")
    mp.spawn(_collectives, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=2, join=True)
    return [json.loads((tmp / f"{r}.json").read_text()) for r in range(2)]


def test_plan_mismatch_raises_on_every_rank(collectives):
    assert collectives[0]["same"] == collectives[1]["same"] == _plan("a", "b", 0.1).digest()
    for r in collectives:
        assert "prune plans differ across ranks" in r["error"]
        assert _plan("a", "b", 0.1).digest() in r["error"] and _plan("b", "a", 0.1).digest() in r["error"]


def test_broadcast_module_copies_rank_zero(collectives):
    assert collectives[0]["broadcast"] == collectives[1]["broadcast"] == [1.0]


def test_run_folder_error_stops_every_rank_cleanly(collectives):
    """Rank 0 owns the run folder; rank 1 stops with its own one-line error rather
    than a broken-connection traceback from the next collective."""
    assert "already exists; pass --resume" in collectives[0]["run_dir_error"]
    assert collectives[1]["run_dir_error"].startswith("rank 1 stopped: rank 0 could not prepare the run folder")


def test_rebuilt_ddp_averages_shared_module_gradients(collectives):
    """After the rebuild each rank holds the mean of the two ranks' gradients of the
    module used twice, and the frozen layer has none."""
    grads = []
    for r in range(2):
        net = _shared_net()
        net[1].requires_grad_(False)
        net(torch.full((2, 3), float(r + 1))).sum().backward()
        grads.append(net[0].weight.grad)
    expected = (grads[0] + grads[1]) / 2
    for r in collectives:
        assert torch.allclose(torch.tensor(r["grad"]), expected, atol=1e-6)
        assert r["frozen_grad"]


def test_single_process_context_is_a_no_op():
    ctx = D.setup()
    assert not ctx.enabled and ctx.is_main
    plan = _plan("a", "b", 0.1)
    assert D.check_same_plan(plan, ctx) == plan.digest()
    assert D.all_sum([1, 2.5], ctx, "cpu") == [1, 2.5]


def test_setup_under_torchrun_refuses_one_named_gpu(monkeypatch):
    """Each torchrun process takes cuda:LOCAL_RANK; '--device cuda:1' cannot mean that."""
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(PearError, match="cuda:LOCAL_RANK"):
        D.setup("cuda:1")
    assert not dist.is_initialized()


def test_teardown_leaves_the_group(collectives):
    assert [r["initialized_after_teardown"] for r in collectives] == [False, False]
