"""Many tasks on one frozen backbone.

The backbone is loaded once and wrapped with slots at every position; each task is a
small set of adapter modules, frozen checkpoints, gates and a head. Switching the active task
only re-points the slots and the head (no tensor copies), so it costs microseconds
while a backbone forward pass costs milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .adapters import attach, pear_state, slots, unwrap
from .checkpoint import TaskModules, build_task, fingerprint, install, read_checkpoint
from .config import PearConfig
from .errors import PearError


class MultiTaskModel(nn.Module):
    """`add_task(name, ckpt_dir)` any number of Pear task checkpoints trained on this
    backbone, then `set_task(name)` and call the model as usual."""

    def __init__(self, backbone: nn.Module, backbone_name: str | None = None) -> None:
        super().__init__()
        self.model = unwrap(backbone)
        self.backbone_name = backbone_name
        self._fingerprint = fingerprint(self.model)
        self.task_modules = nn.ModuleDict()
        self._tasks: dict[str, TaskModules] = {}
        # Each position's adapter before any task is installed: the shape every task's adapter there is
        # built from (a plain dict, so that they stay out of the state dict).
        self._templates: dict[str, nn.Module] = {}
        self.class_names: dict[str, list[str] | None] = {}
        self.active: str | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    def add_task(self, name: str, directory: str | Path) -> None:
        if name in self._tasks:
            raise PearError(f"task {name!r} is already loaded")
        ckpt = read_checkpoint(directory)
        want = (ckpt.info.get("backbone") or {}).get("fingerprint")
        if want and want != self._fingerprint:
            raise PearError(
                f"{directory}: trained on a backbone with fingerprint {want}, this one has {self._fingerprint}"
            )
        state = getattr(self.model, "pear_state", None)
        if state is None:
            # Slots at every position this adapter kind offers; a task that adapts fewer
            # positions leaves the others empty.
            cfg = PearConfig.from_dict(
                {**ckpt.config.to_dict(), "target": None, "blocks": None, "sublayers": ["attn", "mlp"]}
            )
            attach(self.model, cfg)
        elif state.config.adapter != ckpt.config.adapter:
            raise PearError(
                f"{directory}: adapter kind {ckpt.config.adapter!r} differs from the loaded tasks' "
                f"{state.config.adapter!r}; one MultiTaskModel serves one adapter kind"
            )
        self._slots = slots(self.model)
        if not self._tasks:
            self._templates = {n: s.adapter for n, s in self._slots.items() if s.adapter is not None}
        task = build_task(ckpt, self.model, self._templates)
        self._tasks[name] = task
        self.class_names[name] = ckpt.class_names
        holder = nn.Module()
        holder.adapters = nn.ModuleDict({k.replace(".", "_"): m for k, m in task.adapters.items()})
        holder.frozen = nn.ModuleDict({k.replace(".", "_"): m for k, m in task.frozen.items()})
        if task.gates:  # PearConfig.gate's, at the shared positions
            holder.gates = nn.ParameterDict({k.replace(".", "_"): g for k, g in task.gates.items()})
        # One head keeps its old place in the state dict; several (head, head_dist) go by name.
        head = (
            next(iter(task.heads.values()))
            if len(task.heads) == 1
            else nn.ModuleDict({k.replace(".", "_"): m for k, m in task.heads.items()})
            if task.heads
            else None
        )
        setattr(holder, "head", head)  # None too, which nn.Module's attribute typing does not take
        self.task_modules[name] = holder
        if self.active is None:
            self.set_task(name)

    def set_task(self, name: str) -> None:
        if name not in self._tasks:
            raise PearError(f"unknown task {name!r}; loaded: {', '.join(self._tasks) or 'none'}")
        install(self.model, self._tasks[name], self._slots)
        pear_state(self.model).pruned = any(p for _, p in self._tasks[name].layout.values())
        self.active = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise PearError("no task loaded: call add_task(name, checkpoint_dir) first")
        return self.model(x)
