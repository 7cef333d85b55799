"""`finish`: the best epoch's checkpoint (RUN/best), kept while a run trains and put back
into its model before the test."""

from types import SimpleNamespace

import pytest
import torch

from pear.checkpoint import fingerprint
from pear.harness.finish import keep_if_best, restore_best
from pear.harness.methods import prepare
from pear.harness.options import TrainConfig
from pear.harness.rundir import RunDir


@pytest.fixture
def run(tmp_path, model_factory):
    """What keep_if_best and restore_best read of a run (train._Run's fields), for a linear run."""
    model = model_factory("vit")
    fp = fingerprint(model)
    cfg = TrainConfig(data=str(tmp_path), task="toy", out=str(tmp_path / "run"), method="linear", epochs=3,
                      backbone="vit_tiny_patch16_224", img_size=32, select_on="val200")
    (tmp_path / "run").mkdir()
    return SimpleNamespace(cfg=cfg, info=SimpleNamespace(name="toy", class_names=None), fp=fp,
                           model=prepare(model, "linear", cfg.pear_config()), device=torch.device("cpu"),
                           ctx=SimpleNamespace(is_main=True), dir=RunDir(tmp_path / "run"), plan=None,
                           pruning=False, best=None)


def _head(run) -> torch.Tensor:
    return run.model.head.weight.detach().clone()


def test_the_best_validated_epoch_is_kept_and_restored(run):
    keep_if_best(run, 0, {"epoch": 0, "val_acc": 50.0})
    assert run.best == {"epoch": 0, "val_acc": 50.0} and run.dir.best.is_dir()
    kept = _head(run)
    with torch.no_grad():
        run.model.head.weight.add_(1.0)
    keep_if_best(run, 1, {"epoch": 1, "val_acc": 40.0})  # worse: RUN/best stays epoch 0's
    keep_if_best(run, 2, {"epoch": 2, "val_acc": 50.0})  # a tie is no better
    keep_if_best(run, 3, {"epoch": 3, "loss": 0.1})  # not validated
    assert run.best["epoch"] == 0 and not torch.equal(_head(run), kept)
    restore_best(run)
    assert torch.equal(_head(run), kept)
    keep_if_best(run, 4, {"epoch": 4, "val_acc": 60.0})
    assert run.best == {"epoch": 4, "val_acc": 60.0}


def test_a_pruning_run_chooses_only_among_its_pruned_epochs(run):
    run.pruning = True
    keep_if_best(run, 0, {"epoch": 0, "val_acc": 90.0})  # before the prune: not what the run stores
    assert run.best is None and not run.dir.best.exists()
    run.plan = object()  # pruned from here on
    keep_if_best(run, 1, {"epoch": 1, "val_acc": 10.0})
    assert run.best == {"epoch": 1, "val_acc": 10.0} and run.dir.best.is_dir()


def test_only_rank_0_writes_the_best_checkpoint(run):
    run.ctx.is_main = False
    keep_if_best(run, 0, {"epoch": 0, "val_acc": 50.0})
    assert run.best["epoch"] == 0 and not run.dir.best.exists()  # every rank knows the best epoch
