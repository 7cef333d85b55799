"""`TrainConfig`: every option of a run, declared once.

Each field carries its help text; `pear train`'s flags, the YAML config (`-c`) and the
suite's method grammar are all generated from these fields and from `PearConfig`'s
(values from text, help and metavar: `pear.harness.run.flags`), so an option is written in
one place. The Pear options live in `TrainConfig.pear`, a `PearConfig`; flat Pear keys
(`rank: 4`, as args.yaml files written before they were nested hold them) are read into it.
The same-run rule (`changed_options`, `pear.harness.run.same_run`, re-exported here) compares
a run's recorded options with given ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from ...config import PearConfig
from ...errors import PearError
from ..models.hub import default_backbone, default_img_size
from ..models.method_names import METHODS, PRUNING_METHODS, TRAINING_METHODS, canonical_method, pear_config_for
from .flags import REQUIRED, arg_type, flag_name, help_text, json_object, metavar, type_hint
from .same_run import EXECUTION_FIELDS, changed_options, differences, flat_options, other_data, task_lists_digest  # noqa: F401  (re-exported)


def _opt(default: Any = dataclasses.MISSING, help: str = "", cli: bool = True, choices=None, **kwargs) -> Any:
    """A field with its help text; cli=False keeps it out of `pear train`'s flags; choices: the
    registry (pear.registry) of the names it takes, listed in its help."""
    return field(default=default, metadata={"help": help, "cli": cli, "choices": choices}, **kwargs)


@dataclass
class TrainConfig:
    """Everything a run needs; written to RUN_DIR/args.yaml."""

    data: str = _opt(help="VTAB-format data root")
    task: str = _opt(help="task folder name under --data")
    out: str = _opt(help="run folder to create")
    backbone: str | None = _opt(
        None,
        "timm model name (default: the architecture a --weights folder's config.json "
        "names, else tf_efficientnet_lite0 with its built-in ImageNet weights)",
    )
    weights: str | None = _opt(
        None,
        "local pretrained weights: .safetensors, .pth or Google .npz, or a HuggingFace "
        "transformers ViT / timm hub folder (config.json + model.safetensors)",
    )
    model_kwargs: dict = field(
        default_factory=dict,
        metadata={"help": "JSON object of extra timm.create_model arguments, e.g. '{\"depth\": 2}'", "cli": True},
    )
    method: str = _opt("pear", "training method", choices=TRAINING_METHODS)
    img_size: int | None = _opt(
        None,
        "input resolution (default: the one a --weights folder's config.json "
        "gives, else the backbone's own: 224 for ViT-B/16 and Lite0, 32 for "
        "pear_vit_tiny6_patch4_32)",
    )
    epochs: int = _opt(100, "training epochs")
    warmup_epochs: int | None = _opt(None, "linear LR warm-up epochs (default: 10% of epochs, at least 1)")
    batch_size: int = _opt(64, "global batch size")
    lr: float = _opt(1e-3, "AdamW learning rate")
    wd: float = _opt(1e-4, "AdamW weight decay")
    seed: int = _opt(0, "random seed (also of the 'random' importance control)")
    train_split: str = _opt("train800val200", "split to train on (train800 with --select-on)", cli=False)
    select_on: str | None = _opt(None, "'val200': train on train800 and test the best val200 epoch")
    pear: PearConfig = field(default_factory=PearConfig, metadata={"help": "Pear options", "cli": False})
    prune_epoch: int | None = _opt(None, "epoch at which to prune (default: the end of the warm-up)")
    lora_alpha: float | None = _opt(None, "alpha of the peft-lora baselines (default: their rank, a scale of 1)")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N")
    amp: bool | None = _opt(
        None,
        "bf16 autocast (default: on with CUDA and on a CPU with bf16 matrix "
        "instructions, AMX or AVX512-BF16; --no-amp: fp32)",
    )
    compile: bool = _opt(
        False, "torch.compile the model (wrapped again after pruning; a few graphs, never one per step)"
    )
    workers: int = _opt(2, "data loader worker processes")
    cache_gb: float = _opt(4.0, "keep preprocessed images in memory up to this many GB")
    deterministic: bool = _opt(False, "torch.use_deterministic_algorithms(True)")
    progress: bool = _opt(True, "progress bar (on a terminal; elsewhere a plain line every few seconds)")
    tensorboard: bool = _opt(
        False,
        "write TensorBoard event files to RUN/tensorboard: loss, train/val accuracy, "
        "learning rate, images/s, trainable parameters before and after pruning, the "
        "pruning map (needs the tensorboard package)",
    )
    overwrite: bool = _opt(False, "replace an existing run folder")
    resume: bool = _opt(False, "continue the run in --out from its last complete epoch")
    eval_batch_size: int = _opt(256, "evaluation batch size")
    task_lists: str | None = _opt(
        None,
        "SHA-256 of the task's list files, recorded by the run: a run folder "
        "moved elsewhere takes any --data that holds the same lists",
        cli=False,
    )

    def __post_init__(self) -> None:
        if isinstance(self.pear, dict):
            self.pear = _pear_from_dict(self.pear)
        _check_types(self)
        # Absolute, so that args.yaml names the same files from any working directory (an earlier
        # args.yaml's relative paths meant the folder it was read from; read there, they still do).
        self.data = os.path.abspath(self.data)
        if self.weights not in (None, "builtin", "random"):
            self.weights = os.path.abspath(self.weights)
        if self.overwrite and self.resume:
            raise PearError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
        if self.backbone is None:
            self.backbone = default_backbone(self.weights)
        if self.img_size is None:  # a checkpoint folder's own resolution first: its name may be a generic ViT's
            self.img_size = default_img_size(self.weights) or native_img_size(self.backbone)
        if canonical_method(self.method) not in METHODS:
            raise PearError(f"--method {self.method!r} is unknown; expected one of {', '.join(METHODS)}")
        self.method = canonical_method(self.method)
        for name in ("epochs", "batch_size", "img_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise PearError(f"{flag_name(name)} must be a positive integer, got {getattr(self, name)!r}")
        check_device(self.device)
        if self.workers < 0:
            raise PearError(f"--workers must be 0 (load in the main process) or more, got {self.workers}")
        if not 0 <= self.cache_gb < math.inf:
            raise PearError(f"--cache-gb must be a finite number >= 0 (0: no cache), got {self.cache_gb}")
        if not 0 <= self.seed < 2**32:
            raise PearError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.lora_alpha is not None and not 0 < self.lora_alpha < math.inf:
            raise PearError(f"--lora-alpha must be a finite number > 0, got {self.lora_alpha}")
        defaulted_prune_epoch = self.prune_epoch is None
        if self.warmup_epochs is None:
            self.warmup_epochs = max(1, round(0.1 * self.epochs)) if self.epochs > 1 else 0
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise PearError(f"--warmup-epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.prune_epoch is None:
            self.prune_epoch = max(1, self.warmup_epochs)
        if self.method in PRUNING_METHODS and not 1 <= self.prune_epoch < self.epochs:
            if defaulted_prune_epoch:
                raise PearError(
                    f"--method {self.method} prunes after a scoring epoch (by default at the end of the "
                    f"warm-up, epoch {self.prune_epoch}) and then trains on, so it needs --epochs "
                    f"{self.prune_epoch + 1} or more; got --epochs {self.epochs}. Pass --epochs "
                    f"{self.prune_epoch + 1} or more, or --method adapter (no pruning)"
                )
            raise PearError(
                f"--prune-epoch must be in [1, epochs) = [1, {self.epochs}) so there is a scoring "
                f"window before pruning and training after it; got {self.prune_epoch}"
            )
        if self.select_on not in (None, "val200"):
            raise PearError(f"--select-on must be 'val200' if given, got {self.select_on!r}")
        if self.select_on:
            self.train_split = "train800"
        if not 0 < self.lr < math.inf or not 0 <= self.wd < math.inf:
            raise PearError(
                f"--lr must be a finite number > 0 and --wd a finite number >= 0, got lr={self.lr}, wd={self.wd}"
            )
        # The run's seed also seeds the 'random' importance control.
        self.pear = _pear_from_dict({**self.pear.to_dict(), "seed": self.seed})

    def pear_config(self) -> PearConfig:
        """The Pear config this run's method trains with ('adapter' never prunes, 'prune' never
        shares: `TrainingMethod.config`), derived once and again only when `method` or the Pear
        options change (`pear` replaced, or one of its fields set). Not to be modified: it is the run's."""
        key = (self.method, self.pear.to_dict())
        held = self.__dict__.get("_derived")  # (key, the config derived from it)
        if held is None or held[0] != key:
            held = self.__dict__["_derived"] = (key, pear_config_for(self.method, self.pear))
        return held[1]

    def to_dict(self) -> dict:
        """Plain values (YAML- and JSON-safe), the Pear options nested under 'pear'."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["pear"] = {k: v for k, v in self.pear.to_dict().items() if k != "seed"}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a mapping such as args.yaml; Pear options may be nested under 'pear' or,
        as in earlier args.yaml files, given flat."""
        d = dict(d)
        pear = d.pop("pear", None) or {}
        if not isinstance(pear, dict):
            raise PearError(f"'pear' must be a mapping of Pear options (rank: 4, ...), got {pear!r:.60}")
        pear = dict(pear)
        pear.update({k: d.pop(k) for k in PEAR_FIELDS if k in d})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PearError(f"unknown training option(s) {unknown}; known: {sorted(known | set(PEAR_FIELDS))}")
        return cls(**d, pear=_pear_from_dict(pear))


