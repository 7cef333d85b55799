"""`pear` command line: each command is a thin layer over a library function.

pear demo                         the built-in default job
pear data build NAME --out ROOT   write a built-in real dataset in VTAB-1k format
pear train --data ROOT --task T --method pear --out RUN
pear eval --run RUN               recompute test accuracy from the saved checkpoint
pear inspect RUN_OR_CKPT          what was pruned, who shares whom, what it costs
pear predict --ckpt DIR IMAGE...  top-k classes
pear suite ...                    every (task, method, seed), resumable, one table
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings

from .errors import BackboneMismatch, PearError
from .harness.files import read_mapping
from .harness.run.options import add_run_arguments, add_train_arguments
from .harness.suites.grammar import grammar
from .harness.suites.presets import PRESETS, preset_help


def _train_config(args: argparse.Namespace):
    from .harness.run.options import FLAG_NAMES, train_config_from_args

    values = _config_file(args.config)
    values.update({k: v for k, v in vars(args).items() if k in FLAG_NAMES and v is not None})
    return train_config_from_args(values)


def _config_file(path: str | None) -> dict:
    """The options of a -c YAML file (`pear train` and `pear suite`), keys spelt as flags
    ('batch-size') or as fields ('batch_size')."""
    loaded = read_mapping(path, "config file") if path else {}
    return {(k.replace("-", "_") if isinstance(k, str) else k): v for k, v in loaded.items()}


def cmd_train(args) -> int:
    from .harness.run.train import train

    metrics = train(_train_config(args))
    if metrics is not None:
        print(
            json.dumps(
                {k: metrics[k] for k in ("task", "method", "test_acc", "trainable_params", "checkpoint_file_bytes")},
                indent=1,
            )
        )
    return 0


def cmd_eval(args) -> int:
    from .harness.trained.runs import evaluate_run

    result = evaluate_run(args.run, device=args.device, data=args.data)
    print(json.dumps(result, indent=1))
    return 0


def cmd_data(args) -> int:
    from .harness.datasets.builders import build_dataset

    path = build_dataset(args.name, args.out, seed=args.seed, source=args.source, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from .harness.demo import run_demo

    run_demo(out=args.out, data=args.data, epochs=args.epochs, overwrite=args.overwrite)
    return 0


def cmd_inspect(args) -> int:
    from .harness.trained.inspection import inspect_path, render_table

    info = inspect_path(args.path, plot=args.plot)
    print(json.dumps(info, indent=1) if args.json else render_table(info))
    return 0


def cmd_predict(args) -> int:
    from .harness.trained.predict import predict, render_predictions

    results = predict(
        args.ckpt,
        args.images,
        backbone=args.backbone,
        weights=args.weights,
        top_k=args.top_k,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(json.dumps(results, indent=1) if args.json else render_predictions(results))
    return 0


def cmd_suite(args) -> int:
    """parse -> `Suite` -> one of its methods (the mode's flag)."""
    from .harness.suites.suite import Suite
    from .harness.suites.tuning import parse_grid

    modes = [
        f
        for f, on in (
            ("--list", args.list),
            ("--index", args.index is not None),
            ("--aggregate", args.aggregate),
            ("--emit-slurm", args.emit_slurm),
            ("--tune-only", args.tune_only),
        )
        if on
    ]
    if len(modes) > 1:
        raise PearError(f"pass one of {', '.join(modes)}")
    suite = Suite.configure(
        args.data,
        _split(args.tasks),
        _split(args.methods),
        _seeds(args.seeds),
        args.out,
        base=_suite_base(args),
        tune=args.tune or args.tune_only,
        preset=args.preset,
        grids=dict(parse_grid(g) for g in args.tune_grid or ()),
        tune_each=[f for text in args.tune_each or () for f in text.split(",")],
    )
    if args.list:
        print(suite.list())
    elif args.index is not None:
        suite.run_index(args.index, build_missing=args.build)
    elif args.aggregate:  # results.md names the suite's command, not this one
        suite.aggregate(command=shlex.join(["pear", *_without(args.argv, "--aggregate")]))
    elif args.emit_slurm:  # the same suite, run by each array task
        argv = _without(args.argv, "--emit-slurm", "--slurm-gres")
        suite.emit_slurm(args.emit_slurm, [sys.executable, "-m", "pear", *argv], gres=args.slurm_gres)
    elif args.tune_only:
        suite.tune_only(_split(args.devices), build_missing=args.build)
    else:
        suite.run(_split(args.devices), build_missing=args.build, command=shlex.join(["pear", *args.argv]))
    return 0


def _split(text: str | None) -> list[str] | None:
    return text.split(",") if text else None


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise PearError(f"--seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def _without(argv: list[str], *flags: str) -> list[str]:
    """`argv` without `flags` and their values (a flag in `_FLAGS_WITH_VALUE` takes the next word, unless
    written --flag=VALUE)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in flags:
            skip = "=" not in a and name in _FLAGS_WITH_VALUE
            continue
        out.append(a)
    return out


_FLAGS_WITH_VALUE = ("--emit-slurm", "--slurm-gres")
# `pear train`'s flags that `pear suite` takes too, for every run (TrainConfig fields).
_SUITE_TRAIN_FLAGS = (
    "backbone",
    "weights",
    "img_size",
    "epochs",
    "warmup_epochs",
    "batch_size",
    "lr",
    "workers",
    "tensorboard",
)


def _suite_base(args) -> dict:
    """The options every run of the suite shares: -c YAML, then the flags given."""
    base = _config_file(args.config)
    base.update({k: getattr(args, k) for k in _SUITE_TRAIN_FLAGS if getattr(args, k) is not None})
    return base


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pear",
        description="Pear: pruning and sharing adapters for parameter-efficient fine-tuning of vision models.",
    )
    parser.add_argument("--version", action="version", version=f"pear {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one (task, method) run")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    for add in (_add_eval_parser, _add_data_parser, _add_demo_parser, _add_inspect_parser, _add_predict_parser):
        add(sub)
    _add_suite_parser(sub)
    return parser


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="recompute a run's test accuracy from its saved checkpoint")
    p.add_argument("--run", required=True, help="run folder written by pear train")
    p.add_argument(
        "--data",
        default=None,
        help="data root to evaluate on (default: the one the run recorded); "
        "for a run folder moved to another machine, it must hold the same task lists",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.set_defaults(func=cmd_eval)


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="built-in datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="write a built-in real dataset in VTAB-1k format")
    b.add_argument("name", help="fashion_mnist | sprites_loc | sprites_ori")
    b.add_argument("--out", required=True, help="data root to write into")
    b.add_argument("--seed", type=int, default=0, help="seed of the images drawn into each split (default 0)")
    b.add_argument("--source", default=None, help="folder of Fashion-MNIST IDX files (default: Debian's)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing task folder")
    b.set_defaults(func=cmd_data)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the built-in default: Pear's own ViT (pear_vit_tiny6_patch4_32) + Fashion-MNIST 1k at 32 px, method pear",
    )
    p.add_argument(
        "--out",
        default="runs/demo",
        help="run folder (default runs/demo; a finished demo there is shown again, an unfinished one resumed)",
    )
    p.add_argument(
        "--data",
        default="data",
        help="data root; the Fashion-MNIST 1k task is built into it when missing (default data)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    p.add_argument("--overwrite", action="store_true", help="replace the run folder and train again")
    p.set_defaults(func=cmd_demo)


def _add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="per-position importance, pruning and sharing, stored bytes")
    p.add_argument("path", help="run folder or checkpoint folder")
    p.add_argument("--plot", default=None, help="write a PNG of the pruning map")
    p.add_argument("--json", action="store_true", help="print everything as JSON instead of the table")
    p.set_defaults(func=cmd_inspect)


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes for images with a task checkpoint")
    p.add_argument("--ckpt", required=True, help="task checkpoint folder (RUN/checkpoint)")
    p.add_argument("--backbone", default=None, help="timm name (default: the checkpoint's)")
    p.add_argument("--weights", default=None, help="the backbone weights used in training")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.set_defaults(func=cmd_predict)


def _add_suite_parser(sub) -> None:
    """`pear suite`'s flags; those it shares with `pear train` are generated as train's are."""
    # allow_abbrev=False: --emit-slurm's script repeats this command line minus --emit-slurm FILE,
    # so an abbreviation (--emit FILE) would reach every array task.
    p = sub.add_parser(
        "suite",
        allow_abbrev=False,
        help="run every (task, method, seed); resumable; writes results.csv/.md + plot",
        description="Run every (task, method, seed) into OUT/runs/..., resumably, and aggregate "
        "OUT/results.csv/.md. A whole suite holds OUT alone while it runs (OUT/.pear-lock, an flock "
        "the kernel drops when the process dies): a second suite on OUT is refused, naming its PID. "
        "--index runs hold OUT shared, so any number of them run side by side (each run folder has "
        "its own lock), but not beside a whole suite of the same OUT.",
    )
    p.add_argument("--data", required=True, help="VTAB-format data root holding every task folder")
    p.add_argument("--tasks", default=None, help="comma-separated task names (required unless --preset)")
    p.add_argument(
        "--methods",
        default=None,
        help="(required unless --preset, which defaults to pear) comma-separated, each of the form "
        + ", ".join(grammar())
        + " (peft-lora-eq: LoRA at the rank whose trainable parameters come closest to adapter's; e.g. pear-kc-frozen, "
        "pear@act=gelu@blocks=0+6)",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds, each run once per (task, method) (default 0)")
    p.add_argument("--out", default=None, help="suite folder, outside --data (required unless --preset: suites/PRESET)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help=preset_help())
    p.add_argument("-c", "--config", default=None, help="YAML of training options shared by all runs")
    add_run_arguments(
        p.add_argument_group("every run's training options, as in pear train (over -c and the --preset recipe)"),
        _SUITE_TRAIN_FLAGS,
    )
    p.add_argument(
        "--devices", default=None, help="comma-separated devices, one run per device at a time (e.g. cuda:0,cuda:1)"
    )
    p.add_argument("--build", action="store_true", help="build missing built-in datasets into --data first")
    p.add_argument(
        "--tune",
        action="store_true",
        help="VTAB's protocol: first choose each method's adapter scale "
        "(LoRA: alpha) on val200 from runs on train800 (seed 0), then train every seed with it",
    )
    p.add_argument(
        "--tune-only",
        action="store_true",
        help="--tune's tuning runs only: record each choice and write OUT/tuning/choices.md, then stop "
        "(a later --tune call trains the real runs with those choices)",
    )
    p.add_argument(
        "--tune-grid",
        action="append",
        metavar="OPTION=V,V,...",
        help="the values --tune tries for one option, in place of the built-in grid (scale: 0.1,1,4,16; "
        "lora_alpha: 8,32,128); repeat it for the other option",
    )
    p.add_argument(
        "--tune-each",
        action="append",
        metavar="FIELD",
        help="--tune chooses apart for each value of this Pear option that a method's name sets, e.g. "
        "prune_ratio: pear@prune_ratio=0.9 gets a choice of its own in place of pear's (its ablations "
        "pear@prune_ratio=0.9@... use that choice); comma-separated or repeated",
    )
    _add_scheduler_arguments(p.add_argument_group("on a cluster's scheduler (one run per job-array task)"))
    p.set_defaults(func=cmd_suite)


def _add_scheduler_arguments(sched) -> None:
    """`pear suite`'s flags for a cluster's job array: --list, --index, --aggregate, --emit-slurm."""
    sched.add_argument("--list", action="store_true", help="print the runs with their indices and states")
    sched.add_argument(
        "--index",
        type=int,
        default=None,
        help="train only run I (e.g. --index "
        "$SLURM_ARRAY_TASK_ID); with --tune the tuning runs come first, and a tuned run refuses to "
        "start until its task's tuning runs have finished. Holds --out shared: indices run side by "
        "side, not beside a whole suite of the same --out",
    )
    sched.add_argument(
        "--aggregate",
        action="store_true",
        help="write the tables from whatever has finished and name the runs that have not",
    )
    sched.add_argument(
        "--emit-slurm",
        default=None,
        metavar="FILE",
        help="write an sbatch --array script that runs every index of this suite",
    )
    sched.add_argument(
        "--slurm-gres",
        default="gpu:1",
        metavar="GRES",
        help="the script's #SBATCH --gres, e.g. gpu:a100:1; '' for none (default gpu:1)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("once")
    try:
        return args.func(args)
    except BackboneMismatch as exc:
        print(f"pear: error: {exc}; on the command line, pass the same --weights used for training", file=sys.stderr)
        return 2
    except PearError as exc:
        print(f"pear: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pear: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pear suite --list | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails no more
        return 141  # what a shell reports for SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
