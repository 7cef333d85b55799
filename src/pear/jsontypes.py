"""Type checks for the JSON a user can edit by hand: one rule for every reader (task
checkpoints, plain run checkpoints, `pear inspect`), so a bad field gives a message that
names it, never a crash further in."""

from __future__ import annotations

NONE = type(None)

# What every checkpoint (a Pear task or a plain run's) records about itself.
CHECKPOINT_FIELDS = {
    "head": (str, list, NONE),
    "num_classes": (int, NONE),
    "class_names": (list, NONE),
    "backbone": (dict, NONE),
    "meta": (dict, NONE),
}
BACKBONE_FIELDS = {
    "name": (str, NONE),
    "fingerprint": (str, NONE),
    "weights_fingerprint": (str, NONE),
    "weights_source": (str, NONE),
    "weights_sha256": (str, NONE),
    "settings": (dict, NONE),
}


def has_type(value, types: type | tuple[type, ...]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    # bool is an int subclass; a flag is never a count and a count never a flag.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def wrong_types(d: dict, fields: dict, where: str = "", required=()) -> list[str]:
    """One line per problem: 'WHEREkey is missing' for each absent `required` key, 'WHEREkey
    is VALUE' for each present field whose value is not of its type in `fields`."""
    problems = [f"{where}{k} is missing" for k in required if k not in d]
    return problems + [f"{where}{k} is {d[k]!r}" for k, t in fields.items() if k in d and not has_type(d[k], t)]


def recorded_heads(info: dict) -> list[str]:
    """The head module names a checkpoint records: its 'head' is one name, or a list of
    several (head, head_dist: a distilled DeiT); the first is the main head."""
    head = info.get("head")
    return [head] if isinstance(head, str) else [h for h in head or () if isinstance(h, str)]


def checkpoint_problems(info: dict) -> list[str]:
    """What is wrong with the fields every checkpoint shares: their types, the backbone's
    fields, and class_names (strings, one per class)."""
    problems = wrong_types(info, CHECKPOINT_FIELDS)
    if problems:  # the checks below read inside these fields
        return problems
    problems = wrong_types(info.get("backbone") or {}, BACKBONE_FIELDS, "backbone.")
    head = info.get("head")
    if isinstance(head, list) and (len(head) < 2 or not all(isinstance(h, str) and h for h in head)):
        problems.append(f"head must be a module name or a list of several, got {head!r}")
    names, n = info.get("class_names"), info.get("num_classes")
    if names is not None and (not all(isinstance(c, str) for c in names) or (n is not None and len(names) != n)):
        problems.append(f"class_names must be {n if n is not None else 'the'} class name strings")
    return problems
