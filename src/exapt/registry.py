"""One registry type for every pluggable family (strategies, penalties, backbones).

Adding a strategy is one file with one decorator: `@STRATEGIES.register("name")` sets the
class's `name` (written once) and the package finds the file by itself
(`import_submodules` in its `__init__`), so no import list is kept by hand. The CLI's
`exapt strategies` and the error for an unknown name both read from here, and
`parse_options` reads a spec's options (`lora:r=16`, `ewc:1e4`) for every family.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import Callable, Generic, TypeVar

from .errors import ExaptError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file `item` under `name` and give it that name (`item.name`)."""
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            item.name = name
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ExaptError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self):
        return sorted(self._items.items())


def parse_options(cls, spec: str, flag: str):
    """`NAME:a,b=2` -> cls(first_field=a, b=2): options positional (in field order) or
    key=value, typed by each field's default. Shared by strategies and penalties."""
    name, _, arg = spec.partition(":")
    params = {f.name: f for f in fields(cls)}
    order = list(params)
    kwargs = {}
    for i, item in enumerate(v for v in arg.split(",") if v.strip()) if arg else ():
        key, eq, raw = item.partition("=")
        if not eq:
            if i >= len(order):
                raise ExaptError(f"{flag} {spec!r}: {name} takes {len(order)} option(s): {', '.join(order) or 'none'}")
            key, raw = order[i], item
        key = key.strip()
        if key not in params:
            raise ExaptError(f"{flag} {spec!r}: {name} has no option {key!r} (options: {', '.join(order) or 'none'})")
        kind = type(params[key].default)
        try:
            kwargs[key] = kind(raw.strip()) if kind is not bool else raw.strip().lower() in ("1", "true", "yes")
        except ValueError:
            raise ExaptError(f"{flag} {spec!r}: {key} must be a {kind.__name__}, got {raw!r}") from None
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ExaptError(f"{flag} {spec!r}: {e}") from None


def import_submodules(package: str, path) -> None:
    """Import every module of a plug-in package (its `__name__`, `__path__`), so that each
    file's `@REGISTRY.register` runs: a new file is found without an import list."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")


STRATEGIES: Registry = Registry("strategy")
PENALTIES: Registry = Registry("penalty")
BACKBONES: Registry = Registry("backbone")
