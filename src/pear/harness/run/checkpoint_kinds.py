"""The two kinds of checkpoint a run saves, decided, sniffed and loaded here only.

- 'pear': a Pear task checkpoint (`pear.checkpoint`: adapters.safetensors +
  pear_config.json + the model card), saved by the methods with Pear adapters;
- 'plain': the trainable tensors of a linear / full / peft-lora run (`state.save_plain`:
  weights.safetensors + run_config.json).

`kind_for(method)` says which kind a method saves and `save_checkpoint` writes it;
`open_checkpoint(folder)` tells which kind a folder holds (by its JSON file) and reads and
verifies it, once. What it returns loads either kind the same way: onto a fresh backbone
(`SavedCheckpoint.load`: `pear eval`, `pear predict`) or back into the model that trained it
(`SavedCheckpoint.restore`: the best epoch of a run with --select-on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...card import CARD_FILE
from ...checkpoint import (
    CONFIG_FILE,
    TENSORS_FILE,
    TaskCheckpoint,
    build_task,
    check_settings,
    fingerprint,
    install,
    read_checkpoint,
)
from ...checkpoint import load as load_task
from ...checkpoint import save as save_task
from ...config import PearConfig
from ...errors import BackboneMismatch, PearError
from ..models.methods import PEAR_METHODS, canonical_method, prepare
from .state import PLAIN_FILES, fill_model, read_plain, save_plain

PEAR, PLAIN = "pear", "plain"
# The JSON file that marks a folder as a checkpoint of each kind.
MARKERS = {PEAR: CONFIG_FILE, PLAIN: PLAIN_FILES[1]}


def kind_for(method: str) -> str:
    """The kind of checkpoint `method` saves: 'pear' for the methods with Pear adapters."""
    return PEAR if canonical_method(method) in PEAR_METHODS else PLAIN


def save_checkpoint(model: nn.Module, directory: Path, *, method: str, weights: str | None, **fields: Any) -> None:
    """Write `model`'s checkpoint of the kind `method` saves (atomically). `fields`: backbone,
    class_names, fingerprint_value and meta, which both kinds record."""
    if kind_for(method) == PEAR:
        save_task(model, directory, weights=weights, **fields)
    else:
        save_plain(model, directory, method=method, **fields)


def kind_of(ckpt: str | Path) -> str:
    """'pear' or 'plain': the kind of checkpoint in folder `ckpt`, by its JSON file."""
    ckpt = Path(ckpt)
    for kind, marker in MARKERS.items():
        if (ckpt / marker).is_file():
            return kind
    if not ckpt.exists():
        raise PearError(f"checkpoint folder {ckpt} does not exist")
    raise PearError(
        f"{ckpt} is not a checkpoint folder: expected {CONFIG_FILE} (Pear task) or {PLAIN_FILES[1]} (plain run) in it"
    )


@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint folder of either kind, its files read and verified (hashes, tensor
    shapes); nothing applied to a model yet."""

    kind: str
    path: Path
    info: dict
    tensors: dict[str, torch.Tensor]
    task: TaskCheckpoint | None = None  # a Pear checkpoint as `pear.checkpoint` reads it

    @property
    def json_file(self) -> Path:
        """The JSON file that describes the checkpoint (where a malformed field is)."""
        return self.path / MARKERS[self.kind]

    @property
    def files(self) -> tuple[str, ...]:
        """The files it stores, by name (a Pear checkpoint from before 0.2 has no card)."""
        if self.kind == PLAIN:
            return PLAIN_FILES
        return (TENSORS_FILE, CONFIG_FILE, *((CARD_FILE,) if (self.path / CARD_FILE).is_file() else ()))

    def load(self, backbone: nn.Module, *, backbone_name: str | None = None) -> nn.Module:
        """The trained model on `backbone`, a plain model with the weights it was trained on
        (refused, naming the difference, when they or its settings differ)."""
        if self.kind == PEAR:
            return load_task(self.path, backbone, backbone_name=backbone_name)
        self._check_backbone(backbone)
        meta = self.info.get("meta") or {}
        model = prepare(
            backbone, self.info.get("method", "linear"), PearConfig(rank=meta.get("rank", 8)), meta.get("lora_alpha")
        )
        fill_model(model, self.tensors, self.path)
        return model

    def restore(self, model: nn.Module) -> None:
        """Put the trained tensors back into `model`, the model that saved them (prepared for
        the same method and, for a Pear checkpoint, pruned by the same plan), in place."""
        if self.task is not None:
            install(model, build_task(self.task, model))
        else:
            fill_model(model, self.tensors, self.path)

    def _check_backbone(self, model: nn.Module) -> None:
        """A plain checkpoint's backbone record against `model` (a Pear checkpoint's is
        checked by `pear.checkpoint.load`)."""
        recorded = self.info.get("backbone") or {}
        # Settings matter for every method, `full` too: they change what the same tensors compute.
        check_settings(self.path, recorded, model)
        want = recorded.get("fingerprint")
        if self.info.get("method") != "full" and want and fingerprint(model) != want:
            raise BackboneMismatch(f"{self.path} was trained on other backbone weights (fingerprint {want})")


def open_checkpoint(ckpt: str | Path) -> SavedCheckpoint:
    """The checkpoint in folder `ckpt`, of either kind, read and verified."""
    ckpt = Path(ckpt)
    if kind_of(ckpt) == PEAR:
        task = read_checkpoint(ckpt)
        return SavedCheckpoint(PEAR, ckpt, task.info, task.tensors, task)
    info, tensors = read_plain(ckpt)
    return SavedCheckpoint(PLAIN, ckpt, info, tensors)
