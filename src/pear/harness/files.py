"""Reading the small JSON / YAML files a user may have edited by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..errors import PearError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `lr: 1e-3` (an exponent without a dot) as a string; YAML 1.2 and
    every user read it as a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_mapping(path: str | Path, what: str = "file") -> dict:
    """The mapping stored in a .json or .yaml file; PearError naming the file otherwise."""
    path = Path(path)
    parse = (lambda text: yaml.load(text, _Loader)) if path.suffix in (".yaml", ".yml") else json.loads
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as exc:
        raise PearError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PearError(f"{what} {path} must hold a mapping of name: value, not {type(data).__name__}")
    return data
