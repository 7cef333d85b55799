"""What a run leaves in its folder besides its resumable state, all written by rank 0:
its checkpoints (RUN/best, the best validated epoch so far with --select-on, and
RUN/checkpoint at the end, of the kind its method saves: `checkpoint_kinds`), the best
epoch put back into the model before the test, a randomly initialised backbone as it was
drawn, and the results: report.json, plan.json, history.json and metrics.json, written
last, so that a run folder that has it is finished.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...adapters import unwrap
from ...card import CARD_FILE
from ...card import render as render_card
from ...checkpoint import TENSORS_FILE, save_backbone
from ...report import report
from ..models.backbones import random_backbone
from .checkpoint_kinds import PEAR, kind_for, open_checkpoint, save_checkpoint
from .options import TrainConfig
from .precision import processor_name
from .rundir import guarded, write_text

if TYPE_CHECKING:
    from .start import _Run

log = logging.getLogger("pear")


def trainable(model: nn.Module) -> int:
    """The number of parameters that train."""
    return sum(p.numel() for p in unwrap(model).parameters() if p.requires_grad)


def save_run_checkpoint(run: _Run, directory: Path) -> None:
    """The run's model as a checkpoint in `directory`, with what `pear eval` needs to rebuild it."""
    cfg, info = run.cfg, run.info
    meta = {
        "method": cfg.method,
        "task": info.name,
        "img_size": cfg.img_size,
        "model_kwargs": cfg.model_kwargs,
        "seed": cfg.seed,
        "rank": cfg.pear.rank,
        "lora_alpha": cfg.lora_alpha,
    }
    save_checkpoint(
        run.model,
        directory,
        method=cfg.method,
        backbone=cfg.backbone,
        class_names=info.class_names,
        fingerprint_value=run.fp,
        meta=meta,
        weights=_weights_used(cfg),
    )


def keep_if_best(run: _Run, epoch: int, record: dict) -> None:
    """After a validated epoch (`record` has its val_acc): when it is the best so far, it
    becomes `run.best` and rank 0 saves the model as RUN/best. The best epoch is chosen
    from the pruned model only: an unpruned one is not what the run stores."""
    if "val_acc" not in record or (run.plan is None and run.pruning):
        return
    if run.best is None or record["val_acc"] > run.best["val_acc"]:
        run.best = {"epoch": epoch, "val_acc": record["val_acc"]}
        if run.ctx.is_main:
            best = run.dir.best
            guarded(lambda: save_run_checkpoint(run, best), best)


def restore_best(run: _Run) -> None:
    """Put RUN/best's tensors back into the run's model, in place."""
    open_checkpoint(run.dir.best).restore(run.model)
    run.model.to(run.device)


def keep_random_backbone(run: _Run) -> None:
    """Rank 0 saves a randomly initialised frozen backbone in the run folder before it
    trains: drawn again from the seed on another machine it can have other bits (torch's
    CPU random kernels differ between vector paths), which the checkpoint's fingerprint
    refuses. Full fine-tuning stores the whole model anyway."""
    cfg, path = run.cfg, run.dir.backbone
    if run.ctx.is_main and cfg.method != "full" and random_backbone(cfg.backbone, cfg.weights) and not path.is_file():
        guarded(lambda: save_backbone(run.model, path), path)


def write_results(run: _Run, test_acc: float) -> dict:
    """Rank 0: the final checkpoint, report.json, plan.json, history.json and
    metrics.json; returns the metrics."""
    cfg, model, files = run.cfg, run.model, run.dir
    ckpt = files.checkpoint
    guarded(lambda: save_run_checkpoint(run, ckpt), ckpt)
    pear = kind_for(cfg.method) == PEAR
    if pear:  # the card again, with the test accuracy and the command
        write_text(
            ckpt / CARD_FILE,
            render_card(
                open_checkpoint(ckpt).info,
                test_acc=test_acc,
                command=_command(cfg),
                file_bytes=(ckpt / TENSORS_FILE).stat().st_size,
            ),
        )
    stored = sum(f.stat().st_size for f in ckpt.iterdir() if f.name != CARD_FILE)  # as pear inspect counts
    rep = report(model) if pear else None
    metrics = _metrics(run, test_acc, stored, rep)
    if rep:
        write_text(files.report, json.dumps(rep, indent=1))
    if run.plan:
        write_text(files.plan, json.dumps(run.plan.to_dict(), indent=1))
    write_text(files.history, json.dumps(run.history, indent=1))
    write_text(files.metrics, json.dumps(metrics, indent=1))
    log.info("test accuracy %.2f%%  trainable %d  stored %d bytes", test_acc, metrics["trainable_params"], stored)
    return metrics


def _metrics(run: _Run, test_acc: float, stored: int, rep: dict | None) -> dict:
    """metrics.json's content."""
    cfg, n_trainable = run.cfg, trainable(run.model)
    # Over every epoch, including those a resumed run's earlier processes trained.
    train_time = sum(r.get("seconds", 0.0) for r in run.history)
    images_seen = sum(r.get("images", 0) for r in run.history)
    metrics = {
        "task": run.info.name,
        "method": cfg.method,
        "backbone": cfg.backbone,
        "seed": cfg.seed,
        "test_acc": test_acc,
        "trainable_params": n_trainable,
        "trainable_params_before": rep["totals"]["trainable_params_before"] if rep else n_trainable,
        "checkpoint_file_bytes": stored,
        "epochs": cfg.epochs,
        "img_size": cfg.img_size,
        "train_seconds": train_time,
        "images_per_second": images_seen / train_time if train_time else None,
        "world_size": run.ctx.world,
        "device": str(run.device),
        "cpu": processor_name(),
        "gpu": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else None,
        "plan_digest": run.plan.digest() if run.plan else None,
        "selected_epoch": run.best["epoch"] if run.best and cfg.select_on else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "precision": run.precision.to_dict(),
    }
    if rep:
        metrics["adapter_params"] = rep["totals"]["adapter_params"]
        metrics["adapter_bytes"] = rep["totals"]["adapter_bytes"]
    return metrics


def _weights_used(cfg: TrainConfig) -> str:
    """What the backbone was built from: --weights, or (without it) the built-in weights or none."""
    from ..models.backbones import BUILTIN_WEIGHTS

    if cfg.weights is not None:
        return str(cfg.weights)
    return "builtin" if (cfg.backbone or "").split(".")[0] in BUILTIN_WEIGHTS else "random"


def _command(cfg: TrainConfig) -> str:
    """A `pear train` command for this run (every option is in RUN/args.yaml)."""
    parts = ["pear", "train", "--data", str(cfg.data), "--task", cfg.task, "--method", cfg.method]
    for flag, value in (
        ("--backbone", cfg.backbone),
        ("--weights", cfg.weights),
        ("--img-size", cfg.img_size),
        ("--epochs", cfg.epochs),
        ("--seed", cfg.seed),
        ("--out", cfg.out),
    ):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)
