"""Option values from text, and the parts every generated flag shares: its name, help, metavar
and type.

`pear train`'s flags (`pear.harness.run.options`) and the suite's method grammar
(`METHOD@FIELD=VALUE`, `pear.harness.suites.grammar`) both read values through `value_parser`,
by the type hint of a `TrainConfig` or `PearConfig` field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from typing import Any

from ...errors import PearError

# TrainConfig's fields that have no default: given as a flag or in -c CONFIG.
REQUIRED = ("data", "task", "out")


def type_hint(cls: type, name: str) -> Any:
    """The type hint of field `name` of dataclass `cls`, its string annotations resolved."""
    return typing.get_type_hints(cls)[name]


def _items(text: str) -> list[str]:
    """'a,b' or 'a+b' (the suite's method names are comma-separated, so they use '+')."""
    return [t for t in text.replace("+", ",").split(",") if t]


def value_parser(cls: type, name: str) -> Callable[[str], Any]:
    """text -> value of field `name` of dataclass `cls` (TrainConfig or PearConfig)."""
    hint = type_hint(cls, name)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base is typing.Union or (args and type(None) in typing.get_args(hint)):
        base, args = (typing.get_origin(args[0]) or args[0]), list(typing.get_args(args[0]))
    if base is tuple:
        item = args[0]
        return lambda text: tuple(item(t) for t in _items(text))
    if base is dict:
        return json_object
    if base is bool:
        return _bool
    return base


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def json_object(text: str) -> dict:
    """--model-kwargs: a JSON object of timm.create_model arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PearError(
            f"--model-kwargs {text!r} is not valid JSON ({exc}); expected an object such as "
            '\'{"depth": 2, "embed_dim": 32}\''
        ) from None
    if not isinstance(value, dict):
        raise PearError(f"--model-kwargs {text!r} must be a JSON object of timm.create_model arguments")
    return value


def flag_name(name: str) -> str:
    """The flag of field `name`: --prune-ratio for prune_ratio."""
    return "--" + name.replace("_", "-")


def help_text(f: dataclasses.Field[Any]) -> str:
    """The field's help, the names its registry holds now, and its default (or that it is
    required) at the end."""
    text = base = f.metadata.get("help", "")
    if f.metadata.get("choices") is not None:
        text += ": " + f.metadata["choices"].describe()
    if f.name in REQUIRED:
        text += " (required: here or in -c CONFIG)"
    elif "default" not in base:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown: object
        if isinstance(default, bool):
            shown = "on" if default else "off"
        elif default is None:
            shown = "none"
        elif isinstance(default, tuple):
            shown = ",".join(map(str, default))
        elif isinstance(default, dict):
            shown = json.dumps(default)
        else:
            shown = default
        text += f" (default {shown})"
    return text.replace("%", "%%")


def metavar(f: dataclasses.Field[Any]) -> dict[str, Any]:
    """{a,b,c} for a field whose names come from a registry (its values are still checked by the
    config, so a bad one is a PearError naming the flag, and earlier names still read)."""
    registry = f.metadata.get("choices")
    return {"metavar": "{" + ",".join(registry) + "}"} if registry is not None else {}


def arg_type(cls: type, name: str) -> Callable[[str], Any]:
    """argparse's `type=` for field `name` of `cls`: a bad value is argparse's usage error."""
    parse = value_parser(cls, name)

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None

    typed.__name__ = name
    return typed
