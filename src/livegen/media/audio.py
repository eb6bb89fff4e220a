"""`AudioRelay`: the publisher's Opus packets to every viewer, unchanged and in sync.

Audio is not decoded or re-encoded. Video spends time in the engine and the encoder that audio
does not, so each packet is held for the stream's current video processing delay before it is
released; the viewers' senders then stamp both with the same wall clock in their RTCP sender
reports, which is what players synchronise on. Everything here runs on the asyncio loop and is
bounded: a held packet never waits more than `max_delay_s`, a viewer's mailbox never holds more
than `queue_packets` (the oldest go first: for audio, late is worse than lost).
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import Callable

import av

from livegen.flow.mailbox import Mailbox

OPUS_CLOCK = fractions.Fraction(1, 48_000)


class AudioRelay:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay_s: Callable[[], float],
        max_delay_s: float = 1.0,
        queue_packets: int = 50,
    ):
        self._loop = loop
        self._delay_s = delay_s
        self._max_delay_s = max_delay_s
        self._queue_packets = queue_packets
        self._subscribers: set[Mailbox[av.Packet]] = set()
        self._listeners: dict[int, Callable[[av.Packet], None]] = {}
        """Called with every released packet on the loop (outputs, the AAC encoder); must not block."""
        self._timers: deque[asyncio.TimerHandle] = deque()
        self._last_due = 0.0
        self.packets_in = 0
        self.packets_out = 0
        self.closed = False

    def push(self, payload: bytes, rtp_timestamp: int) -> None:
        """An Opus payload as it arrived; released to viewers after the video delay."""
        if self.closed:
            return
        self.packets_in += 1
        packet = av.Packet(payload)
        packet.pts = rtp_timestamp
        packet.time_base = OPUS_CLOCK
        now = self._loop.time()
        delay = min(max(self._delay_s(), 0.0), self._max_delay_s)
        due = max(now + delay, self._last_due)  # never reorder when the delay shrinks
        self._last_due = due
        self._timers.append(self._loop.call_at(due, self._release, packet))
        while self._timers and self._timers[0].when() < now:
            self._timers.popleft()  # forget handles that have fired

    def _release(self, packet: av.Packet) -> None:
        self.packets_out += 1
        for subscriber in self._subscribers:
            subscriber.put(packet)
        for listener in list(self._listeners.values()):
            listener(packet)

    def add_listener(self, listener: Callable[[av.Packet], None]) -> int:
        handle = max(self._listeners, default=0) + 1
        self._listeners[handle] = listener
        return handle

    def remove_listener(self, handle: int) -> None:
        self._listeners.pop(handle, None)

    def subscribe(self) -> Mailbox[av.Packet]:
        """A viewer's mailbox of `queue_packets` (when full the oldest go: late is worse than lost)."""
        subscription: Mailbox[av.Packet] = Mailbox(self._queue_packets)
        if self.closed:
            subscription.close()
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Mailbox[av.Packet]) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def close(self) -> None:
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
        self._listeners.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
