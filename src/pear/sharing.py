"""Share policies: which kept adapter each pruned position calls, one function each.

A policy is a function `(pruned, kept) -> {pruned position: kept position}` registered
with `@SHARE_POLICIES.register("name", help=...)`; `PearConfig(share="name")`, `pear train
--share name` and the suite's `pear-share-name` then take it. `pruned` lists the pruned
`Position`s least important first, `kept` the kept ones most important first (ties in
model order). Only positions of equal `signature` (adapter shapes) may share; a pruned
position the policy leaves out keeps no adapter.

Pure bookkeeping, no torch: `pear.make_plan` calls the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .registry import Registry

SharePolicy = Callable[[list["Position"], list["Position"]], dict[str, str]]
SHARE_POLICIES: Registry[SharePolicy] = Registry("share policy", "PearConfig.share")


@dataclass
class Position:
    """An adapter position as a plan sees it."""

    name: str
    index: int  # model order
    kind: str  # 'attn', 'mlp', ...
    depth: int  # block index
    signature: tuple  # adapters of equal signature can be shared
    size: int  # adapter parameters
    score: float  # importance


@SHARE_POLICIES.register(
    "matched", aliases=("rank",), help="i-th most important kept adapter to the i-th least important pruned position"
)
def matched(pruned: list[Position], kept: list[Position]) -> dict[str, str]:
    """Within each compatible group: the most important kept adapter goes to the least
    important pruned position, the 2nd to the 2nd, ... cycling when more positions are
    pruned than kept."""
    shares: dict[str, str] = {}
    for sig in dict.fromkeys(p.signature for p in pruned):
        ks = [k for k in kept if k.signature == sig]
        if not ks:
            continue
        for i, p in enumerate(q for q in pruned if q.signature == sig):
            shares[p.name] = ks[i % len(ks)].name
    return shares


def _each(pruned: list[Position], kept: list[Position], choose) -> dict[str, str]:
    """Each pruned position on its own: `choose(p, compatible kept positions, best first)` picks one."""
    shares: dict[str, str] = {}
    for p in pruned:
        ks = [k for k in kept if k.signature == p.signature]
        if ks:
            shares[p.name] = choose(p, ks).name
    return shares


@SHARE_POLICIES.register("nearest", help="closest kept position by depth, same sub-layer kind")
def nearest(pruned: list[Position], kept: list[Position]) -> dict[str, str]:
    def closest(p: Position, ks: list[Position]) -> Position:
        same_kind = [k for k in ks if k.kind == p.kind] or ks  # any compatible kind if none of its own
        return min(same_kind, key=lambda k: (abs(k.depth - p.depth), -k.score, k.index))

    return _each(pruned, kept, closest)


@SHARE_POLICIES.register("top1", help="the single most important adapter")
def top1(pruned: list[Position], kept: list[Position]) -> dict[str, str]:
    return _each(pruned, kept, lambda p, ks: ks[0])


@SHARE_POLICIES.register("none", help="plain pruning")
def no_sharing(pruned: list[Position], kept: list[Position]) -> dict[str, str]:
    return {}
