"""Pretrain Pear's built-in vision transformer on this machine, from nothing downloaded.

The student is `pear_vit_tiny6_patch4_32` (a timm ViT: 6 blocks, width 192, patch 4, 32 px).
The teacher is the built-in ImageNet EfficientNet-Lite0, which sees the same crop at 128 px.
There are no human labels anywhere: every target comes from the teacher.

Targets, all from one teacher forward:
- the teacher's 1000 ImageNet logits, matched by KL from a distillation head on the class token;
- its pooled 1280-d features, matched by cosine from the class token;
- its final 4x4 feature map, matched by cosine per location from the student's 8x8 patch
  tokens pooled 2x2 (keeps *where* things are, which pooled targets cannot teach);
- its stride-16 8x8 map (112 channels), matched by cosine from the patch tokens after block 3.
The distillation heads are thrown away; only the ViT is exported.

Images (unlabelled): random crops of Debian's wallpaper photos (gnome-backgrounds,
mate-backgrounds, plasma-workspace-wallpapers), Fashion-MNIST training images outside the
built-in task's train800/val200 picks (labels never read), and procedural shapes. Each
step's batch depends only on (seed, step), so a run killed at any point resumes exactly
(`--out`/state holds the state, safetensors + JSON replaced together every `--save-every` steps;
a resume must keep the options that shape the steps: --steps, --batch, --lr, --wd, --warmup, --seed).

The teacher and the batch making run in a DataLoader worker process, the student in the
main one: one thread each, about 1.6x the speed of one process on 2 cores.

Precision is chosen as `pear train` chooses it (pear.harness.precision; --amp/--no-amp as
there): on a CPU with bf16 matrix instructions the student trains under bf16 autocast with
explicit-matmul attention, and the teacher's forward runs under bf16 autocast too (measured
1.8x faster than fp32 at 128 px, batch 64), its frozen weights held in bf16; its targets are cast
back to fp32 and the losses are computed in fp32. --no-amp is the fp32 path as it was. The
choice is logged and kept in the state: a resumed run keeps the precision it started with
(states saved before it was recorded: fp32) and refuses an --amp/--no-amp that contradicts it.

    python scripts/pretrain_vit.py --out pretrain/ --export src/pear/weights/pear_vit_tiny6_patch4_32.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file
from torch import nn
from torch.utils.data import DataLoader

from pear.atomic import atomic_dir_write, atomic_write_file, recover_dir
from pear.errors import PearError
from pear.harness import pear_vit
from pear.harness.files import read_mapping
from pear.harness.precision import (
    Precision,
    apply_attention,
    choose,
    keep_started,
)
from pear.harness.datasets.pretrain_batches import TEACHER_PX, make_batch  # noqa: F401 - the tests use make_batch
from pear.harness.datasets.pretrain_stream import (  # noqa: F401 - the tests use them here
    STUDENT_PX,
    WALLPAPER_DIRS,
    Stream,
    _teacher_forward,
    load_fashion,
    load_photos,
    make_teacher,
    teacher_targets,
)
from pear.jsontypes import wrong_types

CPU = torch.device("cpu")
# What a state saved before the precision was recorded was computed with: fp32, SDPA, teacher included.
FP32_BEFORE = Precision(False, "sdpa", False, "a state saved before the precision was recorded: fp32")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- student
class Distiller(nn.Module):
    def __init__(self):
        super().__init__()
        self.vit = timm.create_model(pear_vit.PEAR_VIT, num_classes=0)
        d = self.vit.embed_dim
        self.logits = nn.Linear(d, 1000)
        self.pooled = nn.Linear(d, 1280)
        self.fmap = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1280))
        self.mid = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 112))

    def forward(self, x):
        vit = self.vit
        h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        mid = None
        for i, blk in enumerate(vit.blocks):
            h = blk(h)
            if i == 2:
                mid = h[:, vit.num_prefix_tokens:]
        h = vit.norm(h)
        cls, tokens = h[:, 0], h[:, vit.num_prefix_tokens:]
        side = int(tokens.shape[1] ** 0.5)
        grid = tokens.transpose(1, 2).reshape(len(x), -1, side, side)
        coarse = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
        return {"logits": self.logits(cls), "pooled": self.pooled(cls), "fmap": self.fmap(coarse),
                "mid": self.mid(mid)}


def cosine_map(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine per location; student (B, L, C), target (B, C, H, W) with H*W = L."""
    target = target.flatten(2).transpose(1, 2)
    return (1 - F.cosine_similarity(student, target, dim=-1)).mean()


