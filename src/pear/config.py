"""`PearConfig`: every option of the method, validated up front.

Defaults follow the method as the README's "The method, and which parts are ours"
table describes it: parallel (AdaptFormer-style) adapters of rank 8 and scale 0.1 on
the attention and MLP sub-layer of every ViT block, first-order Taylor importance,
half of the adapter parameters pruned, importance-matched sharing ('matched'), and the
`merge` knowledge checkpoint. Options that are ours say so in their help; `gate` (ours,
not in the paper: learned gates on the shared adapters, pear.gates) is off by default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .adapter_kinds import ADAPTERS
from .errors import PearError
from .knowledge import KNOWLEDGE
from .scorers import SCORERS
from .sharing import SHARE_POLICIES as _SHARE_REGISTRY

SUBLAYERS = ("attn", "mlp")
# The registered names (pear.adapter_kinds, pear.scorers, pear.sharing, pear.knowledge), always current.
ADAPTER_KINDS = ADAPTERS.view()
IMPORTANCE_METHODS = SCORERS.view()
SHARE_POLICIES = _SHARE_REGISTRY.view()
SHARE_POLICY_NAMES = SHARE_POLICIES  # what users write, and what files store
# Earlier name -> today's: files written before the rename store the matched policy as 'rank'; they keep loading.
SHARE_ALIASES = _SHARE_REGISTRY.aliases()
KNOWLEDGE_MODES = KNOWLEDGE.view()
PRUNE_SCOPES = ("global", "group")
ACTIVATIONS = ("relu", "gelu", "identity")
GATES = ("none", "scalar", "channel")
# Fields added after checkpoints and run folders were first written: `to_dict` leaves each out
# while it holds its default, so a config that does not use it writes exactly what Pear wrote
# before (which earlier Pear versions also read); `from_dict` fills the default back in.
ADDED_DEFAULTS = {"gate": "none"}


_GATE_HELP = (
    "Ours (not in the paper): a learned gate on the shared adapter at each position that "
    "shares one: 'none' (plain sharing, the paper's), 'scalar' (one learned factor per shared "
    "position) or 'channel' (one per output channel of the adapter), multiplying the shared "
    "adapter's output there; made by prune_and_share at 1.0, so pruning changes nothing at first, "
    "then trained and stored with the task (kept positions have none)."
)


@dataclass
class PearConfig:
    """Configuration of adapters, importance scoring and prune-and-share."""

    adapter: str = field(default="parallel", metadata={"help": "Adapter kind", "choices": ADAPTERS})
    rank: int = field(default=8, metadata={"help": "Bottleneck width r of every adapter."})
    scale: float = field(default=0.1, metadata={"help": "Output scale s: out = sublayer(x) + s * up(act(down(x)))."})
    act: str = field(default="relu", metadata={"help": "Bottleneck activation: relu, gelu or identity."})
    init: str = field(
        default="zero",
        metadata={
            "help": "'zero' initialises the up projection to zero so the adapted model starts "
            "exactly as the backbone; 'random' initialises it like the down projection."
        },
    )
    sublayers: tuple[str, ...] = field(
        default=SUBLAYERS,
        metadata={
            "help": "ViT sub-layers that get an adapter: any of 'attn', 'mlp' "
            "(ignored for CNNs and for 'lora', which always targets attn.qkv)."
        },
    )
    blocks: tuple[int, int] | None = field(
        default=None, metadata={"help": "Half-open range [start, stop) of block indices to adapt; None = all blocks."}
    )
    target: str | None = field(
        default=None, metadata={"help": "Optional regex; only positions whose name matches it (re.search) are adapted."}
    )
    importance: str = field(default="taylor", metadata={"help": "Importance scorer", "choices": SCORERS})
    prune_ratio: float = field(default=0.5, metadata={"help": "Share of adapter parameters to prune, in [0, 1)."})
    prune_scope: str = field(
        default="global",
        metadata={
            "help": "Where prune_ratio applies: global (the paper: the least important adapters of "
            "the whole model) or group (ours: the ratio within each group of shape-compatible "
            "positions, such as one CNN stage, so every pruned position has a kept adapter it can "
            "share; a group of one is never pruned, so on a CNN fewer parameters are pruned "
            "than the ratio says; on a ViT, whose positions all match, the same as global)."
        },
    )
    share: str = field(
        default="matched", metadata={"help": "Share policy for pruned positions", "choices": _SHARE_REGISTRY}
    )
    knowledge: str = field(default="merge", metadata={"help": "Knowledge checkpoint", "choices": KNOWLEDGE})
    distill_steps: int = field(
        default=100,
        metadata={
            "help": "L-BFGS iterations of the 'distill' knowledge checkpoint's fit (ignored by the other modes)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the 'random' importance control."})
    gate: str = field(default="none", metadata={"help": _GATE_HELP})

    def __post_init__(self) -> None:
        try:
            self.sublayers = tuple(self.sublayers)
            if self.blocks is not None:
                # Whatever was given; that it is two block indices is checked below.
                self.blocks = cast("tuple[int, int]", tuple(self.blocks))
        except TypeError:
            name = "sublayers" if not isinstance(self.sublayers, tuple) else "blocks"
            raise PearError(f"PearConfig.{name} must be a sequence, got {getattr(self, name)!r}") from None
        self._check_choice("adapter", ADAPTER_KINDS)
        self._check_choice("act", ACTIVATIONS)
        self._check_choice("init", ("zero", "random"))
        self._check_choice("importance", IMPORTANCE_METHODS)
        self.share = _SHARE_REGISTRY.canonical(self.share)
        self._check_choice("share", SHARE_POLICIES)
        self._check_choice("prune_scope", PRUNE_SCOPES)
        self._check_choice("knowledge", KNOWLEDGE_MODES)
        self._check_choice("gate", GATES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise PearError(f"PearConfig.seed must be an integer, got {self.seed!r}")
        if self.target is not None and not isinstance(self.target, str):
            raise PearError(f"PearConfig.target must be a regex string or None, got {self.target!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise PearError(f"PearConfig.rank must be a positive integer, got {self.rank!r}")
        if isinstance(self.distill_steps, bool) or not isinstance(self.distill_steps, int) or self.distill_steps < 1:
            raise PearError(f"PearConfig.distill_steps must be a positive integer, got {self.distill_steps!r}")
        ADAPTERS.get(self.adapter)().check(self)
        KNOWLEDGE.get(self.knowledge)().check(self)
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float))
            or not math.isfinite(self.scale)
            or self.scale <= 0
        ):
            # s = 0 turns every adapter off (and with zero-initialised up projections no gradient reaches them).
            raise PearError(f"PearConfig.scale must be a finite number > 0, got {self.scale!r}")
        if (
            isinstance(self.prune_ratio, bool)
            or not isinstance(self.prune_ratio, (int, float))
            or not 0.0 <= self.prune_ratio < 1.0
        ):
            raise PearError(f"PearConfig.prune_ratio must be in [0, 1), got {self.prune_ratio!r}")
        if not self.sublayers or any(s not in SUBLAYERS for s in self.sublayers):
            raise PearError(f"PearConfig.sublayers must be a non-empty subset of {SUBLAYERS}, got {self.sublayers!r}")
        if self.blocks is not None and (
            len(self.blocks) != 2
            or not all(isinstance(b, int) for b in self.blocks)
            or not 0 <= self.blocks[0] < self.blocks[1]
        ):
            raise PearError(
                f"PearConfig.blocks must be a range (start, stop) with 0 <= start < stop, got {self.blocks!r}"
            )
        if self.target is not None:
            try:
                re.compile(self.target)
            except (re.error, TypeError) as exc:
                raise PearError(f"PearConfig.target is not a valid regex: {self.target!r} ({exc})") from None

    def _check_choice(self, name: str, choices: Sequence[str]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise PearError(f"PearConfig.{name} must be one of {', '.join(choices)}; got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; the fields of ADDED_DEFAULTS only when they differ from their default."""
        d = dataclasses.asdict(self)
        d["sublayers"] = list(self.sublayers)
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        return {k: v for k, v in d.items() if k not in ADDED_DEFAULTS or v != ADDED_DEFAULTS[k]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PearConfig:
        if not isinstance(d, dict):
            raise PearError(f"PearConfig must be built from a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PearError(f"PearConfig has no field(s) {', '.join(map(repr, unknown))}")
        return cls(**d)
