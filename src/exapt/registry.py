"""One registry type for every pluggable family (strategies, penalties, backbones).

Adding a strategy is one file with one decorator: `@STRATEGIES.register("name")` sets the
class's `name` (written once) and the package finds the file by itself
(`import_submodules` in its `__init__`), so no import list is kept by hand. The CLI's
`exapt strategies` and the error for an unknown name both read from here.
"""
from __future__ import annotations

import importlib
import pkgutil
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


def import_submodules(package: str, path) -> None:
    """Import every module of a plug-in package (its `__name__`, `__path__`), so that each
    file's `@REGISTRY.register` runs: a new file is found without an import list."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")


STRATEGIES: Registry = Registry("strategy")
PENALTIES: Registry = Registry("penalty")
BACKBONES: Registry = Registry("backbone")