def native_img_size(backbone: str) -> int:
    """The input resolution a timm model (name or name.tag) is made for; 224 when timm does not say."""
    from timm.models import get_pretrained_cfg  # timm is slow to import: only when a run is configured

    from ..models import pear_vit  # noqa: F401  (registers the built-in ViT with timm)

    try:
        cfg = get_pretrained_cfg(backbone)
    except RuntimeError:  # an unknown tag: create_backbone names the problem
        cfg = None
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


# PearConfig's fields set through TrainConfig.pear (its seed is the run's).
PEAR_FIELDS = tuple(f.name for f in fields(PearConfig) if f.name != "seed")
# The names of `pear train`'s flags' values (argparse dests).
FLAG_NAMES = frozenset(f.name for f in fields(TrainConfig) if f.metadata.get("cli", True)) | set(PEAR_FIELDS)


def default(name: str) -> Any:
    """The default of TrainConfig field `name` (the recipe's, for code that trains without a TrainConfig)."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


def _pear_from_dict(d: dict) -> PearConfig:
    """PearConfig from run options; its messages name the flags (--prune-ratio), not the fields."""
    try:
        return PearConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise PearError(re.sub(r"PearConfig\.(\w+)", lambda m: flag_name(m.group(1)), str(exc))) from None


# Kinds of value a field may hold, by its type hint's name, as a message says them.
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _check_types(cfg: TrainConfig) -> None:
    """Every option holds a value of its declared type, whether it came from a flag, YAML
    or the suite: a YAML `overwrite: "no"` is a string, not false, and `lr: "0.01"` is
    refused here instead of failing deep inside training. Integers are accepted as floats."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        value, hint = getattr(cfg, f.name), hints[f.name]
        if hint is PearConfig:
            continue
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        base = typing.get_origin(base) or base
        if value is None and optional:
            continue
        ok = isinstance(value, base) and not (isinstance(value, bool) and base is not bool)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
            setattr(cfg, f.name, value)
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise PearError(
                f"{flag_name(f.name)} must be {_KINDS.get(base, base.__name__)}"
                f"{' or unset' if optional else ''}, got {shown} ({type(value).__name__})"
            )


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")


