"""Where one `pear train` command spends its time: the data pipeline (decoding, resizing,
batching) against forward, backward and the optimizer.

    OMP_NUM_THREADS=1 python benchmarks/pipeline_profile.py --data /tmp/data --out /tmp/run \\
        --stats /tmp/run.prof -- --epochs 3 --batch-size 32 --workers 0

Runs `pear train` (the built-in ViT, `pear`, by default on the built-in Fashion-MNIST task, which
is built into --data when absent; anything after `--` goes to `pear train`, after these) in this process under
cProfile, timed in this process's CPU seconds (time.process_time): on a shared machine, the
time spent waiting for a core is then no function's, and the shares stay comparable between
runs. Prints a markdown table of the command's parts, each a cumulative time from the
profile: the one-time preprocessing of every split into the in-memory cache (PNG decode,
resize, ToTensor, Normalize), the per-step batching from that cache, forward (with the
loss), backward, the optimizer step, pruning, the test evaluation, and the rest (the model
build, the run folder, logging). Python's start-up and the imports (torch, timm) are done
before the profile starts: they are no part of the pipeline. cProfile's own overhead falls mostly
on Python-level code (module calls, the image loop), so read the shares as approximate.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import sys
import time
from pathlib import Path

BASE = ["--backbone", "pear_vit_tiny6_patch4_32", "--method", "pear", "--img-size", "32", "--no-progress"]
BUILTIN_TASK = "fashion_mnist"


def _where(fn) -> tuple[str, str]:
    """(file, name) of a function the profile timed: Pear's own are named by their code object, so
    a module that moves needs no edit here; torch's and torchvision's by (end of their path, name)."""
    if not callable(fn):
        return fn
    code = inspect.unwrap(fn).__code__  # under a decorator (torch.no_grad), the function itself
    return code.co_filename, code.co_name


def _key(stats: dict, fn) -> tuple:
    """The profile's entry for `fn` (a function, or (end of its file's path, name)): the largest if several."""
    file_end, name = _where(fn)
    keys = [k for k in stats if k[0].endswith(file_end) and k[2] == name]
    if not keys:
        raise SystemExit(f"pipeline_profile.py: the profile has no {file_end}:{name}")
    return max(keys, key=lambda k: stats[k][3])


def _cum(stats: dict, fn) -> float:
    return stats[_key(stats, fn)][3]


def _edge(stats: dict, caller: tuple, fn) -> float:
    """Cumulative seconds of `fn` when called from `caller`."""
    return stats[_key(stats, fn)][4].get(caller, (0, 0, 0, 0.0))[3]


# torch's and torchvision's functions the table names, by the end of their path.
_TV = "transforms/functional.py"
_FORWARD = ("nn/modules/module.py", "_wrapped_call_impl")
_BACKWARD = ("torch/_tensor.py", "backward")
_OPTIMIZER = ("torch/optim/optimizer.py", "wrapper")


def parts(stats: dict) -> list[tuple[str, float]]:
    """(part, CPU seconds) of the profiled command; the last row is the total."""
    from pear.harness.datasets import images, vtab
    from pear.harness.run import batches, train

    epoch, evaluate = _key(stats, train._train_epoch), _key(stats, batches.evaluate)
    cache = _cum(stats, batches.Split.__init__)  # both splits
    resize, normalise, to_tensor = (_cum(stats, (_TV, n)) for n in ("resize", "normalize", "to_tensor"))
    load = _cum(stats, images.load_image)
    rows = [
        ("data, once: list files read, every image path resolved and checked", _cum(stats, vtab.read_list)),
        ("data, once: PNG open + decode + RGB (PIL)", load - resize - normalise - to_tensor),
        ("data, once: bicubic resize to 32 px", resize),
        ("data, once: ToTensor + Normalize", to_tensor + normalise),
        ("data, once: DataLoader, collate, concatenation into the cache", cache - load),
        ("data, every step: batches indexed from the cache (train + test)",
         _edge(stats, epoch, batches.Split.loader) + _edge(stats, evaluate, batches.Split.loader)),
        ("train steps: forward + loss", _edge(stats, epoch, _FORWARD)),
        ("train steps: backward", _edge(stats, epoch, _BACKWARD)),
        ("train steps: optimizer (AdamW)", _edge(stats, epoch, _OPTIMIZER)),
        ("pruning (plan, prune and share, merge)", _cum(stats, train._prune)),
        ("test evaluation: forward", _edge(stats, evaluate, _FORWARD)),
    ]
    total = max(v[3] for v in stats.values())
    rows.append(("the rest: model build, run folder, checkpoint, logging",
                 total - sum(s for _, s in rows)))
    return [*rows, ("total", total)]


def table(rows: list[tuple[str, float]], steps: int) -> str:
    """The markdown table of `parts`, with the data pipeline's share and the per-step figures under it."""
    total = rows[-1][1]
    data = sum(s for name, s in rows if name.startswith("data"))
    loop = sum(s for name, s in rows if name.startswith(("train steps", "data, every")))
    batching = next(s for name, s in rows if name.startswith("data, every"))
    lines = ["| part | CPU s | share |", "| --- | --- | --- |"]
    lines += [f"| {name} | {s:.2f} | {100 * s / total:.1f}% |" for name, s in rows]
    lines += ["", (f"Data pipeline, all of it: {data:.2f} s, {100 * data / total:.1f}% of the command. "
                   f"Training loop ({steps} steps): {loop:.2f} s, {1000 * loop / steps:.0f} ms a step, of which "
                   f"batching {100 * batching / loop:.2f}%.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data root (the built-in task is built there if absent)")
    ap.add_argument("--out", type=Path, required=True, help="run folder for `pear train` (must not exist)")
    ap.add_argument("--task", default=BUILTIN_TASK, help=f"task folder under --data (default {BUILTIN_TASK})")
    ap.add_argument("--stats", type=Path, default=None, help="also write the raw cProfile stats here")
    ap.add_argument("train_args", nargs="*", help="more `pear train` options, after --")
    args = ap.parse_args(argv)
    from pear.cli import main as pear_main
    from pear.harness.builders import build_dataset

    if args.task == BUILTIN_TASK and not (args.data / BUILTIN_TASK).is_dir():
        build_dataset(BUILTIN_TASK, args.data)
    train = ["train", "--data", str(args.data), "--task", args.task, "--out", str(args.out), *BASE, *args.train_args]
    prof = cProfile.Profile(time.process_time)
    wall = time.perf_counter()
    prof.enable()
    code = pear_main(train)
    prof.disable()
    wall = time.perf_counter() - wall
    if code:
        return code
    if args.stats is not None:
        prof.dump_stats(args.stats)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    steps = _key(stats, _BACKWARD)
    print(f"`pear train {' '.join(train[1:])}`: wall {wall:.1f} s, process CPU {max(v[3] for v in stats.values()):.1f} s")
    print()
    print(table(parts(stats), stats[steps][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
