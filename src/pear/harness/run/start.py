"""A run's beginning: the model it builds, what it checks before its folder is made, the
state it carries from epoch to epoch (`_Run`), and its start, fresh or resumed.

`pear.harness.run.train` runs it (and re-exports `build`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from ...atomic import recover_dir
from ...importance import ImportanceTracker
from ...pruning import PrunePlan
from ..datasets.images import build_transform
from ..datasets.vtab import TaskInfo, VtabDataset, task_info
from ..models.backbones import random_backbone
from ..models.methods import PRUNING_METHODS, build_model
from . import distributed as D
from .batches import GlobalBatches, Split, resolve_device
from .finish import trainable
from .options import TrainConfig
from .precision import Precision, choose, keep_started, legacy
from .rundir import RunDir, RunFolder, setup_logging, write_text
from .same_run import task_lists_digest
from .schedule import make_optimizer
from .state import STATE_FILES, load_state
from .watch import Board, require_tensorboard

log = logging.getLogger("pear")


def build(cfg: TrainConfig, num_classes: int, device: torch.device, backbone_file: Path | None = None):
    """Backbone + method; returns (model, data_config, backbone fingerprint).
    backbone_file: weights to load instead of cfg.weights (a resumed run's random backbone)."""
    weights = str(backbone_file) if backbone_file else cfg.weights
    return build_model(
        cfg.backbone,
        num_classes,
        cfg.method,
        cfg.pear_config(),
        weights=weights,
        img_size=cfg.img_size,
        model_kwargs=cfg.model_kwargs,
        device=device,
        lora_alpha=cfg.lora_alpha,
    )


@dataclass
class _Run:
    """What one run carries from epoch to epoch (and saves in RUN/state)."""

    cfg: TrainConfig
    ctx: D.Context
    folder: RunFolder
    device: torch.device
    precision: Precision
    info: TaskInfo
    fp: str  # the backbone's fingerprint
    model: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: GlobalBatches
    tracker: ImportanceTracker | None
    fwd: nn.Module | None = None  # the model as trained: DDP- and compile-wrapped
    step: int = 0
    start_epoch: int = 0
    history: list = field(default_factory=list)
    plan: PrunePlan | None = None
    best: dict | None = None
    board: Board | None = None  # rank 0 of a run with --tensorboard

    @property
    def amp(self) -> bool:
        return self.precision.amp

    @property
    def out(self) -> Path:
        """The folder the run writes into (a staging folder while --overwrite replaces a run)."""
        return self.folder.path

    @property
    def dir(self) -> RunDir:
        """The layout of the folder the run writes into (`out`)."""
        return self.folder.dir

    @property
    def total_steps(self) -> int:
        return len(self.sampler) * self.cfg.epochs

    @property
    def warmup_steps(self) -> int:
        assert self.cfg.warmup_epochs is not None  # TrainConfig.__post_init__ resolves it
        return len(self.sampler) * self.cfg.warmup_epochs

    @property
    def pruning(self) -> bool:
        return self.cfg.method in PRUNING_METHODS and self.cfg.pear_config().prune_ratio > 0


def _validate(cfg: TrainConfig, ctx: D.Context):
    """Everything a run needs that can be wrong (device, data, lists, backbone, weights),
    checked before its folder is created or an old run touched: (device, model,
    fingerprint, task info, splits)."""
    device = ctx.device if ctx.enabled and ctx.device is not None else resolve_device(cfg.device)
    if cfg.tensorboard and ctx.is_main:  # only rank 0 writes event files
        require_tensorboard()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    info = task_info(cfg.data, cfg.task)
    cfg.task_lists = task_lists_digest(cfg.data, cfg.task)  # recorded: a moved run's --data is checked by it
    # A resumed run on a random backbone continues on the one it drew, not on one drawn again here.
    kept = RunDir(Path(cfg.out)).kept_backbone() if cfg.resume and random_backbone(cfg.backbone, cfg.weights) else None
    model, data_cfg, fp = build(cfg, info.num_classes, device, kept)

    assert cfg.img_size is not None  # TrainConfig.__post_init__ resolves it
    transform = build_transform(cfg.img_size, data_cfg["mean"], data_cfg["std"])
    names = {"train": cfg.train_split, **({"val": "val200"} if cfg.select_on else {}), "test": "test"}
    splits = {
        k: Split(VtabDataset(cfg.data, cfg.task, split, transform), cfg.cache_gb * 2**30, cfg.workers)
        for k, split in names.items()
    }
    return device, model, fp, info, splits


def _start(
    cfg: TrainConfig,
    ctx: D.Context,
    folder: RunFolder,
    device: torch.device,
    model: nn.Module,
    fp: str,
    info,
    splits: dict[str, Split],
) -> _Run:
    """Log, args.yaml and optimizer of a fresh run in its folder."""
    out = folder.path
    setup_logging(out, ctx)
    if ctx.is_main:
        write_text(folder.dir.args, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        log.info(
            "run %s: %s on %s/%s, backbone %s, %d train / %d test images, device %s, world %d",
            out,
            cfg.method,
            cfg.data,
            info.name,
            cfg.backbone,
            len(splits["train"]),
            len(splits["test"]),
            device,
            ctx.world,
        )
    run = _Run(
        cfg,
        ctx,
        folder,
        device,
        precision=choose(cfg.amp, device, model, distributed=ctx.enabled),
        info=info,
        fp=fp,
        model=model,
        optimizer=make_optimizer(model, cfg.lr, cfg.wd),
        sampler=GlobalBatches(len(splits["train"]), cfg.batch_size, cfg.seed, ctx.rank, ctx.world),
        tracker=None,
    )
    run.tracker = ImportanceTracker(model) if run.pruning else None
    return run


def _board(run: _Run) -> Board | None:
    """Rank 0's TensorBoard writer with --tensorboard; a fresh run logs its trainable
    parameters before pruning at step 0."""
    if not (run.cfg.tensorboard and run.ctx.is_main):
        return None
    board = Board(run.dir.tensorboard, purge_step=run.step if run.start_epoch else None)
    if run.start_epoch == 0:
        board.params(0, trainable(run.model))
        board.hparams(run.cfg.to_dict())
    return board


def _resume(run: _Run) -> None:
    """With --resume, continue from RUN/state when there is one (every rank must agree)."""
    cfg, ctx, state_dir = run.cfg, run.ctx, run.dir.state
    if cfg.resume and ctx.is_main:
        recover_dir(state_dir)
    D.barrier()
    if cfg.resume and state_dir.is_dir():
        st = load_state(state_dir, run.model, run.optimizer, run.tracker, run.device)
        run.start_epoch, run.step, run.history, run.best = st["epoch"] + 1, st["step"], st["history"], st.get("best")
        # The precision it started with; `pear train` takes no refusal here (amp=None): the saved one wins.
        where = str(state_dir / STATE_FILES[1])
        run.precision = keep_started(st["precision"] or None, None, legacy(cfg.amp, run.device), where)
        run.plan = PrunePlan.from_dict(st["plan"]) if st.get("plan") else None
        if run.plan is not None and run.tracker is not None:
            run.tracker.close()
            run.tracker = None
        log.info("resumed from %s at epoch %d (step %d)", state_dir, run.start_epoch, run.step)
    elif cfg.resume:
        log.info("fresh start at epoch 1 (nothing saved to resume from yet)")
    if cfg.resume:
        D.check_same(
            (run.start_epoch, run.step, run.plan.digest() if run.plan else None),
            "resume points (epoch, step, plan)",
            ctx,
            f"every rank reads {state_dir}: put --out on a filesystem that all nodes share",
        )
