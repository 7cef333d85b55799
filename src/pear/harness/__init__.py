"""Everything around the method: runs, suites, models and data (`pear train`, `pear suite`, ...).

    run/        one training run: its options and flags, the epoch loop, batches, precision,
                resumable state, what it leaves (checkpoints of either kind, metrics), its
                folder and lock, progress, torchrun glue
    models/     what a run trains: timm backbones and their weights files, hub folders, Pear's
                own ViT, the training methods (registered in `models.method_names`)
    datasets/   VTAB-1k folders (`datasets.vtab`), images as the model sees them, the
                built-in datasets
    suites/     `pear suite`: the Suite value, its runs, their execution, the method
                grammar, results, the tuning protocol, Slurm arrays
    trained/    using a trained run: rebuilding it (`pear eval`), `pear predict`, `pear inspect`
    files.py    reading the JSON / YAML files a user may have edited
    outputs.py  where a command may write the files a user names
    demo.py     `pear demo`

The modules sat side by side in this folder before; each former path (`pear.harness.train`,
`pear.harness.suite`, ...) still imports, as the very same module object as its new home
(`pear.harness.run.train`), so an attribute set on either name is set on both. `_MOVED`
lists them. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# Former module (pear.harness.NAME) -> its home now, relative to pear.harness.
_MOVED = {
    "backbones": "models.backbones",
    "batches": "run.batches",
    "builders": "datasets.builders",
    "checkpoint_kinds": "run.checkpoint_kinds",
    "data": "datasets.vtab",
    "distributed": "run.distributed",
    "finish": "run.finish",
    "hub": "models.hub",
    "inspection": "trained.inspection",
    "method_names": "models.method_names",
    "methods": "models.methods",
    "options": "run.options",
    "pear_vit": "models.pear_vit",
    "precision": "run.precision",
    "predict": "trained.predict",
    "results": "suites.results",
    "rundir": "run.rundir",
    "runs": "trained.runs",
    "slurm": "suites.slurm",
    "state": "run.state",
    "suite": "suites.suite",
    "suite_exec": "suites.suite_exec",
    "suite_methods": "suites.grammar",
    "suite_runs": "suites.suite_runs",
    "train": "run.train",
    "tuning": "suites.tuning",
    "watch": "run.watch",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `pear.harness.NAME` of `_MOVED` as the module at its new home: the same object,
    registered under both names. The import system stamps the alias's spec on the module it
    is given; `exec_module` gives the module its own spec back, so it still names its home."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in _MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None and spec.loader_state is not None  # create_module's
        module.__spec__ = spec.loader_state


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.append(_Alias())