def check_device(name, flag: str = "--device") -> None:
    """--device of every command (and each of `pear suite --devices`): auto, cpu, cuda, cuda:N or mps."""
    if not isinstance(name, str) or not _DEVICE_RE.fullmatch(name):
        raise PearError(f"{flag} {name!r} is not a device this Pear runs on; expected auto, cpu, cuda, cuda:N or mps")


# ---------------------------------------------------------------- command-line flags


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`pear train`'s flags, one per TrainConfig and PearConfig field. Their defaults stay
    None, so -c YAML values apply unless a flag is given and the dataclasses supply the rest."""
    parser.add_argument("-c", "--config", help="YAML file of training options (flags override it)")
    add_run_arguments(parser.add_argument_group("run"), FLAG_NAMES)
    pear = parser.add_argument_group("Pear options (pear.PearConfig)")
    for f in fields(PearConfig):
        if f.name in PEAR_FIELDS:
            pear.add_argument(
                flag_name(f.name),
                dest=f.name,
                type=arg_type(PearConfig, f.name),
                default=None,
                help=help_text(f),
                **metavar(f),
            )


def add_run_arguments(run: argparse._ActionsContainer, names) -> None:
    """`pear train`'s flag of each TrainConfig field in `names` (`pear suite` adds those it shares)."""
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True) or f.name not in names:
            continue
        if f.name == "amp":
            run.add_argument(
                "--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None, help=help_text(f)
            )
        elif f.name == "progress":
            run.add_argument(
                "--no-progress",
                dest="progress",
                action="store_false",
                default=None,
                help="no progress bar (default: a progress bar)",
            )
        elif type_hint(TrainConfig, f.name) is bool:
            run.add_argument(flag_name(f.name), dest=f.name, action="store_true", default=None, help=help_text(f))
        else:  # model_kwargs stays text here: bad JSON is a PearError, not an argparse usage error
            typ = str if f.name == "model_kwargs" else arg_type(TrainConfig, f.name)
            run.add_argument(flag_name(f.name), dest=f.name, type=typ, default=None, help=help_text(f), **metavar(f))


def train_config_from_args(values: dict) -> TrainConfig:
    """TrainConfig from -c YAML values (`values`) with the given flags on top."""
    missing = [k for k in REQUIRED if not values.get(k)]
    if missing:
        raise PearError(f"pear train needs {', '.join(flag_name(m) for m in missing)} (or set them in -c CONFIG)")
    if isinstance(values.get("model_kwargs"), str):  # a YAML string
        values["model_kwargs"] = json_object(values["model_kwargs"])
    try:
        return TrainConfig.from_dict(values)
    except TypeError as exc:
        raise PearError(f"bad training options: {exc}") from None
