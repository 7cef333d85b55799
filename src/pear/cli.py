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
import shlex
import sys
import warnings
from dataclasses import fields


from .errors import PearError
from .harness.files import read_mapping

# Recipe defaults live in TrainConfig; argparse defaults stay None so YAML (-c) values
# apply unless a flag is given, and the dataclass supplies the rest.
_TRAIN_FLAGS = {
    "data": (str, "VTAB-format data root"),
    "task": (str, "task folder name under --data"),
    "out": (str, "run folder to create"),
    "backbone": (str, "timm model name (default tf_efficientnet_lite0 with built-in ImageNet weights)"),
    "weights": (str, "local pretrained weights: .safetensors, .pth or Google .npz"),
    "model_kwargs": (str, "JSON object of extra timm.create_model arguments, e.g. '{\"depth\": 2}'"),
    "method": (str, "linear | full | adapter | pear | prune | lora"),
    "img_size": (int, "input resolution (default 224)"),
    "epochs": (int, "training epochs (default 100)"),
    "warmup_epochs": (int, "linear LR warm-up epochs (default 10%% of epochs)"),
    "batch_size": (int, "global batch size (default 64)"),
    "lr": (float, "AdamW learning rate (default 1e-3)"),
    "wd": (float, "AdamW weight decay (default 1e-4)"),
    "seed": (int, "random seed (default 0)"),
    "select_on": (str, "'val200': train on train800 and test the best val200 epoch"),
    "adapter": (str, "adapter kind: parallel | sequential | lora"),
    "rank": (int, "adapter bottleneck width r (default 8)"),
    "scale": (float, "adapter output scale s (default 0.1)"),
    "prune_ratio": (float, "share of adapter parameters to prune (default 0.5)"),
    "prune_scope": (str, "where the ratio applies: global (paper) | group (ours: within each set of "
                         "shape-compatible positions, e.g. a CNN stage, so every pruned position can share)"),
    "share": (str, "share policy: rank | nearest | top1 | none"),
    "knowledge": (str, "knowledge checkpoint: none | merge | frozen"),
    "importance": (str, "importance: taylor | magnitude | gradient | output | random"),
    "prune_epoch": (int, "epoch at which to prune (default: end of warm-up)"),
    "device": (str, "auto | cpu | cuda | cuda:N"),
    "workers": (int, "data loader worker processes (default 2)"),
    "cache_gb": (float, "keep preprocessed images in memory up to this many GB (default 4)"),
}
_TRAIN_SWITCHES = {
    "compile": "torch.compile the model (wrapped again after pruning; a few graphs, never one per step)",
    "deterministic": "torch.use_deterministic_algorithms(True)",
    "overwrite": "replace an existing run folder",
    "resume": "continue the run in --out from its last complete epoch",
}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML file of training options (flags override it)")
    g = p.add_argument_group("run")
    for name, (typ, help_) in _TRAIN_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    for name, help_ in _TRAIN_SWITCHES.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, action="store_true", default=None, help=help_)
    g.add_argument("--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on with CUDA, off on CPU)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def _train_config(args: argparse.Namespace):
    from .harness.train import TrainConfig

    values: dict = {}
    if args.config:
        loaded = read_mapping(args.config, "config file")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    known = {f.name for f in fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in known and v is not None})
    if isinstance(values.get("model_kwargs"), str):  # the flag, or a YAML string
        values["model_kwargs"] = _model_kwargs(values["model_kwargs"])
    missing = [k for k in ("data", "task", "out") if not values.get(k)]
    if missing:
        raise PearError(f"pear train needs {', '.join('--' + m for m in missing)} (or set them in -c CONFIG)")
    try:
        return TrainConfig.from_dict(values)
    except TypeError as exc:
        raise PearError(f"bad training options: {exc}") from None


def _model_kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PearError(f"--model-kwargs {text!r} is not valid JSON ({exc}); expected an object such as "
                        "'{\"depth\": 2, \"embed_dim\": 32}'") from None
    if not isinstance(value, dict):
        raise PearError(f"--model-kwargs {text!r} must be a JSON object of timm.create_model arguments")
    return value


