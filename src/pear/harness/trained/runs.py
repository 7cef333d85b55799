"""Rebuilding a trained model from what a run saved (for eval, predict, inspect)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ...checkpoint import recorded_weights
from ...errors import PearError
from ...jsontypes import NONE, checkpoint_problems, recorded_heads, wrong_types
from ..files import read_mapping
from ..models.backbones import random_backbone
from ..models.methods import METHODS, canonical_method
from ..run.checkpoint_kinds import PLAIN, SavedCheckpoint, open_checkpoint
from ..run.rundir import RunDir


def rebuild(
    ckpt: str | Path, *, backbone: str | None = None, weights: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict, dict]:
    """(model in eval mode, checkpoint info, data config) from a checkpoint folder.
    The backbone defaults to the one recorded in the checkpoint; `weights` must be the
    file used in training (the checkpoint's fingerprint check enforces it), and defaults
    to the recorded one when it is still there with the same SHA-256. A randomly
    initialised backbone comes from the run folder's backbone.safetensors beside the
    checkpoint (RUN/checkpoint, RUN/best) where the run kept one."""
    ckpt = Path(ckpt)
    # Imported here: timm pulls in torchvision and torch._dynamo (seconds), which
    # checkpoint readers such as `pear inspect` never need.
    from ..models.backbones import create_backbone

    checkpoint = open_checkpoint(ckpt)
    info = _validated_info(checkpoint)
    meta = info.get("meta") or {}
    name = backbone or (info.get("backbone") or {}).get("name")
    if not name:
        raise PearError(f"{ckpt}: no backbone recorded; pass --backbone")
    img_size = meta.get("img_size")
    if weights is None and name == (info.get("backbone") or {}).get("name"):
        weights = recorded_weights(info)
    kwargs = meta.get("model_kwargs") or {}
    kept = RunDir(ckpt.parent).kept_backbone() if random_backbone(name, weights) else None
    # The head's initial bits (overwritten by the checkpoint's) and, in runs that did not
    # keep their random backbone, the backbone: drawn from the run's seed.
    torch.manual_seed(int(meta.get("seed", 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warning: the fingerprint check decides
        model, data_cfg = create_backbone(
            name, info.get("num_classes"), str(kept) if kept else weights, img_size=img_size, model_kwargs=kwargs
        )
    # Only a checkpoint trained on a random backbone (or one that does not say) gets the
    # redrawn-backbone explanation; one trained on a weights file now missing gets the
    # fingerprint check's own message, which asks for that file.
    trained_on = (info.get("backbone") or {}).get("weights_source")
    if kept is None and random_backbone(name, weights) and trained_on in (None, "random"):
        _check_redrawn_backbone(ckpt, info, model)
    model = checkpoint.load(model, backbone_name=name)
    return model.to(device).eval(), info, data_cfg


# The fields `rebuild` reads before any model exists, besides those every checkpoint has
# (`pear.jsontypes.checkpoint_problems`), and their types when present.
_META_FIELDS = {
    "img_size": (int, NONE),
    "model_kwargs": (dict, NONE),
    "seed": int,
    "rank": int,
    "lora_alpha": (int, float, NONE),
}


def _validated_info(saved: SavedCheckpoint) -> dict:
    """The checkpoint's JSON (its files verified by `open_checkpoint`) with the fields used
    to build the backbone checked, so a damaged checkpoint fails with a PearError before
    model creation, not inside it (a wrong class count could ask for any head size)."""
    info, path = saved.info, saved.json_file
    problems = wrong_types(info, {"method": str}) + checkpoint_problems(info)
    if not problems:
        problems = wrong_types(info.get("meta") or {}, _META_FIELDS, "meta.")
    if problems:
        raise PearError(f"{path} is malformed: {'; '.join(problems)}")
    n, meta = info.get("num_classes"), info.get("meta") or {}
    if saved.kind == PLAIN:
        w = saved.tensors.get(f"{next(iter(recorded_heads(info)), None)}.weight")
        if n is not None and (w is None or w.ndim == 0 or w.shape[0] != n):
            raise PearError(f"{path} is malformed: num_classes {n} does not match the stored head")
        method = info.get("method")
        if not isinstance(method, str) or canonical_method(method) not in METHODS:
            raise PearError(f"{path} is malformed: method {info.get('method')!r} is not one of {', '.join(METHODS)}")
    if (meta.get("img_size") or 1) < 1 or meta.get("rank", 1) < 1:
        raise PearError(f"{path} is malformed: meta.img_size and meta.rank must be positive")
    return info


def _check_redrawn_backbone(ckpt: Path, info: dict, model: nn.Module) -> None:
    """A backbone drawn again at random that is not the one the checkpoint was trained on:
    say why, and where the right one is."""
    from ...checkpoint import fingerprint

    want = (info.get("backbone") or {}).get("fingerprint")
    got = fingerprint(model) if want and info.get("method") != "full" else want
    if got == want:
        return
    raise PearError(
        f"{ckpt} was trained on a randomly initialised backbone (fingerprint {want}), and drawing it "
        f"again from the run's seed gave other bits here ({got}): torch's CPU random "
        f"kernels differ between machines. Pear keeps such a backbone in the run folder as "
        f"{RunDir.BACKBONE}, beside the checkpoint folder: keep the checkpoint in its run folder or pass "
        f"that file as --weights. A run without it evaluates only on a machine like the one that "
        f"trained it"
    )


# metrics.json keys renamed since older runs wrote them: old name -> today's.
_RENAMED_METRICS = {"stored_bytes": "checkpoint_file_bytes"}


def current_metrics(metrics: dict) -> dict:
    """A metrics.json mapping under today's key names ('stored_bytes' was the checkpoint's
    size on disk, now 'checkpoint_file_bytes')."""
    metrics = dict(metrics)
    for old, new in _RENAMED_METRICS.items():
        if old in metrics and new not in metrics:
            metrics[new] = metrics.pop(old)
    return metrics


def read_metrics(path: str | Path) -> dict:
    """A run's metrics.json, under today's key names."""
    return current_metrics(read_mapping(path, "metrics file"))


def load_run_config(run: Path) -> dict:
    path = RunDir(run).args
    if not path.is_file():
        raise PearError(f"{run} is not a run folder: it has no args.yaml")
    return read_mapping(path, "run options")


def _eval_precision(amp: bool | None, device, metrics: dict, where: Path, model: nn.Module):
    """The precision to re-evaluate a run with: what it recorded when it ran on the same
    kind of device, else today's choice for this device (a run that recorded no choice
    ran by the old rule, `precision.legacy`)."""
    from ..run.precision import Precision, choose, legacy

    same_kind = str(metrics.get("device", "")).split(":")[0] == device.type
    if "precision" in metrics:
        recorded = Precision.from_dict(metrics["precision"], str(where))
        return recorded if same_kind else choose(amp, device, model)
    return legacy(amp, device) if metrics else choose(amp, device, model)


def evaluate_run(run: str | Path, device: str = "auto", data: str | Path | None = None) -> dict:
    """Recompute a run's test accuracy from its saved checkpoint and compare it with
    the accuracy recorded in metrics.json. `data`: another data root than the recorded one
    (a run folder moved to another machine), which must hold the same task lists."""
    from ..datasets.images import build_transform
    from ..datasets.vtab import VtabDataset
    from ..run.batches import Split, evaluate, resolve_device
    from ..run.options import TrainConfig, other_data
    from ..run.precision import apply_attention

    run = Path(run)
    cfg = TrainConfig.from_dict({**load_run_config(run), "resume": False, "overwrite": False})
    if data is not None:
        problem = other_data(cfg.data, cfg.task_lists, str(data), cfg.task)
        if problem:
            raise PearError(f"{run}: {problem}")
        cfg.data = str(data)
    dev = resolve_device(device)
    model, _info, data_cfg = rebuild(RunDir(run).checkpoint, weights=cfg.weights, device=dev)
    assert cfg.img_size is not None, "TrainConfig fills in the default image size"
    transform = build_transform(cfg.img_size, data_cfg["mean"], data_cfg["std"])
    split = Split(VtabDataset(cfg.data, cfg.task, "test", transform), cfg.cache_gb * 2**30, cfg.workers)
    metrics_file = RunDir(run).metrics
    metrics = read_metrics(metrics_file) if metrics_file.is_file() else {}
    precision = _eval_precision(cfg.amp, dev, metrics, metrics_file, model)
    apply_attention(model, precision.attention)
    acc = evaluate(model, split, dev, precision.amp, batch_size=cfg.eval_batch_size)
    recorded = metrics.get("test_acc")
    return {"run": str(run), "task": cfg.task, "method": cfg.method, "test_acc": acc, "recorded_test_acc": recorded}
