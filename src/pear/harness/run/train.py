"""One training run: model, schedule, Pear's prune step, the epoch loop and its state.

The schedule is the VTAB-1k recipe (AdamW, cosine with linear warm-up, per-step LR,
no augmentation). For `pear`/`prune` the importance tracker runs during the first
`prune_epoch` epochs (by default the warm-up); at the start of epoch `prune_epoch`
the plan is made and applied once, the optimizer drops the pruned parameters' state,
and training goes on. Every epoch a resumable state is written atomically.

Options: `options.TrainConfig`; the optimizer and LR schedule: `schedule`; batches,
loading and evaluation: `batches`; the run folder, its layout and its log: `rundir`; the
checkpoints (the best epoch's too) and the results a run writes: `finish`; the model it
builds, the checks before its folder is made, its state (`_Run`) and its start or resume:
`start`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import cast

import torch
from torch import nn

from ...adapters import pear_state, unwrap
from ...errors import PearError
from ...importance import ImportanceTracker  # noqa: F401  (tests reach it as train.ImportanceTracker)
from ...knowledge import KNOWLEDGE
from ...norms import freeze_norm_stats
from ...pruning import PrunePlan, capture_inputs, make_plan, prune_and_share, prune_optimizer
from ...report import report
from . import distributed as D
from .batches import Split, evaluate
from .finish import keep_if_best, keep_random_backbone, restore_best, trainable, write_results
from .options import TrainConfig
from .precision import apply_precision
from .rundir import RunDir, guarded, log_failure, prepare_run_dir
from .schedule import lr_factor, make_optimizer
from .start import _board, _resume, _Run, _start, _validate, build
from .state import save_state
from .watch import progress

__all__ = ["TrainConfig", "build", "lr_factor", "make_optimizer", "prepare_run_dir", "train"]

log = logging.getLogger("pear")


# ---------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict | None:
    """Run `cfg` to the end (resuming if asked) and return the metrics dict. Under
    torchrun every process calls this; rank 0 writes the run folder and returns the
    metrics, the other ranks return None."""
    ctx = D.setup(cfg.device)
    try:
        with warnings.catch_warnings():
            if not ctx.is_main:
                # Every rank runs the same code, so rank 0 already shows each warning once.
                warnings.simplefilter("ignore")
            return _train(cfg, ctx)
    finally:
        D.teardown(ctx)


def _train(cfg: TrainConfig, ctx: D.Context) -> dict | None:
    device, model, fp, info, splits = _validate(cfg, ctx)
    folder = prepare_run_dir(cfg, ctx)
    try:
        return _run(_start(cfg, ctx, folder, device, model, fp, info, splits), splits)
    except PearError as exc:
        log_failure(exc)
        raise
    finally:
        folder.close()


def _run(run: _Run, splits: dict[str, Split]) -> dict | None:
    cfg, ctx = run.cfg, run.ctx
    keep_random_backbone(run)
    _resume(run)
    # Chosen now for a fresh run; a resumed run's own (precision.legacy for states that recorded none).
    apply_precision(run.model, run.precision)
    run.board = _board(run)
    try:
        run.fwd = _wrap(run.model, cfg, ctx)
        for epoch in range(run.start_epoch, cfg.epochs):
            _epoch(run, epoch, splits["train"], splits.get("val"))
        if run.best is not None and cfg.select_on:
            if ctx.is_main:  # only rank 0's disk is sure to hold RUN/best
                restore_best(run)
            D.broadcast_module(run.model, ctx)
            run.fwd = _wrap(run.model, cfg, ctx, run.fwd)
        # The eager model, not the compiled one: compiled kernels may round differently, and the
        # recorded accuracy must be the one `pear eval --run` recomputes from the checkpoint.
        test_acc = evaluate(run.model, splits["test"], run.device, run.amp, ctx, cfg.eval_batch_size)
        if run.board is not None:
            run.board.test(run.step, test_acc)
    finally:
        if run.board is not None:
            run.board.close()
    metrics = None
    if ctx.is_main:
        metrics = write_results(run, test_acc)
        guarded(run.folder.finish, run.folder.dest)
    D.barrier()  # when train() returns on any rank, the run folder is complete
    return metrics


def _epoch(run: _Run, epoch: int, train_split: Split, val_split: Split | None) -> None:
    """Prune if it is time, train one epoch, validate, log, save the state."""
    cfg, ctx = run.cfg, run.ctx
    if run.tracker is not None and epoch == cfg.prune_epoch:
        run.plan = _prune(run, train_split)
        run.tracker = None
        if run.board is not None:
            run.board.params(run.step, trainable(run.model))
            run.board.pruning_map(
                run.step,
                {"method": cfg.method, "task": run.info.name, "backbone": {"name": cfg.backbone}, **report(run.model)},
            )
        run.fwd = _wrap(run.model, cfg, ctx, run.fwd)  # DDP over the new parameter set; compile once more
    run.sampler.epoch = epoch
    t0 = time.perf_counter()
    loss_sum, correct, seen = _train_epoch(run, train_split, epoch)
    dt = time.perf_counter() - t0
    _check_finite(run.model, cfg, epoch)
    rec = {
        "epoch": epoch,
        "loss": loss_sum / max(1, seen),
        "train_acc": 100.0 * correct / max(1, seen),
        "images_per_second": seen / dt,
        "images": seen,
        "seconds": dt,
        "lr": run.optimizer.param_groups[0]["lr"],
    }
    if val_split is not None:
        rec["val_acc"] = evaluate(run.fwd, val_split, run.device, run.amp, ctx, cfg.eval_batch_size)
    keep_if_best(run, epoch, rec)
    run.history.append(rec)
    if run.board is not None:
        run.board.epoch(run.step, rec)
    if ctx.is_main:
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.2f%%  %.1f img/s%s",
            epoch + 1,
            cfg.epochs,
            rec["loss"],
            rec["train_acc"],
            rec["images_per_second"],
            f"  val acc {rec['val_acc']:.2f}%" if "val_acc" in rec else "",
        )
        guarded(
            lambda: save_state(
                run.dir.state,
                run.model,
                run.optimizer,
                run.tracker,
                epoch=epoch,
                step=run.step,
                history=run.history,
                plan=run.plan,
                best=run.best,
                precision=run.precision.to_dict(),
            ),
            run.dir.state,
        )
    D.barrier()


def _wrap(model: nn.Module, cfg: TrainConfig, ctx: D.Context, previous: nn.Module | None = None) -> nn.Module:
    fwd = D.wrap_ddp(model, ctx, previous)
    if cfg.compile:
        fwd = cast(nn.Module, torch.compile(fwd))  # an OptimizedModule; the stub says Callable
    return fwd


# Images whose adapter inputs the 'distill' knowledge checkpoint fits to: the first of the
# training split, in list order, so that a resumed or distributed run captures the same ones.
DISTILL_IMAGES = 64


def _prune(run: _Run, split: Split) -> PrunePlan:
    model, ctx = run.model, run.ctx
    assert run.tracker is not None  # a pruning run scores: _start made its tracker
    scores = run.tracker.scores()
    run.tracker.close()
    state = pear_state(model)
    p = make_plan(scores, state.config, model)
    digest = D.check_same_plan(p, ctx)
    inputs = None
    if KNOWLEDGE.get(state.config.knowledge).needs_inputs:
        first = [list(range(min(DISTILL_IMAGES, len(split))))]
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
            inputs = capture_inputs(model, (x.to(run.device) for x, _ in split.loader(first)))
    prune_and_share(model, p, inputs=inputs)
    dropped = prune_optimizer(run.optimizer, model)
    log.info(
        "pruned %d of %d adapters (%s sharing, knowledge %s); optimizer dropped %d tensors; plan %s",
        len(p.pruned),
        len(p.pruned) + len(p.kept),
        p.policy,
        state.config.knowledge,
        dropped,
        digest,
    )
    if ctx.enabled:
        log.info("plan %s checked: identical on all %d ranks", digest, ctx.world)
    return p


def _train_epoch(run: _Run, split: Split, epoch: int) -> tuple[float, int, int]:
    """One epoch; returns (loss sum, correct, images) summed over all ranks."""
    cfg, ctx, device, fwd = run.cfg, run.ctx, run.device, run.fwd
    assert fwd is not None  # _run wraps the model before the first epoch
    fwd.train()
    freeze_norm_stats(unwrap(run.model))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct, seen = 0.0, 0, 0
    batches = run.sampler.batches()
    sizes = run.sampler.global_sizes()
    bar = progress(len(batches), f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(split.loader(batches)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        factor = lr_factor(run.step, run.total_steps, run.warmup_steps)
        for g in run.optimizer.param_groups:
            g["lr"] = cfg.lr * factor
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
            logits = fwd(x)
            loss_total = loss_fn(logits.float(), y)
        value = loss_total.item()
        if not math.isfinite(value):
            raise PearError(
                f"loss became {value} at epoch {epoch + 1}, step {i + 1} (global step {run.step + 1}); "
                f"stopped. {_last_good(cfg, epoch)}; try a lower --lr"
            )
        run.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; this scale makes that average the gradient
        # of the global batch's mean loss, as in one process.
        (loss_total * (ctx.world / sizes[i])).backward()
        if run.tracker is not None:
            run.tracker.update()
        run.optimizer.step()
        if run.board is not None:
            run.board.step(run.step, value / y.numel(), cfg.lr * factor)
        run.step += 1
        loss_sum += value
        correct += (logits.argmax(-1) == y).sum().item()
        seen += y.numel()
        if bar is not None:
            bar.update(loss_sum / seen, 100 * correct / seen, seen * ctx.world / (time.perf_counter() - t0))
    if bar is not None:
        bar.close()
    total_loss, total_correct, total_seen = D.all_sum([loss_sum, correct, seen], ctx, device)
    return total_loss, int(total_correct), int(total_seen)


def _last_good(cfg: TrainConfig, epoch: int) -> str:
    if epoch == 0:
        return "No state was saved yet (it is written at the end of each epoch)"
    return f"The last good state (end of epoch {epoch}) is kept in {RunDir(Path(cfg.out)).state}"


def _check_finite(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """The loss is checked before each step, so the last step of an epoch can still
    leave inf/NaN weights (an inf gradient); saving them would overwrite the last
    good state with one that cannot train."""
    bad = next(
        (n for n, p in unwrap(model).named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None
    )
    if bad is not None:
        raise PearError(
            f"parameter {bad!r} became non-finite during epoch {epoch + 1} (the loss was still finite); "
            f"stopped. {_last_good(cfg, epoch)}; try a lower --lr"
        )