def losses(out, tgt, temperature: float = 2.0) -> dict[str, torch.Tensor]:
    kl = F.kl_div(F.log_softmax(out["logits"] / temperature, -1), F.log_softmax(tgt["logits"] / temperature, -1),
                  log_target=True, reduction="batchmean") * temperature ** 2
    return {"kl": kl, "pooled": (1 - F.cosine_similarity(out["pooled"], tgt["pooled"], dim=-1)).mean(),
            "fmap": cosine_map(out["fmap"], tgt["fmap"]), "mid": cosine_map(out["mid"], tgt["mid"])}


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# ---------------------------------------------------------------- state (safetensors + JSON, no pickle)
STATE_DIR = "state"  # state.safetensors + state.json, replaced together (pear.atomic.atomic_dir_write)
STATE_FILES = ("state.safetensors", "state.json")
# The options a resumed run must keep: each step's batch and update depend on them.
RESUME_OPTIONS = ("steps", "batch", "lr", "wd", "warmup", "seed")


def save_state(out: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, log_rows: list,
               options: dict, precision: Precision | None = None) -> None:
    """Both state files in one atomic folder swap: a crash leaves the previous pair or the new one, never a mix."""
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    names = {p: n for n, p in model.named_parameters()}
    for p, st in opt.state.items():
        for k in ("exp_avg", "exp_avg_sq"):
            tensors[f"opt.{names[p]}.{k}"] = st[k].clone()
        tensors[f"opt.{names[p]}.step"] = torch.as_tensor(st["step"]).reshape(1).float()

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / STATE_FILES[0])
        info = {"step": step, "log": log_rows, "options": options}
        if precision is not None:
            info["precision"] = precision.to_dict()
        (tmp / STATE_FILES[1]).write_text(json.dumps(info))

    atomic_dir_write(out / STATE_DIR, write)


def _state_folder(out: Path) -> Path | None:
    """Where the saved state is: out/state/, or out/ itself for states saved before the pair was one folder."""
    recover_dir(out / STATE_DIR)
    for folder in (out / STATE_DIR, out):
        if (folder / STATE_FILES[1]).is_file():
            return folder
    return None


def load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, options: dict) -> tuple[int, list]:
    """(step, log rows) of the state saved in `out`, loaded into model and opt; (0, []) when there is none.
    PearError when the state is unreadable or was made with other options."""
    loaded = _load_state(out, model, opt, options)
    return (0, []) if loaded is None else (loaded[0]["step"], loaded[0]["log"])


def resume(out: Path, model: nn.Module, opt: torch.optim.Optimizer, options: dict,
           amp: bool | None) -> tuple[int, list, Precision]:
    """load_state, and the precision the run computes with: chosen now from --amp (`amp`) for a
    fresh start, the one the state started with for a resume (PearError if `amp` contradicts it)."""
    loaded = _load_state(out, model, opt, options)
    if loaded is None:
        return 0, [], choose(amp, CPU, model)
    info, info_file = loaded
    return info["step"], info["log"], keep_started(info.get("precision"), amp, FP32_BEFORE,
                                                   f"the pretraining state {info_file}")


def _load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, options: dict) -> tuple[dict, Path] | None:
    """(state.json's content, its path), the tensors loaded into model and opt; None when nothing is saved."""
    folder = _state_folder(out)
    if folder is None:
        return None
    info_file, tensor_file = folder / STATE_FILES[1], folder / STATE_FILES[0]
    info = read_mapping(info_file, "pretraining state")
    problems = wrong_types(info, {"step": int, "log": list, "options": dict}, required=("step", "log"))
    if problems or info["step"] < 0:
        raise PearError(f"pretraining state {info_file} is damaged ({'; '.join(problems) or 'step < 0'}); "
                        f"remove {folder} to start again")
    for name, value in (info.get("options") or {}).items():
        if name in options and value != options[name]:
            raise PearError(f"the state in {out} was made with --{name} {value}, not {options[name]}: a resumed run "
                            f"keeps its options (pass --{name} {value}), or use another --out to start anew")
    if not tensor_file.is_file():
        raise PearError(f"pretraining state {info_file} has no {tensor_file.name} beside it; remove {folder} to "
                        "start again")
    try:
        tensors = load_file(tensor_file)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for n, p in model.named_parameters():
            if f"opt.{n}.exp_avg" in tensors:
                opt.state[p] = {"exp_avg": tensors[f"opt.{n}.exp_avg"],
                                "exp_avg_sq": tensors[f"opt.{n}.exp_avg_sq"],
                                "step": tensors[f"opt.{n}.step"].reshape(())}
    except (SafetensorError, OSError, RuntimeError, KeyError) as err:
        raise PearError(f"pretraining state {tensor_file} does not fit the model ({' '.join(str(err).split())[:300]}); "
                        f"remove {folder} to start again") from None
    return info, info_file


