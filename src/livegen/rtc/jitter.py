"""A video jitter buffer for the node's ingest that hands a frame on as soon as it is whole.

aiortc's buffer emits a frame only when the first packet of the *next* frame arrives, which
costs one frame interval (33 ms at 30 fps) on every ingest. This subclass also emits when the
packets from the buffer's origin form one frame ending in the RTP marker bit (the sender's
"last packet of this frame"). It records when each frame's first packet arrived, keyed the way
aiortc's receiver re-times decoded frames (RTP timestamp minus that of the first frame), so the
engine can measure a frame's time in the node from its arrival on the wire, and when the frame
was complete (handed to the decoder), so its decode time can be measured too.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

ARRIVALS_KEPT = 128
RTP_WRAP = 1 << 32


class FrameOnMarkerJitterBuffer(JitterBuffer):
    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self._first_seen: OrderedDict[int, float] = OrderedDict()
        self._arrivals: OrderedDict[int, tuple[float, float]] = OrderedDict()
        self._first_emitted: int | None = None

    def add(self, packet) -> tuple[bool, JitterFrame | None]:
        if packet.timestamp not in self._first_seen:
            self._first_seen[packet.timestamp] = time.perf_counter()
            while len(self._first_seen) > ARRIVALS_KEPT:
                self._first_seen.popitem(last=False)
        pli, frame = super().add(packet)
        if frame is not None:
            if self._first_emitted is None:
                self._first_emitted = frame.timestamp
            arrived = self._first_seen.get(frame.timestamp)
            if arrived is not None:
                key = (frame.timestamp - self._first_emitted) % RTP_WRAP
                self._arrivals[key] = (arrived, time.perf_counter())
                while len(self._arrivals) > ARRIVALS_KEPT:
                    self._arrivals.popitem(last=False)
        return pli, frame

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = super()._remove_frame(sequence_number)
        if frame is not None:
            return frame
        packets = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packet.timestamp)
        return None

    def arrival(self, pts: int) -> tuple[float, float] | None:
        """perf_counter times at which the decoded frame with this pts began to arrive (its first
        packet) and was complete (handed on to the decoder)."""
        return self._arrivals.pop(pts, None)


def install(receiver) -> FrameOnMarkerJitterBuffer:
    """Give an aiortc video receiver this buffer; call before media flows (at the track event)."""
    buffer = FrameOnMarkerJitterBuffer()
    receiver._RTCRtpReceiver__jitter_buffer = buffer
    return buffer
