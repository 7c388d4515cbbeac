"""Each image's SAM embedding, computed once: a click costs only the prompt encoder and mask decoder.

An embedding is looked up in a small in-memory LRU (``memory_items`` entries), then in the on-disk embedding cache
that training uses (``tasks.sam.cache.EmbeddingStore``, keyed the same way: the encoder's fingerprint and a hash of
the image file's bytes), and only then encoded, and written there. The next image's embedding is prefetched in
the background while the user clicks on this one.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from segdet.annotate.loading import Loaded
from segdet.data.io import load_rgb
from segdet.tasks.sam.datasets import entry_key
from segdet.tasks.sam.sources import file_key

log = logging.getLogger(__name__)


class EmbeddingLRU:
    """At most ``capacity`` embeddings in memory, least recently used out first; one computation per key at a
    time (a second request for a key being computed waits for it)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict = {}

    def get(self, key, compute):
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                event = self._busy.get(key)
                if event is None:
                    event = self._busy[key] = threading.Event()
                    break
            event.wait()
        try:
            value = compute()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._busy.pop(key, None)
            event.set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ImageEmbeddings:
    """The embeddings of the images of ``images`` (an ``AnnotationStore``: ids to files, never paths from a
    request) for whichever ``Loaded`` segmenter asks."""

    def __init__(self, images, memory_items: int, prefetch: bool):
        self.images = images
        self.memory = EmbeddingLRU(memory_items)
        self._keys: dict = {}  # file hashes, remembered while the file's size and time stay the same
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="annotate-prefetch") if prefetch else None

    def key(self, image_id) -> str:
        """The image's cache key, as training's ``SamDataset.key`` makes it for the same file."""
        return entry_key(file_key(self._keys, image_id, self.images.image_path(image_id)))

    def get(self, loaded: Loaded, image_id) -> tuple[str, tuple[torch.Tensor, ...]]:
        """(cache key, the image's embedding tensors as float32 on the model's device)."""
        key = self.key(image_id)
        fingerprint = loaded.store.fingerprint if loaded.store is not None else id(loaded)

        def compute():
            found = loaded.store.read(key) if loaded.store is not None else None
            if found is None:
                image = self.pixels(loaded, image_id)
                with torch.no_grad(), loaded.runtime.autocast():
                    fresh = loaded.model.encode([image]).image(0)
                if loaded.store is not None:
                    loaded.store.write(key, fresh)
                found = fresh
            return tuple(t.detach().to(loaded.runtime.device).float() for t in found)
        return key, self.memory.get((fingerprint, key), compute)

    def pixels(self, loaded: Loaded, image_id) -> torch.Tensor:
        """The image as the encoder takes it: uint8 (3, H, W) on the model's device."""
        pixels = load_rgb(self.images.image_path(image_id))
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(loaded.runtime.device)

    def prefetch_after(self, loaded: Loaded, image_id) -> None:
        """Compute the embedding of the image after ``image_id`` in the background."""
        if self._prefetch is None:
            return
        ids = self.images.image_ids()
        at = next((k for k, i in enumerate(ids) if str(i) == str(image_id)), None)
        if at is None or at + 1 >= len(ids):
            return
        nxt = ids[at + 1]

        def work():
            try:
                self.get(loaded, nxt)
            except Exception as e:  # noqa: BLE001 -- a prefetch that fails is computed (and reported) on use
                log.warning("annotate: prefetching image %s: %s", nxt, e)
        self._prefetch.submit(work)

    def clear(self) -> None:
        """Drop the in-memory embeddings (of an encoder no longer in use)."""
        self.memory.clear()

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=False, cancel_futures=True)