def export(model: Distiller, path: Path, meta: dict) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in model.vit.state_dict().items()}
    atomic_write_file(path, lambda fh: fh.write(save(tensors, metadata={k: str(v) for k, v in meta.items()})))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--out", type=Path, default=Path("pretrain"), help="work folder: state, snapshots, log")
    ap.add_argument("--steps", type=int, default=3000, help="length of the LR schedule (cosine to 0)")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop (and export) after this step, on the --steps schedule; run again without it to go on")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--snapshots", default="750,1500", help="steps whose ViT is also exported, to probe")
    ap.add_argument("--export", type=Path, default=None, help="where the final ViT weights go (.safetensors)")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast for the student and the teacher (default: as `pear train` chooses, on with a "
                         "CPU with bf16 matrix instructions, AMX or AVX512-BF16; --no-amp: fp32; a resume keeps the "
                         "precision it started with)")
    args = ap.parse_args(argv)
    for name, low in (("steps", 1), ("batch", 1), ("save_every", 1), ("warmup", 0), ("seed", 0)):
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.stop_at is not None and not 1 <= args.stop_at <= args.steps:
        ap.error(f"--stop-at must be a step from 1 to --steps {args.steps}, got {args.stop_at}")
    for name in ("lr", "wd"):
        if not 0 <= getattr(args, name) < math.inf or (name == "lr" and args.lr == 0):
            ap.error(f"--{name} must be a finite number{' above 0' if name == 'lr' else ' >= 0'}, got "
                     f"{getattr(args, name)}")
    try:
        args.snapshots = {int(s) for s in args.snapshots.split(",") if s}
    except ValueError:
        ap.error(f"--snapshots must be steps separated by commas, got {args.snapshots!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except PearError as err:
        print(f"pretrain_vit.py: error: {err}", file=sys.stderr)
        return 2
    return 0


def build(args: argparse.Namespace) -> tuple[Distiller, torch.optim.Optimizer]:
    """The student with its distillation heads (initialised from --seed) and its optimiser."""
    torch.manual_seed(args.seed)
    model = Distiller()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999))
    return model, opt


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model, opt = build(args)
    options = {name: getattr(args, name) for name in RESUME_OPTIONS}
    start, rows, precision = resume(args.out, model, opt, options, args.amp)
    end = args.steps if args.stop_at is None else args.stop_at
    if start > end:
        raise PearError(f"the state in {args.out} is at step {start}, past "
                        f"{'--stop-at' if args.stop_at is not None else '--steps'} {end}: its weights are step "
                        f"{start}'s; use the snapshot of an earlier step, or another --out to start anew")
    log(f"pretraining {pear_vit.PEAR_VIT}: steps {start}..{end} of {args.steps}, batch {args.batch}, seed {args.seed}")
    apply_attention(model, precision.attention)
    log(f"precision{' (kept from the state)' if start else ''}: bf16 autocast {precision.amp}, attention "
        f"{precision.attention}, teacher weights in bf16 {precision.frozen_bf16} ({precision.reason})")
    done = train_steps(args, model, opt, (start, end), rows, options, precision)
    if args.export is not None:
        # Labelled with the step the weights are at, which is `end` only when training got there.
        meta = {"architecture": pear_vit.PEAR_VIT, "steps": done, "schedule_steps": args.steps, "batch": args.batch,
                "seed": args.seed, "teacher": "tf_efficientnet_lite0 (built-in ImageNet weights)",
                "precision": json.dumps(precision.to_dict())}
        export(model, args.export, meta)
        log(f"exported {args.export} (step {done})")


def train_steps(args, model: Distiller, opt, span: tuple[int, int], rows: list, options: dict,
                precision: Precision) -> int:
    """Train steps start..end-1 (`span`), saving the state as asked; returns the step the weights are at."""
    start, end = span
    if start == end:
        return start
    if not (args.out / "photos.npz").is_file():  # here: no photos is one message, not a worker's traceback
        load_photos(args.out / "photos.npz")
    stream = Stream(start, end, args.seed, args.batch, args.out / "photos.npz", precision)
    loader = DataLoader(stream, batch_size=None, num_workers=1, prefetch_factor=4)
    t0, seen, done = time.time(), 0, start
    for step, x, tgt in loader:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.amp):
            out = model(x)
        parts = losses({k: v.float() for k, v in out.items()}, tgt)
        loss = parts["kl"] + parts["pooled"] + parts["fmap"] + parts["mid"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += len(x)
        done = step + 1
        if done % 25 == 0 or done == end:
            row = {"step": done, "loss": round(loss.item(), 4), **{k: round(v.item(), 4) for k, v in parts.items()},
                   "img_s": round(seen / (time.time() - t0), 1)}
            rows.append(row)
            log(json.dumps(row))
        if done in args.snapshots:
            export(model, args.out / f"snapshot_{done:05d}.safetensors", {"step": done})
        if done % args.save_every == 0 or done == end:
            save_state(args.out, done, model, opt, rows, options, precision)
    return done


if __name__ == "__main__":
    sys.exit(main())
