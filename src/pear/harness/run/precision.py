"""How a run computes on its device: bf16 autocast, the attention kernel, and frozen
weights held in bf16.

The choices are rules written from measurements (benchmarks/throughput.py,
benchmarks/results/cpu_bf16/), not timed again in every run:

- bf16 autocast is on with CUDA, and for a transformer on a CPU with bf16 matrix
  instructions (AMX or AVX512-BF16). A CNN such as EfficientNet-Lite0 was measured no faster
  in bf16 on an Intel Xeon with AMX and 1.69x faster on an AMD EPYC with AVX512-BF16 and no
  AMX (benchmarks/results/cpu_bf16*/), so on the CPU a model without attention trains in bf16
  only on a CPU of the second kind; off elsewhere. On the CPU the choice only changes speed and
  rounding, never the method; `--no-amp` keeps the fp32 path exactly as it was.
- Attention: timm's `Attention` modules run PyTorch's fused SDPA kernel by default. On
  the CPU under bf16 its backward (`_scaled_dot_product_flash_attention_for_cpu`) is
  slower than the whole rest of the step for small heads, so there the explicit-matmul
  path (the same maths, `fused_attn = False`) is chosen. In fp32 on the CPU and on CUDA,
  SDPA stays.
- Frozen `Linear`/`Conv` weights of the backbone are held in bf16 while a bf16 run
  trains on the CPU, so autocast does not cast them again on every call. Autocast
  rounds an fp32 weight to bf16 for these ops anyway, so the results are bit for bit
  the ones it gives with the fp32 weights. Norms, embeddings, adapters, frozen
  knowledge checkpoints and the head keep their dtype.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...errors import PearError

__all__ = [
    "Precision",
    "apply_attention",
    "apply_precision",
    "choose",
    "cpu_has_bf16_matmul",
    "has_attention",
    "hold_frozen_bf16",
    "keep_started",
    "legacy",
    "processor_name",
]

log = logging.getLogger("pear")

ATTENTION = ("sdpa", "matmul")


def processor_name() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it ('AMD EPYC', 'Intel(R) Xeon(R) ...'), or
    what the platform module says where there is none: bf16 on two CPUs rounds differently, so a
    run's metrics record which one trained it."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration, IndexError):
        return platform.processor() or platform.machine() or "unknown"


def _cpu_capabilities() -> dict:
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is None:  # older torch: no capability query; stay in fp32
        return {}
    try:
        return dict(caps())
    except Exception:
        return {}


def cpu_has_bf16_matmul() -> bool:
    """True when this CPU has bf16 matrix instructions (Intel AMX or AVX512-BF16)."""
    found = _cpu_capabilities()
    return bool(found.get("amx_bf16") or found.get("avx512_bf16"))


def cpu_has_amx() -> bool:
    """True when this CPU has Intel's AMX tile units for bf16 (`amx_bf16`)."""
    return bool(_cpu_capabilities().get("amx_bf16"))


@dataclass(frozen=True)
class Precision:
    """The resolved choice for one run: recorded in metrics.json and the train log."""

    amp: bool  # bf16 autocast
    attention: str  # 'sdpa' (fused kernel) or 'matmul' (explicit q @ k^T, softmax, @ v)
    frozen_bf16: bool  # frozen Linear/Conv weights held in bf16 during training
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str) -> Precision:
        """A recorded choice (state.json, metrics.json); PearError naming `where` if malformed."""
        if not (
            isinstance(d, dict)
            and isinstance(d.get("amp"), bool)
            and isinstance(d.get("frozen_bf16"), bool)
            and d.get("attention") in ATTENTION
            and isinstance(d.get("reason", ""), str)
        ):
            raise PearError(
                f"{where}: 'precision' must be an object with booleans 'amp' and 'frozen_bf16' and "
                f"'attention' one of {', '.join(ATTENTION)}; got {str(d)[:80]}"
            )
        return cls(d["amp"], d["attention"], d["frozen_bf16"], d.get("reason", ""))


# What runs recorded no choice were computed with: --amp unset meant "on with CUDA only", SDPA.
def legacy(amp: bool | None, device: torch.device) -> Precision:
    on = device.type == "cuda" if amp is None else amp
    return Precision(on, "sdpa", False, "a run made before the precision was recorded")


