"""On-disk cache of SAM image embeddings for a frozen vision encoder.

An entry is keyed by the encoder (a hash of its weights), the preprocessing (input size, normalisation,
precision) and the image content (a hash of the pixels the encoder sees, made by the dataset). The folder is
shared by epochs, runs and sweep jobs; files are written atomically, so jobs racing on one entry are safe.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEGDET_CACHE_DIR", Path.home() / ".cache" / "segdet")) / "sam_embeddings"


def encoder_fingerprint(encoder: nn.Module, preprocessing: str) -> str:
    h = hashlib.blake2b(preprocessing.encode(), digest_size=12)
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, root: Path | str | None, dtype: torch.dtype = torch.float32):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.dtype = dtype
        self.dir: Path | None = None
        self.hits = self.misses = 0

    def bind(self, encoder: nn.Module, preprocessing: str) -> None:
        """Point at the entries of this encoder + preprocessing (hashed once, after the weights are loaded)."""
        self.dir = self.root / encoder_fingerprint(encoder, preprocessing)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    def load(self, key: str, device: torch.device) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            emb = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # a torn or foreign file: recompute and overwrite it
            self.misses += 1
            return None
        self.hits += 1
        return emb.float()

    def save(self, key: str, embedding: torch.Tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(embedding.detach().to("cpu", self.dtype).clone(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
