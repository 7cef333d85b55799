"""`Registry`: a name mapped to the class or function that carries one extension's
behaviour and its help text, as timm's `register_model` and peft's `register_peft_method`.

Pear's extension points each own one: importance scorers (`pear.scorers`), share
policies (`pear.sharing`), knowledge checkpoints (`pear.knowledge`), adapter kinds
(`pear.adapter_kinds`), backbone families (`pear.families`) and training methods
(`pear.harness.method_names`). The config's allowed values, `pear train`'s help and the
suite's ablation grammar are read from them when they are needed, so an entry registered
from any code (a test, a user's module) is accepted and listed like a built-in one.

This module and the modules that fill the registries import no torch: option parsing and
`pear --help` list the names without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from .errors import PearError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries, in registration order, with a help text each and earlier names
    (aliases) that read as today's. `kind` names the extension in messages ('importance
    scorer'); `field` is the option that takes these names (`PearConfig.importance`)."""

    def __init__(self, kind: str, field: str) -> None:
        self.kind, self.field = kind, field
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, help: str, aliases: Sequence[str] = ()) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name", help="...")` over the class or function;
        returns it unchanged. A name already taken is refused (unregister it first)."""

        def add(entry: T) -> T:
            self.add(name, entry, help=help, aliases=aliases)
            return entry

        return add

    def add(self, name: str, entry: T, *, help: str, aliases: Sequence[str] = ()) -> None:
        taken = [n for n in (name, *aliases) if n in self._entries or n in self._aliases]
        if taken:
            raise PearError(f"{self.kind} {taken[0]!r} is already registered")
        if not isinstance(name, str) or not name:
            raise PearError(f"a {self.kind} needs a non-empty name, got {name!r}")
        self._entries[name], self._help[name] = entry, help
        self._aliases.update(dict.fromkeys(aliases, name))

    def unregister(self, name: str) -> T:
        """Remove `name` and its aliases; returns its entry."""
        entry = self.get(name)
        del self._entries[name], self._help[name]
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}
        return entry

    def canonical(self, name: str) -> str:
        """`name` with an earlier name (alias) resolved; other names as given."""
        return self._aliases.get(name, name) if isinstance(name, str) else name

    def get(self, name: str) -> T:
        """The entry of `name` (or of the name alias `name` stands for); PearError naming the
        field and every registered name otherwise."""
        entry = self._entries.get(self.canonical(name))
        if entry is None:
            raise PearError(f"{self.field} must be one of {', '.join(self._entries)}; got {name!r}")
        return entry

    def pop(self, name: str) -> T:
        """`unregister`, spelled as on a dict (`pear.families.FAMILIES` was one)."""
        return self.unregister(name)

    def help(self, name: str) -> str:
        return self._help[self.canonical(name)]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def values(self) -> tuple[T, ...]:
        """The entries, in registration order."""
        return tuple(self._entries.values())

    def aliases(self) -> Aliases:
        """Earlier name -> today's, as a live read-only mapping."""
        return Aliases(self)

    def describe(self) -> str:
        """'a (what a does), b (what b does)': the help of every entry (and its earlier names),
        as flags' help says them."""
        return ", ".join(self._describe_one(n) for n in self._entries)

    def _describe_one(self, name: str) -> str:
        notes = [self._help[name]] if self._help[name] else []
        notes += [f"{a!r}, its earlier name, is read as {name}" for a, n in self._aliases.items() if n == name]
        return f"{name} ({'; '.join(notes)})" if notes else name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def view(self, where: Callable[[T], bool] | None = None) -> Names:
        """The registered names (those whose entry satisfies `where`) as a live tuple-like sequence."""
        return Names(self, where)


class Names(Sequence[str]):
    """A read-only, always current sequence of a registry's names: the form in which the
    tuples modules import (`IMPORTANCE_METHODS`, `METHODS`, ...) stay importable."""

    def __init__(self, registry: Registry, where: Callable | None = None) -> None:
        self._registry, self._where = registry, where

    def _names(self) -> tuple[str, ...]:
        reg = self._registry
        return tuple(n for n in reg.names() if self._where is None or self._where(reg.get(n)))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, Names)) else other)

    def __add__(self, other):
        return self._names() + tuple(other)

    def __repr__(self) -> str:
        return repr(self._names())


class Aliases(Mapping[str, str]):
    """A registry's earlier names -> today's, always current (`SHARE_ALIASES`, `METHOD_ALIASES`)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> str:
        return self._registry._aliases[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._registry._aliases))

    def __len__(self) -> int:
        return len(self._registry._aliases)

    def __repr__(self) -> str:
        return repr(self._registry._aliases)
