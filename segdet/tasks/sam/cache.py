"""On-disk cache of SAM image embeddings for a frozen vision encoder.

An entry is keyed by the encoder (a hash of its weights), the preprocessing (input size, normalisation,
precision) and the image (made by the dataset: a hash of the image file's bytes, or of a generated scene's
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

from segdet.data.atomic import write_atomic
from segdet.errors import WriteFailed

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEGDET_CACHE_DIR", Path.home() / ".cache" / "segdet")) / "sam_embeddings"


FINGERPRINT_CHARS = 24  # hex digits of a 12-byte blake2b
# An entry is a header (magic, dtype, shape) and the raw tensor bytes: far faster to read than torch.load, and it
# holds no pickle at all.
MAGIC = b"segdet-embedding-1\n"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def write_entry(path, t: torch.Tensor) -> None:
    """Atomically (``data.atomic``): runs and sweep jobs racing on one entry are safe, and a failed write leaves
    nothing behind."""
    header = json.dumps({"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}).encode() + b"\n"

    def write(f):
        f.write(MAGIC + header)
        f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    write_atomic(path, write)


def read_entry(path) -> torch.Tensor:
    with open(path, "rb") as f:
        if f.readline() != MAGIC:
            raise ValueError(f"{path}: not an embedding entry")
        header = json.loads(f.readline())
        raw = np.fromfile(f, dtype=np.uint8)
    dtype = DTYPES.get(header.get("dtype")) if isinstance(header, dict) else None
    shape = header.get("shape") if dtype is not None else None
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"{path}: not an embedding entry (bad header)")
    if raw.size != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{path}: cut short")
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def encoder_fingerprint(encoder: nn.Module, preprocessing: str) -> str:
    h = hashlib.blake2b(preprocessing.encode(), digest_size=FINGERPRINT_CHARS // 2)
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
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

    def read(self, key: str) -> torch.Tensor | None:
        """The stored CPU tensor, or None (absent, torn or foreign: the model recomputes and overwrites it)."""
        try:
            return read_entry(self._path(key))
        except (OSError, ValueError, RuntimeError):
            return None

    def write(self, key: str, embedding: torch.Tensor) -> None:
        if not self.writable:
            return
        try:
            write_entry(self._path(key), embedding.detach().to("cpu", self.dtype))
        except WriteFailed as e:
            self._stop_writing(e)
