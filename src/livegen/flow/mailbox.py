"""`Mailbox`: a bounded queue between a producer and one consumer on the same asyncio loop.

Live media never waits in an unbounded queue. A mailbox of capacity one is a "latest wins"
hand-off (a viewer's next frame); a larger one keeps order and, when full, drops its oldest item
(for audio, late is worse than lost). Every dropped item is counted. Consumers that need another
policy when full (video packets: drop everything and resume at a keyframe) check `full` and
`clear()` before they `put`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, capacity: int = 1):
        if capacity < 1:
            raise ValueError(f"a mailbox holds at least one item, not {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Items that were replaced or cleared before the consumer took them."""

    def put(self, item: T) -> None:
        """Add `item`; when full, the oldest item is dropped to make room. Ignored once closed."""
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    @property
    def full(self) -> bool:
        return len(self._items) == self._items.maxlen

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> int:
        """Drop everything waiting (counted); how many items that was."""
        count = len(self._items)
        self._items.clear()
        self.dropped += count
        return count

    def close(self) -> None:
        """Wake the consumer, whose `get` then returns None; nothing more is accepted."""
        self._closed = True
        self._items.clear()
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> T | None:
        """The oldest item waiting, once there is one; None once the mailbox is closed."""
        while not self._closed:
            if self._items:
                return self._items.popleft()
            self._ready.clear()
            await self._ready.wait()
        return None
