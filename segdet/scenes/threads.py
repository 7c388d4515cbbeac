"""Work on a scene's strips in a few threads, in order, with a bounded number in flight.

OpenCV and GEOS work without holding Python's lock, so tracing strips in two threads uses two cores; the strips
are read in the caller's thread (a GDAL dataset is not shared between threads) and at most ``workers + 1`` are
held at once, whatever the scene's size.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each item, in the items' order, computed by ``workers`` threads (1: in this thread)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segdet-strip") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
