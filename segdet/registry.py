"""One small registry class serves every pluggable part (datasets, models, losses, optimizers, schedules)."""
from __future__ import annotations

from typing import Callable, Iterator

from segdet.errors import SegdetError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None) -> Callable:
        def deco(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise SegdetError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        return self._items[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