def keep_started(recorded: object, amp: bool | None, before: Precision, where: str) -> Precision:
    """The precision a resumed run keeps: the one its state recorded (`recorded`, a
    Precision.to_dict()), or `before` for a state saved before the choice was recorded.
    PearError naming `where` when the record is malformed, or when --amp/--no-amp (`amp`)
    asks for the other precision: a run does not change precision half-way."""
    p = before if recorded is None else Precision.from_dict(recorded, where)
    if amp is not None and amp != p.amp:
        made = "bf16 autocast (--amp)" if p.amp else "fp32 (--no-amp)"
        if recorded is None:
            made += ", before the precision was recorded"
        raise PearError(
            f"{where} was made in {made}; a resumed run keeps the precision it started with: leave out "
            f"{'--amp' if amp else '--no-amp'}, or start anew in another folder"
        )
    return p


def has_attention(model: nn.Module) -> bool:
    """True for a model with timm attention modules (a ViT-like backbone)."""
    return any(hasattr(m, "fused_attn") for m in model.modules())


def choose(
    amp: bool | None, device: torch.device, model: nn.Module | None = None, distributed: bool = False
) -> Precision:
    """The precision a run uses on `device`, given the user's --amp (None: automatic).
    `model`: on a CPU with bf16 instructions a transformer trains in bf16 (measured: the built-in
    ViT's step 1.8-2.8x faster on an Intel Xeon with AMX and an AMD EPYC with AVX512-BF16). A
    model without attention (a CNN) does so only where the CPU has AVX512-BF16 without AMX
    (EfficientNet-Lite0 1.69x faster on the EPYC measured idle, 0.99x on the Xeon measured busy);
    None: decide as for a transformer.
    `distributed`: DDP broadcasts every rank's module states as they are, so the frozen
    weights stay fp32 there."""
    if device.type == "cuda":
        on = True if amp is None else amp
        return Precision(on, "sdpa", False, "CUDA: bf16 autocast by default" if amp is None else "--amp given")
    if device.type != "cpu":
        on = bool(amp)
        return Precision(on, "sdpa", False, f"{device.type}: fp32 unless --amp")
    if amp is None and model is not None and not has_attention(model):
        on = cpu_has_bf16_matmul() and not cpu_has_amx()
        reason = (
            "CPU with AVX512-BF16 and no AMX, a model without attention: bf16 autocast (its convolutions "
            "measured faster in bf16 there)"
            if on
            else "CPU with AMX or without bf16 instructions, a model without attention: fp32 (its "
            "convolutions measured no faster in bf16 there)"
        )
    elif amp is None:
        on = cpu_has_bf16_matmul()
        reason = (
            "CPU has bf16 matrix instructions (AMX/AVX512-BF16): bf16 autocast"
            if on
            else "CPU without bf16 matrix instructions: fp32"
        )
    else:
        on, reason = amp, "--amp given" if amp else "--no-amp given"
    return Precision(on, "matmul" if on else "sdpa", on and not distributed, reason)


def apply_attention(model: nn.Module, attention: str) -> int:
    """Set every timm attention module (anything with a `fused_attn` switch) to the chosen
    path; returns how many modules were set."""
    n = 0
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            setattr(m, "fused_attn", attention == "sdpa")  # a bool, which nn.Module's attribute typing does not take
            n += 1
    return n


def _frozen_matmul_weights(model: nn.Module) -> list[nn.Parameter]:
    from ...adapters import adapter_tensor_ids

    skip = adapter_tensor_ids(model)
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps) and not any(id(p) in skip for p in ps):
                out += [p for p in ps if p.dtype == torch.float32]
    return out


def hold_frozen_bf16(model: nn.Module) -> int:
    """Cast the frozen backbone's Linear/Conv weights and biases to bf16 in place (see the
    module docstring for why this changes no result under bf16 autocast). Returns the number
    of tensors cast. Call it only for a run that trains under bf16 autocast on the CPU: a
    model so held must not be used without autocast."""
    params = _frozen_matmul_weights(model)
    for p in params:
        p.data = p.data.to(torch.bfloat16)
    return len(params)


def apply_precision(model: nn.Module, p: Precision) -> None:
    """Put a run's precision into its model (the attention kernel, frozen weights in bf16) and log it."""
    apply_attention(model, p.attention)
    if p.frozen_bf16:
        hold_frozen_bf16(model)
    log.info(
        "precision: bf16 autocast %s, attention %s, frozen weights in bf16 %s (%s)",
        p.amp,
        p.attention,
        p.frozen_bf16,
        p.reason,
    )
