"""Image-state cache: the recurrent state after ``(prompt prefix, image)`` computed once, reused for further
questions about the same image.

The key is a SHA-256 over the model's identity and visual settings, the token ids of every text chunk before
(and between) the images, and each image's content hash (RGB size + pixels, so the same picture under another
path or file name hits, and a changed file misses).  The value is ``(logits [1, V], State)`` right after the
image: States are immutable (``forward``/``step`` never write into them), so a cached entry is shared safely.

What it buys depends on the template: with image-first prompts (v6 ``first``, all v7 prompts) the prefix before
the image is ``"User: "``, so every question about an image reuses its state and pays only for its own tokens.
The v6 sandwich prompt (``middle``) puts the question *before* the image, so only a repeated identical question
prefix hits; a chat's follow-up turns continue from the running state instead.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Iterable, Optional


def prefix_key(model_key: str, item_keys: Iterable[str]) -> str:
    h = hashlib.sha256(model_key.encode())
    for k in item_keys:
        h.update(b"\x00")
        h.update(k.encode())
    return h.hexdigest()


class ImageStateCache:
    """A small thread-safe LRU of ``key -> (logits, state)``; ``max_entries`` bounds memory (one RWKV state is
    ``n_layer * (2C + H*N*N)`` floats: ~19 MB for a 24-layer 2048-wide model)."""

    def __init__(self, max_entries: int = 8):
        if max_entries < 1:
            raise ValueError("ImageStateCache needs max_entries >= 1")
        self.max_entries = max_entries
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def peek(self, key: str) -> Optional[tuple]:
        """The entry (marked most recently used) or None; does not count a hit or miss."""
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def record(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def get(self, key: str) -> Optional[tuple]:
        v = self.peek(key)
        self.record(v is not None)
        return v

    def put(self, key: str, value: tuple) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
