"""`FrameSlot`: the bounded hand-off between two stages. It holds one item; a newer one replaces
it, and the replaced item is reported so the caller can count it as dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameSlot(Generic[T]):
    """Thread-safe slot of size one. `on_put` runs after every put (e.g. to wake a worker)."""

    def __init__(self, on_put: Callable[[], None] | None = None):
        self._lock = threading.Lock()
        self._item: T | None = None
        self._on_put = on_put

    def put(self, item: T) -> T | None:
        """Store `item`; return the item it replaced (a drop), if any."""
        with self._lock:
            replaced, self._item = self._item, item
        if self._on_put is not None:
            self._on_put()
        return replaced

    def take(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
        return item

    def __bool__(self) -> bool:
        return self._item is not None
