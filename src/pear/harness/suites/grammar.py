"""The suite's method names: what each one trains.

A suite method is a training method (linear, full, adapter, pear, prune, peft-lora; 'lora'
is an alias of peft-lora), a Pear ablation that changes one option of `pear`:
pear-share-POLICY, pear-kc-MODE, pear-imp-SCORER, pear-rRATIO, pear-scope-SCOPE, or a
method with Pear options set: METHOD@FIELD=VALUE[@FIELD=VALUE...], e.g.
pear@act=gelu@blocks=0+6 (list items are joined by '+'; each field once; linear and full
take none, peft-lora only rank). The name is also the run's folder and a cell of
results.md's tables, so the suite's results show it as given: it is at most
`MAX_NAME_LENGTH` characters, none of them whitespace, control characters, '|' or '`'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ...config import IMPORTANCE_METHODS, KNOWLEDGE_MODES, PRUNE_SCOPES, SHARE_ALIASES, SHARE_POLICY_NAMES, PearConfig
from ...errors import PearError
from ..models.method_names import METHOD_ALIASES, METHODS, TRAINING_METHODS, canonical_method
from ..run.flags import value_parser
from ..run.options import PEAR_FIELDS


def _choice(field: str, choices: Sequence[str], aliases: Mapping[str, str] | None = None):
    """An ablation over the names `choices` holds when a name is read (a registry's live
    view, so a registered scorer or policy is an ablation too), or an earlier name of one."""

    def parse(text: str) -> str:
        if text not in choices and text not in (aliases or {}):
            raise ValueError(text)
        return text

    return field, parse, lambda: "{" + ",".join(choices) + "}"


def _ratio(text: str) -> float:
    # Digits only: float() would also take 'nan', 'inf' or '1e-1', none of which is a
    # sensible folder name for a ratio.
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text) or not 0.0 <= float(text) < 1.0:
        raise ValueError(text)
    return float(text)


# Name prefix -> (TrainConfig field it sets on method `pear`, parser of the rest, its form now).
ABLATIONS = {
    "pear-share-": _choice("share", SHARE_POLICY_NAMES, SHARE_ALIASES),
    "pear-kc-": _choice("knowledge", KNOWLEDGE_MODES),
    "pear-imp-": _choice("importance", IMPORTANCE_METHODS),
    "pear-r": ("prune_ratio", _ratio, lambda: "<ratio in [0,1)>"),
    "pear-scope-": _choice("prune_scope", PRUNE_SCOPES),
}
MAX_NAME_LENGTH = 100  # a folder name (255 bytes on most file systems) with room for its tuning siblings
# Characters that would break a folder name, a results.md table row or its `code` spans.
_TABLE_BREAKERS = "|`"


def grammar() -> tuple[str, ...]:
    """The forms of a suite method's name, from the registered methods, scorers, policies and modes."""
    return (*METHODS, *(prefix + form() for prefix, (_, _, form) in ABLATIONS.items()), "METHOD@FIELD=VALUE[@...]")


def method_overrides(name: str) -> dict:
    """The TrainConfig fields suite method `name` sets, e.g. 'pear-kc-frozen' ->
    {'method': 'pear', 'knowledge': 'frozen'}, 'pear@act=gelu@rank=4' ->
    {'method': 'pear', 'act': 'gelu', 'rank': 4}."""
    _check_characters(name)
    if name in METHODS or name in METHOD_ALIASES:
        return {"method": name}
    for prefix, (field, parse, _) in ABLATIONS.items():
        if name.startswith(prefix):
            try:
                return {"method": "pear", field: parse(name[len(prefix) :])}
            except ValueError:
                break
    method = name.partition("@")[0]
    if "@" in name and "/" not in name and (method in METHODS or method in METHOD_ALIASES):
        return {"method": method, **_settings(name, method, split_name(name)[1])}
    raise PearError(f"unknown suite method {name!r}; expected one of: {', '.join(grammar())}")


def split_name(name: str) -> tuple[str, dict[str, str]]:
    """A suite method's name as written, unparsed: 'pear@scale=1@prune_ratio=0.75' ->
    ('pear', {'scale': '1', 'prune_ratio': '0.75'}); 'adapter' -> ('adapter', {}). The values stay
    text, as the name spells them (the tables and tuning records spell them so too). PearError for
    a setting that is not FIELD=VALUE or a field set twice."""
    method, *settings = name.split("@")
    out: dict[str, str] = {}
    for text in settings:
        field, eq, value = text.partition("=")
        if not eq or not field:
            raise PearError(f"suite method {name!r} has {text!r}, which is not FIELD=VALUE")
        if field in out:
            raise PearError(f"suite method {name!r} sets {field} twice")
        out[field] = value
    return method, out


def _check_characters(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise PearError(
            f"suite method {name[:40]!r}... is {len(name)} characters long; at most {MAX_NAME_LENGTH} "
            f"(the name is the run's folder)"
        )
    bad = next((c for c in name if not c.isprintable() or c.isspace() or c in _TABLE_BREAKERS), None)
    if bad is not None:
        raise PearError(
            f"suite method {name!r}: {bad!r} cannot be in a method name (the name is the run's folder "
            f"and a cell of results.md's tables)"
        )


def _settings(name: str, method: str, settings: dict[str, str]) -> dict:
    """The FIELD=VALUE settings of `name` (`split_name`'s), parsed, and only fields `method` uses."""
    out: dict = {}
    for field, value in settings.items():
        used = TRAINING_METHODS.get(canonical_method(method)).options  # None: every Pear option
        if field not in PEAR_FIELDS:
            raise PearError(
                f"suite method {name!r}: {f'{field}={value}'!r} is not FIELD=VALUE with FIELD one of "
                f"{', '.join(PEAR_FIELDS)}"
            )
        if used is not None and field not in used:
            takes = f"takes only {', '.join(used)}" if used else "has no Pear options"
            raise PearError(f"suite method {name!r}: method {method} {takes}, so {field} would change nothing")
        out[field] = _parsed(name, field, value)
    return out


def _parsed(name: str, field: str, value: str) -> object:
    """'4' for field rank -> 4, parsed as `pear train --rank 4` would be."""
    try:
        return value_parser(PearConfig, field)(value)
    except ValueError:
        raise PearError(f"suite method {name!r}: {value!r} is not a valid {field}") from None
