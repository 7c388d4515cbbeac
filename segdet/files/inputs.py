"""predict's inputs as its output folder knows them: the key its journal files an input under, the stamp that says
whether the input changed since, and the safe, distinct name its output files take.

A local file is keyed by its absolute path and stamped by its size and modification time. Another kind of input
(a URL) is described by the module that reads it, which registers the kind (``register``) when imported: this
package reads files and imports nothing above it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class InputKind:
    """How the output folder treats the inputs ``claims`` says are of this kind."""
    claims: Callable[[object], bool]
    key: Callable[[object], str]              # the journal's name for the input
    stamp: Callable[[object], list]           # what a resumed predict compares
    name_path: Callable[[object], Path]       # what its output files are named after


_KINDS: list[InputKind] = []


def register(kind: InputKind) -> None:
    """Add (or replace, by ``claims``) a kind of input that is not a local file."""
    _KINDS[:] = [k for k in _KINDS if k.claims is not kind.claims] + [kind]


def _kind(path) -> InputKind | None:
    return next((k for k in _KINDS if k.claims(path)), None)


def input_key(path) -> str:
    """An input as the journal names it: its absolute path, however ``input=`` was spelled (another kind: its own
    key, a URL as given)."""
    kind = _kind(path)
    return kind.key(path) if kind is not None else str(Path(path).resolve())


def input_stamp(path) -> list:
    """What says an input changed: size and modification time (another kind: its own, e.g. a server's ETag)."""
    kind = _kind(path)
    if kind is not None:
        return kind.stamp(path)
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def name_path(path) -> Path:
    """The path an input's output files are named after (a URL's: its path's last part, without the query)."""
    kind = _kind(path)
    return kind.name_path(path) if kind is not None else Path(path)


def output_names(paths) -> dict[Path, str]:
    """A file-name stem for what predict writes about each input: the input's own stem where that is safe and
    unique, so ``photos/a b.jpg`` gives ``a b``. Anything but letters, digits, ``_ . - +`` and spaces becomes
    ``_`` (no separators, control characters or hidden names), and a stem met twice (``a.jpg`` and ``a.png``,
    or names equal but for case) gets ``_2``, ``_3`` ... in input order, so no prediction overwrites another."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem = re.sub(r"[^\w.\-+ ]", "_", Path(path).stem).strip(" .") or "image"
        name, k = stem, 2
        while name.casefold() in taken:
            name, k = f"{stem}_{k}", k + 1
        taken.add(name.casefold())
        names[Path(path)] = name
    return names
