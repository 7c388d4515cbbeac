"""On-disk cache of SAM image embeddings for a frozen vision encoder.

An entry is keyed by the encoder (its family and a hash of its weights), the preprocessing (input size,
normalisation, precision) and the image (made by the dataset: a hash of the image file's bytes, or of a generated scene's
recipe, and of the offline copy made from it). The folder is shared by epochs, runs and sweep jobs.

The data flows one way: the dataset reads an entry into the sample, the model uses the embeddings the batch
carries and encodes only the misses, and writes those to the store.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segdet.files.atomic import write_atomic
from segdet.errors import WriteFailed

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEGDET_CACHE_DIR", Path.home() / ".cache" / "segdet")) / "sam_embeddings"


FINGERPRINT_CHARS = 24  # hex digits of a 12-byte blake2b
# An entry is a header (magic, then each tensor's dtype and shape) and the raw bytes of its tensors, one after the
# other: far faster to read than torch.load, and it holds no pickle at all. SAM's entry is one tensor, SAM-HQ's and
# SAM 2's are several (segdet.tasks.sam.family).
MAGIC = b"segdet-embedding-2\n"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def write_entry(path, tensors: tuple[torch.Tensor, ...]) -> None:
    """Atomically (``files.atomic``): runs and sweep jobs racing on one entry are safe, and a failed write leaves
    nothing behind."""
    header = json.dumps([{"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                         for t in tensors]).encode() + b"\n"

    def write(f):
        f.write(MAGIC + header)
        for t in tensors:
            f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    write_atomic(path, write)


def read_entry(path) -> tuple[torch.Tensor, ...]:
    with open(path, "rb") as f:
        if f.readline() != MAGIC:
            raise ValueError(f"{path}: not an embedding entry")
        header = json.loads(f.readline())
        raw = np.fromfile(f, dtype=np.uint8)
    if not (isinstance(header, list) and header and all(isinstance(h, dict) for h in header)):
        raise ValueError(f"{path}: not an embedding entry (bad header)")
    out, offset = [], 0
    for h in header:
        dtype, shape = DTYPES.get(h.get("dtype")), h.get("shape")
        if dtype is None or not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{path}: not an embedding entry (bad header)")
        n = math.prod(shape) * dtype.itemsize
        if offset + n > raw.size:
            raise ValueError(f"{path}: cut short")
        out.append(torch.from_numpy(raw[offset: offset + n]).view(dtype).reshape(shape))
        offset += n
    if offset != raw.size:
        raise ValueError(f"{path}: not an embedding entry (trailing bytes)")
    return tuple(out)


def encoder_fingerprint(parts: dict, preprocessing: str) -> str:
    """A hash of ``preprocessing`` and of the weights of ``parts`` (name -> module or parameter): everything that
    makes the embeddings what they are."""
    h = hashlib.blake2b(preprocessing.encode(), digest_size=FINGERPRINT_CHARS // 2)
    for part, obj in sorted(parts.items()):
        state = obj.state_dict() if isinstance(obj, nn.Module) else {"": obj}
        for name, t in sorted(state.items()):
            h.update(f"{part}.{name}".encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingStore:
    """The entries of one encoder + preprocessing (its ``fingerprint``: ``encoder_fingerprint``) under
    ``root/<fingerprint>/``. The task makes it once the model's weights and precision are final and hands it to
    both sides: the datasets ``read`` entries (in the DataLoader workers, ahead of the step), the model ``write``s
    the embeddings it had to compute. Nothing flows back: the fingerprint is fixed for the store's life."""

    def __init__(self, root: Path | str | None, fingerprint: str, dtype: torch.dtype = torch.float32):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.fingerprint, self.dtype = fingerprint, dtype
        self.writable = True
        try:
            (self.root / fingerprint).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._stop_writing(WriteFailed.of(self.root / fingerprint, e))

    def _stop_writing(self, error: WriteFailed) -> None:
        """A cache that cannot be written is not worth stopping a run for: one warning, and the run goes on
        computing what it cannot store (entries already there are still read)."""
        self.writable = False
        log.warning("embedding cache: %s; training goes on without caching new embeddings "
                    "(model.cache_dir=DIR for another folder)", error)

    def _path(self, key: str) -> Path:
        return self.root / self.fingerprint / key[:2] / f"{key}.emb"

    def read(self, key: str) -> tuple[torch.Tensor, ...] | None:
        """The stored CPU tensors, or None (absent, torn or foreign: the model recomputes and overwrites it)."""
        try:
            return read_entry(self._path(key))
        except (OSError, ValueError, RuntimeError):
            return None

    def write(self, key: str, embedding: tuple[torch.Tensor, ...]) -> None:
        if not self.writable:
            return
        try:
            write_entry(self._path(key), tuple(t.detach().to("cpu", self.dtype) for t in embedding))
        except WriteFailed as e:
            self._stop_writing(e)
