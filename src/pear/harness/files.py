"""Reading the small JSON / YAML files a user may have edited by hand."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import PearError


def read_mapping(path: str | Path, what: str = "file") -> dict:
    """The mapping stored in a .json or .yaml file; PearError naming the file otherwise."""
    path = Path(path)
    parse = yaml.safe_load if path.suffix in (".yaml", ".yml") else json.loads
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as exc:
        raise PearError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PearError(f"{what} {path} must hold a mapping of name: value, not {type(data).__name__}")
    return data
