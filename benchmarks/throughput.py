"""Training throughput and memory of each method on one backbone, with synthetic data.

    python benchmarks/throughput.py --backbone vit_base_patch16_224 --img-size 224 \\
        --batch-size 64 --device cuda --bf16 --compile --tracker --out results/vitb.md

One step is forward + backward + AdamW step on a fixed random batch, exactly as
`pear.harness.train` builds the model and optimizer (the backbone is randomly
initialised: speed does not depend on the weights). `pear` is measured after pruning:
fake importance scores, then prune-and-share at ratio 0.5 with rank sharing and the
merge knowledge checkpoint. On a busy machine single measurements are noisy, so every
method runs a few steps in turn, in rotating order, for several rounds, and the table
reports the median step time with its interquartile range.
On CUDA the steps of a turn run back to back with no host synchronisation, as in
training, and CUDA events time each one (so a step that waits on the host counts that
wait). `input-grad` (not in the default set) is the ceiling for adapter methods: the
frozen backbone's forward and its backward down to block 0 (whose first parameter
alone trains), with no adapter and no other weight gradient.

Memory: on CUDA, *peak MB* is measured with torch.cuda.max_memory_allocated (the
method's resident tensors plus the peak growth during its steps, so the other
methods' models alive in the same process do not count). *Tensor MB* is counted, on
every device: weights, buffers, gradients, AdamW state and the activations autograd
saves for backward (in eager mode), without temporaries. The CPU has no per-method
allocator statistics, so there only the process's peak RSS is given, for the whole run.

--precisions: each method once per precision setting, all in the same rotation, so their
ratios are measured side by side: `fp32` (fused SDPA attention, the CPU default before bf16
was chosen automatically), `bf16-sdpa`, `bf16-matmul` (timm's explicit-matmul attention),
`bf16-matmul-frozen` (also the frozen Linear/Conv weights held in bf16) and `auto` (what
training picks on this device: pear.harness.precision.choose). Without it, one setting:
--amp / --attention / --frozen-bf16, defaulting to `auto`.
--ceiling: the matmul ceiling of this device in the same run (GFLOP/s of a 2048x2048 bf16
and fp32 matmul, and of the step's largest matmul shape), and each step's FLOPs counted by
torch.utils.flop_counter, so the table says what fraction of the bf16 ceiling a step reaches.

--compile: each model is compiled once (`pear` after pruning) through a backend that
counts the graphs handed to inductor; the timed steps must compile nothing more.
--tracker: the Taylor ImportanceTracker's cost, as `adapter` with and without
`tracker.update()` after every backward.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pear import ImportanceTracker, PearConfig, freeze_norm_stats, make_plan, prune_and_share
from pear.adapters import pear_state, positions
from pear.errors import PearError
from pear.harness.batches import resolve_device
from pear.harness.methods import build_model
from pear.harness.options import default
from pear.harness.precision import Precision, apply_attention, choose, hold_frozen_bf16, processor_name
from pear.harness.train import make_optimizer

METHODS = ("linear", "full", "adapter", "pear", "lora", "input-grad")
DEFAULT_METHODS = METHODS[:5]
MB = 2**20
# Named precision settings for --precisions: (bf16 autocast, attention path, frozen weights in bf16).
PRECISIONS = {"fp32": (False, "sdpa", False), "bf16-sdpa": (True, "sdpa", False),
              "bf16-matmul": (True, "matmul", False), "bf16-matmul-frozen": (True, "matmul", True)}


@dataclass
class Bench:
    name: str
    model: nn.Module
    fwd: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    precision: Precision
    tracker: ImportanceTracker | None = None
    compiler: "CountingBackend | None" = None
    times: list[float] = field(default_factory=list)
    peak_growth: int = 0
    graphs_warmup: int = 0
    label: str = ""  # the precision setting's name, with --precisions

    @property
    def amp(self) -> bool:
        return self.precision.amp

    @property
    def row_name(self) -> str:
        return f"{self.name} [{self.label}]" if self.label else self.name


class CountingBackend:
    """torch.compile backend: counts every graph dynamo hands over, then compiles it
    with inductor. A count that grows during the timed steps means recompilation."""

    def __init__(self) -> None:
        self.graphs = 0
        self.inductor = torch._dynamo.lookup_backend("inductor")

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.inductor(gm, example_inputs)


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"depth\": 2}'")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("model")
    g.add_argument("--backbone", default="vit_base_patch16_224", help="timm model name")
    g.add_argument("--weights", default=None, help="optional weights file (default: random init)")
    g.add_argument("--model-kwargs", default={}, type=json_object,
                   help='JSON object of timm.create_model arguments, e.g. \'{"depth": 2}\'')
    g.add_argument("--num-classes", type=int, default=100)
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}; input-grad is the frozen backbone "
                        "alone, forward and backward down to block 0 (no adapter, no weight "
                        "gradient but one norm scale): the ceiling any adapter method on this backbone can reach")
    g = p.add_argument_group("measurement")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--img-size", type=int, default=224)
    g.add_argument("--steps", type=int, default=20, help="timed steps per method, spread over the rounds")
    g.add_argument("--rounds", type=int, default=5, help="turns each method takes, in rotating order")
    g.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 avoids thread contention on a shared machine")
    g.add_argument("--bf16", "--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: as training chooses: on with CUDA, and for transformers on a CPU with AMX/AVX512-BF16)")
    g.add_argument("--frozen-bf16", action="store_true",
                   help="hold the frozen backbone's Linear/Conv weights in bf16 (norms, adapters and head stay "
                        "fp32); implies --bf16")
    g.add_argument("--attention", choices=("auto", "sdpa", "matmul"), default="auto",
                   help="timm attention path: fused SDPA or explicit matmuls (default: as training chooses)")
    g.add_argument("--precisions", default=None,
                   help=f"comma-separated settings measured side by side: {', '.join([*PRECISIONS, 'auto'])}")
    g.add_argument("--ceiling", action="store_true",
                   help="also measure the matmul ceiling (bf16 and fp32 GFLOP/s) and count each step's FLOPs")
    g.add_argument("--compile", action="store_true", help="torch.compile each model once")
    g.add_argument("--tracker", action="store_true", help="also time adapter with ImportanceTracker.update()")
    g.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile 5 more steps of each method (torch.profiler) and report its "
                        "N most expensive operations and kernels")
    g.add_argument("--out", default=None, help="write the results to FILE.md or FILE.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; expected a subset of {', '.join(METHODS)}")
    if args.tracker and "adapter" not in args.methods:
        p.error("--tracker times the adapter method; keep 'adapter' in --methods")
    if args.frozen_bf16:
        if args.amp is False:
            p.error("--frozen-bf16 needs bf16 autocast (bf16 weights meet fp32 activations otherwise)")
        args.amp = True
    if args.precisions is not None:
        args.precisions = args.precisions.split(",")
        bad = sorted(set(args.precisions) - {*PRECISIONS, "auto"})
        if bad:
            p.error(f"--precisions: unknown {bad}; expected a subset of {', '.join([*PRECISIONS, 'auto'])}")
        if args.amp is not None or args.frozen_bf16 or args.attention != "auto":
            p.error("--precisions names each setting; leave out --amp, --frozen-bf16 and --attention")
    if args.out and Path(args.out).suffix not in (".md", ".json"):
        p.error("--out must end in .md or .json")
    if min(args.steps, args.rounds, args.batch_size) < 1 or min(args.warmup, args.profile) < 0:
        p.error("--steps, --rounds and --batch-size must be positive, --warmup and --profile non-negative")
    if args.compile and args.warmup < 1:
        p.error("--compile needs --warmup >= 1, so that compiling is not timed")
    return args


def precision_settings(args, device: torch.device) -> list[tuple[str, "Callable[[nn.Module], Precision]"]]:
    """(label, model -> precision) per setting to measure: the --precisions list, or the one the
    flags give (training's automatic choice depends on the model: on the CPU a CNN trains in bf16
    only where it has AVX512-BF16 without AMX)."""
    if args.precisions:
        return [(name, (lambda model: choose(None, device, model)) if name == "auto"
                 else (lambda model, name=name: Precision(*PRECISIONS[name], name))) for name in args.precisions]

    def from_flags(model: nn.Module) -> Precision:
        auto = choose(args.amp, device, model)
        amp = auto.amp or args.frozen_bf16
        attention = args.attention if args.attention != "auto" else choose(amp, device, model).attention
        frozen = args.frozen_bf16 or (auto.frozen_bf16 and args.attention == "auto" and args.amp is None)
        return Precision(amp, attention, frozen, auto.reason)
    return [("", from_flags)]


def make_bench(method: str, args, device: torch.device, resolve: "Callable[[nn.Module], Precision]",
               label: str = "") -> Bench:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no pretrained weights given")
        model, _, _ = build_model(args.backbone, args.num_classes, "linear" if method == "input-grad" else method,
                                  PearConfig(), weights=args.weights, img_size=args.img_size,
                                  model_kwargs=args.model_kwargs, device=device)
    if method == "pear":
        # Fake scores: how adapters are ranked does not change the cost of the pruned model.
        g = torch.Generator().manual_seed(0)
        scores = {name: torch.rand((), generator=g).item() for name in positions(model)}
        prune_and_share(model, make_plan(scores, pear_state(model).config, model))
    precision = resolve(model)
    apply_attention(model, precision.attention)
    if precision.frozen_bf16:
        hold_frozen_bf16(model)
    model.train()
    freeze_norm_stats(model)
    compiler = CountingBackend() if args.compile else None
    fwd = torch.compile(model, backend=compiler) if compiler else model
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)
    if method == "input-grad":
        # Backward must run through every block, as it does for adapters in block 0, but not
        # into the stem or the image, which no adapter method needs: the first parameter of
        # block 0 (a norm scale on a ViT) trains, and nothing before it.
        named = list(model.named_parameters())
        next((p for n, p in named if n.startswith("blocks.0.")), named[0][1]).requires_grad_(True)
    return Bench(method, model, fwd, make_optimizer(model, default("lr"), default("wd")), x, y, precision,
                 compiler=compiler, label=label)


def step(b: Bench) -> None:
    b.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(b.x.device.type, dtype=torch.bfloat16, enabled=b.amp):
        loss = nn.functional.cross_entropy(b.fwd(b.x).float(), b.y)
    loss.backward()
    if b.tracker is not None:
        b.tracker.update()
    b.optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(b: Bench, n: int, device: torch.device) -> None:
    cuda = device.type == "cuda"
    if cuda:
        # Steady state, as in training: no host sync between steps; CUDA events mark where
        # each step starts on the GPU, so a step's time includes any wait for the host.
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        events[0].record()
        for i in range(n):
            step(b)
            events[i + 1].record()
        sync(device)
        b.times += [a.elapsed_time(e) / 1e3 for a, e in zip(events, events[1:])]
        b.peak_growth = max(b.peak_growth, torch.cuda.max_memory_allocated(device) - before)
    else:
        for _ in range(n):
            t0 = time.perf_counter()
            step(b)
            b.times.append(time.perf_counter() - t0)
    # Gradients are then allocated inside the next turn, where its peak sees them.
    b.optimizer.zero_grad(set_to_none=True)


def profile_table(b: Bench, device: torch.device, rows: int) -> str:
    """torch.profiler over 5 steps: the `rows` operations and kernels with the most self time
    on the device (GPU kernels on CUDA, operators on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            step(b)
        sync(device)
    b.optimizer.zero_grad(set_to_none=True)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(b: Bench) -> int:
    """Weights, buffers, optimizer state and the batch: what stays allocated between steps."""
    state = [t for s in b.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return tensor_bytes([*b.model.parameters(), *b.model.buffers(), *state, b.x, b.y])


def saved_activation_bytes(b: Bench) -> int:
    """Bytes autograd keeps for backward in one eager forward, each storage once,
    leaving out the parameters and the input batch (counted as resident)."""
    resident = {t.untyped_storage().data_ptr() for t in [*b.model.parameters(), b.x]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in resident:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(b.x.device.type, dtype=torch.bfloat16, enabled=b.amp):
            loss = nn.functional.cross_entropy(b.model(b.x).float(), b.y)
    del loss
    return sum(saved.values())


def counted_bytes(b: Bench) -> int:
    grads = tensor_bytes(p for p in b.model.parameters() if p.requires_grad)
    return resident_bytes(b) - tensor_bytes([b.x, b.y]) + grads + saved_activation_bytes(b)


def quantiles(times: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return q1, q2, q3


def machine(device: torch.device) -> dict:
    cpu = processor_name()
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    try:
        import timm
        import peft

        info.update(timm=timm.__version__, peft=peft.__version__)
    except ImportError:
        pass
    return info


def matmul_gflops(rows: int, inner: int, cols: int, dtype: torch.dtype, device: torch.device,
                  reps: int = 10) -> float:
    """GFLOP/s of one (rows x inner) @ (inner x cols) matmul: the median of `reps` timed calls."""
    a = torch.randn(rows, inner, device=device).to(dtype)
    b = torch.randn(inner, cols, device=device).to(dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * rows * inner * cols / statistics.median(times) / 1e9


def step_flops(b: Bench) -> tuple[int, tuple[int, int, int]]:
    """FLOPs of one training step (forward + backward, as torch.utils.flop_counter counts
    matmuls, convolutions and attention) and the step's largest Linear as (rows, in, out)."""
    from torch.utils.flop_counter import FlopCounterMode

    biggest = [(0, 0, 0)]

    def hook(mod, args, _out):
        rows = args[0].numel() // args[0].shape[-1]
        if mod.in_features * mod.out_features > biggest[0][1] * biggest[0][2]:
            biggest[0] = (rows, mod.in_features, mod.out_features)

    hooks = [m.register_forward_hook(hook) for m in b.model.modules() if isinstance(m, nn.Linear)]
    try:
        with FlopCounterMode(display=False) as counter:
            step(b)
    finally:
        for h in hooks:
            h.remove()
    b.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops(), biggest[0]


def ceiling(benches: list[Bench], device: torch.device) -> dict:
    """The device's matmul ceiling, measured now, and each bench's FLOPs per step."""
    flops = {b.row_name: step_flops(b) for b in benches}
    rows, inner, cols = max((shape for _, shape in flops.values()), key=lambda s: s[0] * s[1] * s[2])
    out = {"square_2048": {}, "step_shape": {"rows": rows, "inner": inner, "cols": cols}}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        out["square_2048"][name] = matmul_gflops(2048, 2048, 2048, dtype, device)
        out["step_shape"][name] = matmul_gflops(rows, inner, cols, dtype, device)
    out["step_gflop"] = {name: f / 1e9 for name, (f, _) in flops.items()}
    return out


def run(args) -> dict:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings_list = precision_settings(args, device)
    benches = [make_bench(m, args, device, resolve, label) for label, resolve in settings_list for m in args.methods]
    if args.tracker:
        for adapter in [b for b in benches if b.name == "adapter"]:
            benches.append(Bench("adapter+tracker", adapter.model, adapter.fwd, adapter.optimizer, adapter.x,
                                 adapter.y, adapter.precision, tracker=ImportanceTracker(adapter.model, "taylor"),
                                 compiler=adapter.compiler, label=adapter.label))
    for b in benches:
        for _ in range(args.warmup):
            step(b)
        b.optimizer.zero_grad(set_to_none=True)
        if b.compiler:
            b.graphs_warmup = b.compiler.graphs
    per_round = math.ceil(args.steps / args.rounds)
    for r in range(args.rounds):
        order = benches[r % len(benches):] + benches[:r % len(benches)]
        for b in order:
            timed_steps(b, per_round, device)

    results = []
    for b in benches:
        q1, median, q3 = quantiles(b.times)
        row = {"method": b.name, "precision": b.label or None, "amp_bf16": b.amp, "attention": b.precision.attention,
               "frozen_bf16": b.precision.frozen_bf16,
               "trainable_params": sum(p.numel() for p in b.model.parameters() if p.requires_grad),
               "step_ms_median": 1e3 * median, "step_ms_q1": 1e3 * q1, "step_ms_q3": 1e3 * q3,
               "images_per_second": args.batch_size / median, "timed_steps": len(b.times),
               "tensor_mb_counted": counted_bytes(b) / MB}
        if device.type == "cuda":
            row["peak_mb_measured"] = (resident_bytes(b) + b.peak_growth) / MB
        if b.compiler:
            row["graphs_compiled_warmup"] = b.graphs_warmup
            row["graphs_compiled_timed"] = b.compiler.graphs - b.graphs_warmup
        results.append(row)
    for r in results:
        ref = next((x["step_ms_median"] for x in results if x["method"] == "adapter"
                    and x["precision"] == r["precision"]), None)
        r["step_time_vs_adapter"] = r["step_ms_median"] / ref if ref else None
    if len(settings_list) > 1:
        _speedups(benches, results, per_round)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "argv")}
    settings.update(amp_bf16=benches[0].amp if len(settings_list) == 1 else None, steps_per_round=per_round,
                    precision_reason=choose(None, device, benches[0].model).reason)
    out = {"machine": machine(device), "command": shlex.join(["python", "benchmarks/throughput.py", *args.argv]),
           "settings": settings, "results": results}
    if args.ceiling:
        out["ceiling"] = ceiling(benches, device)
        for b, r in zip(benches, results):
            r["step_gflop"] = out["ceiling"]["step_gflop"][b.row_name]
            r["achieved_gflops"] = r["step_gflop"] / (r["step_ms_median"] / 1e3)
            r["share_of_bf16_ceiling"] = r["achieved_gflops"] / out["ceiling"]["square_2048"]["bf16"]
    if args.profile:
        out["profiles"] = {b.row_name: profile_table(b, device, args.profile) for b in benches}
    if device.type == "cpu":
        out["machine"]["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.tracker:
        adapter = next(b for b in benches if b.name == "adapter")
        with_t, without = (next(r["step_ms_median"] for r in results if r["method"] == m
                                and r["precision"] == (adapter.label or None)) for m in ("adapter+tracker", "adapter"))
        out["tracker_overhead"] = with_t / without
        # The A/B step ratio is as noisy as the steps; timing update() alone isolates its cost.
        tb = next(b for b in benches if b.name == "adapter+tracker")
        step(tb)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(50):
            tb.tracker.update()
        sync(device)
        out["tracker_update_ms"] = 1e3 * (time.perf_counter() - t0) / 50
        out["tracker_update_share"] = out["tracker_update_ms"] / without
    return out


def _speedups(benches: list[Bench], results: list[dict], per_round: int) -> None:
    """With several precision settings: each row's speed-up over the first setting's row of the
    same method, as the ratio of medians and as its range over the rounds (round by round,
    the two ran minutes apart at most, so the machine's load changed little between them)."""
    first = benches[0].label
    for b, r in zip(benches, results):
        ref = next(x for x in benches if x.name == b.name and x.label == first)
        ref_row = results[benches.index(ref)]
        r["speedup_vs_" + first.replace("-", "_")] = ref_row["step_ms_median"] / r["step_ms_median"]
        pairs = [statistics.median(ref.times[i:i + per_round]) / statistics.median(b.times[i:i + per_round])
                 for i in range(0, len(b.times), per_round)]
        r["speedup_round_min"], r["speedup_round_max"] = min(pairs), max(pairs)


def markdown(res: dict) -> str:
    s, m = res["settings"], res["machine"]
    cuda = m["gpu"] is not None
    compiled = s["compile"]
    lines = [f"# Training throughput: {s['backbone']}", "",
             f"- Machine: {m['platform']}; CPU {m['cpu']} ({m['cpu_threads']} torch threads); "
             f"GPU {m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, timm {m.get('timm')}, "
             f"peft {m.get('peft')}",
             f"- Command: `{res['command']}`",
             f"- Batch {s['batch_size']} at {s['img_size']} px on {m['device']}; torch.compile {compiled}; "
             f"{s['warmup']} warm-up steps, then {s['rounds']} rounds of {s['steps_per_round']} timed steps per "
             f"row in rotating order",
             f"- Automatic choice on this device: {s['precision_reason']}",
             ""]
    rows = res["results"]
    speed_key = next((k for k in rows[0] if k.startswith("speedup_vs_")), None)
    header = ["method", "bf16 autocast", "attention", "frozen bf16", "trainable params", "step ms (median)",
              "IQR ms", "images/s", "vs adapter", "tensor MB (counted)"]
    header += [f"speed-up vs {speed_key[len('speedup_vs_'):]} (rounds)"] if speed_key else []
    header += ["GFLOP/step", "GFLOP/s", "of bf16 ceiling"] if "ceiling" in res else []
    header += ["peak MB (measured)"] if cuda else []
    header += ["graphs compiled (warm-up / timed)"] if compiled else []
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [r["method"] + (f" [{r['precision']}]" if r["precision"] else ""), str(r["amp_bf16"]),
                 r["attention"], str(r["frozen_bf16"]), f"{r['trainable_params']:,}", f"{r['step_ms_median']:.1f}",
                 f"{r['step_ms_q1']:.1f}–{r['step_ms_q3']:.1f}", f"{r['images_per_second']:.1f}",
                 "–" if r["step_time_vs_adapter"] is None else f"{r['step_time_vs_adapter']:.2f}×",
                 f"{r['tensor_mb_counted']:.1f}"]
        if speed_key:
            cells.append(f"{r[speed_key]:.2f}× ({r['speedup_round_min']:.2f}–{r['speedup_round_max']:.2f})")
        if "ceiling" in res:
            cells += [f"{r['step_gflop']:.1f}", f"{r['achieved_gflops']:.0f}", f"{100 * r['share_of_bf16_ceiling']:.0f}%"]
        cells += [f"{r['peak_mb_measured']:.1f}"] if cuda else []
        cells += [f"{r['graphs_compiled_warmup']} / {r['graphs_compiled_timed']}"] if compiled else []
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if "ceiling" in res:
        c = res["ceiling"]
        sh = c["step_shape"]
        lines.append(f"Matmul ceiling, measured in this run: 2048×2048×2048 bf16 {c['square_2048']['bf16']:.0f} GFLOP/s, "
                     f"fp32 {c['square_2048']['fp32']:.0f} GFLOP/s; the step's largest matmul "
                     f"({sh['rows']}×{sh['inner']} @ {sh['inner']}×{sh['cols']}) bf16 {sh['bf16']:.0f}, fp32 "
                     f"{sh['fp32']:.0f} GFLOP/s. *Of bf16 ceiling*: the step's counted FLOPs (forward + backward, "
                     f"torch.utils.flop_counter) per second over the 2048² bf16 figure.")
    if speed_key:
        lines.append("*Speed-up*: the first setting's median step time over this row's, for the same method; "
                     "in brackets its range over the rounds, each round's two medians taken minutes apart at most.")
    lines.append("*vs adapter*: median step time over `adapter`'s in the same setting (lower is faster). *Tensor MB*: weights, buffers, "
                 "gradients, AdamW state and activations saved for backward, counted in eager mode.")
    if cuda:
        lines.append("*Peak MB*: the method's resident tensors plus the peak growth of "
                     "torch.cuda.max_memory_allocated during its steps.")
    else:
        lines.append(f"The CPU has no per-method allocator statistics; the whole process peaked at "
                     f"{m['process_peak_rss_mb']:.0f} MB RSS with every method's model alive.")
    if "tracker_overhead" in res:
        lines.append(f"Taylor ImportanceTracker: `adapter` step time with `tracker.update()` / without = "
                     f"{res['tracker_overhead']:.3f}× (A/B, as noisy as the steps); `update()` timed alone: "
                     f"{res['tracker_update_ms']:.2f} ms = {100 * res['tracker_update_share']:.2f}% of an `adapter` step.")
    if compiled and any(r["graphs_compiled_timed"] for r in res["results"]):
        lines.append("WARNING: some models compiled again during the timed steps (recompilation).")
    for name, table in res.get("profiles", {}).items():
        lines += ["", f"## Profile: {name} (5 steps, most self time first)", "", "```", table.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
    except PearError as exc:
        print(f"throughput: error: {exc}", file=sys.stderr)
        return 2
    text = markdown(res)
    print(text)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1) if path.suffix == ".json" else text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