def cmd_train(args) -> int:
    from .harness.train import train

    metrics = train(_train_config(args))
    if metrics is not None:
        print(json.dumps({k: metrics[k] for k in ("task", "method", "test_acc", "trainable_params",
                                                  "stored_bytes")}, indent=1))
    return 0


def cmd_eval(args) -> int:
    from .harness.runs import evaluate_run

    result = evaluate_run(args.run, device=args.device)
    print(json.dumps(result, indent=1))
    return 0


def cmd_data(args) -> int:
    from .harness.builders import build_dataset

    path = build_dataset(args.name, args.out, seed=args.seed, source=args.source, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from .harness.demo import run_demo

    run_demo(out=args.out, data=args.data, epochs=args.epochs, overwrite=args.overwrite)
    return 0


def cmd_inspect(args) -> int:
    from .harness.inspection import inspect_path, render_table

    info = inspect_path(args.path, plot=args.plot)
    print(json.dumps(info, indent=1) if args.json else render_table(info))
    return 0


def cmd_predict(args) -> int:
    from .harness.predict import predict, render_predictions

    results = predict(args.ckpt, args.images, backbone=args.backbone, weights=args.weights, top_k=args.top_k,
                      batch_size=args.batch_size, device=args.device)
    print(json.dumps(results, indent=1) if args.json else render_predictions(results))
    return 0


def cmd_suite(args) -> int:
    from .harness.suite import run_suite

    run_suite(data=args.data, tasks=args.tasks.split(","), methods=args.methods.split(","),
              seeds=[int(s) for s in args.seeds.split(",")], out=args.out, base=_suite_base(args),
              devices=args.devices.split(",") if args.devices else None, build_missing=args.build,
              command=shlex.join(sys.argv))
    return 0


def _suite_base(args) -> dict:
    base: dict = {}
    if args.config:
        base.update(read_mapping(args.config, "config file"))
    for k in ("backbone", "weights", "img_size", "epochs", "batch_size", "lr", "warmup_epochs", "workers"):
        v = getattr(args, k)
        if v is not None:
            base[k] = v
    return base


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pear", description="Pear: pruning and sharing adapters for "
                                     "parameter-efficient fine-tuning of vision models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one (task, method) run")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="recompute a run's test accuracy from its saved checkpoint")
    p.add_argument("--run", required=True, help="run folder written by pear train")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="built-in datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="write a built-in real dataset in VTAB-1k format")
    b.add_argument("name", help="fashion_mnist | sprites_loc | sprites_ori")
    b.add_argument("--out", required=True, help="data root to write into")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--source", default=None, help="folder of Fashion-MNIST IDX files (default: Debian's)")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_data)

    p = sub.add_parser("demo", help="the built-in default: EfficientNet-Lite0 + Fashion-MNIST 1k, method pear")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data", default="data")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", help="per-position importance, pruning and sharing, stored bytes")
    p.add_argument("path", help="run folder or checkpoint folder")
    p.add_argument("--plot", default=None, help="write a PNG of the pruning map")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("predict", help="top-k classes for images with a task checkpoint")
    p.add_argument("--ckpt", required=True, help="task checkpoint folder (RUN/checkpoint)")
    p.add_argument("--backbone", default=None, help="timm name (default: the checkpoint's)")
    p.add_argument("--weights", default=None, help="the backbone weights used in training")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("suite", help="run every (task, method, seed); resumable; writes results.csv/.md + plot")
    p.add_argument("--data", required=True)
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--methods", required=True, help="comma-separated: linear,full,adapter,prune,pear,lora and "
                   "ablations such as pear-share-nearest, pear-kc-frozen, pear-imp-random, pear-r0.75, pear-scope-group")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", required=True)
    p.add_argument("-c", "--config", default=None, help="YAML of training options shared by all runs")
    p.add_argument("--backbone", default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--img-size", dest="img_size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--devices", default=None, help="comma-separated devices, one run per device at a time "
                   "(e.g. cuda:0,cuda:1)")
    p.add_argument("--build", action="store_true", help="build missing built-in datasets into --data first")
    p.set_defaults(func=cmd_suite)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("once")
    try:
        return args.func(args)
    except PearError as exc:
        print(f"pear: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pear: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
