"""An LRU cache of text-encoder outputs, so a repeated prompt skips the text encoder.

Keys are (prompt, negative prompt, whether guidance needs the negative); values are whatever
the pipeline's ``encode_prompt`` returned (tensors on the execution device). One cache per
loaded pipeline, so a key never mixes models. UMT5-XXL embeddings of one 512-token prompt
pair are 8 MiB in bf16; the default 32 entries cost about 256 MiB of GPU memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class PromptCache(Generic[V]):
    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache size must be 0 or more, got {size}")
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value for ``key``, or ``compute()`` (then kept, evicting the oldest)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = compute()
        if self.size:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
