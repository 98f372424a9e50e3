"""One registry type for every pluggable family (backbones, strategies).

Adding a strategy is one file with one decorator; the CLI's `exapt strategies`
and the error for an unknown name both read from here.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ExaptError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
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


STRATEGIES: Registry = Registry("strategy")
