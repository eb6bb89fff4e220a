"""Every use of aiortc's and aioice's private names, in one place, with why.

The node needs a few things aiortc does not offer as public API. Each is patched here and only
here; `pyproject.toml` pins the aiortc and aioice minor versions this was verified with, and
`verify()` (run by the app factory and by a test) names any private attribute that an upgrade
removed, rather than letting it fail on the first publish.

What is patched, and why:
- the video receiver's jitter buffer (`RTCRtpReceiver.__jitter_buffer`): aiortc's buffer emits a
  frame only when the next frame's first packet arrives, one frame interval late on every
  ingest; `FrameOnMarkerJitterBuffer` also emits on the RTP marker bit and records arrival
  times (it reads the buffer's `_packets`, `_origin` and `_remove_frame`, and packets' `_data`).
- a receiver's RTP handler (`RTCRtpReceiver._handle_rtp_packet`): the ingest taps Opus payloads
  there to relay them without decoding; the fan-out bench counts packets there without decoding.
- a sender's keyframe request (`RTCRtpSender._send_keyframe`): a viewer's PLI/FIR goes to the
  stream's shared encoder, not to aiortc's per-sender one, which encode-once never uses.
- a sender's encoder (`RTCRtpSender.__encoder`): in per_viewer mode (and the e2e bench's
  baseline) frames are encoded with the node's own encoder settings, not aiortc's libx264
  defaults (x264's `medium` preset, a bitrate that follows REMB), so per-viewer and encode-once
  differ only in how often a frame is encoded; aiortc's packetizer for the codec is kept.
- a receiver's statistics and `_send_rtcp` (the fan-out bench's counting viewer sends receiver
  reports like a real one), and its decoder thread (the bench measures what decoding costs a
  viewer).
- DTLS cipher suites (`RTCCertificate._create_ssl_context`): aiortc offers only ECDHE-ECDSA
  suites, so peers with RSA certificates (GStreamer's webrtcbin) had no suite in common.
- ICE host addresses (`aioice.ice.get_host_addresses`) and a UDP port range (aiortc's
  `rtcicetransport.Connection`, aioice's `Connection._protocols`): which interfaces and ports
  the node gathers candidates on. Process-wide: the app factory applies them once.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aioice.ice
import aiortc.rtcicetransport
import av
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtp import RtpPacket

# (object, private attribute) pairs this module relies on; `verify()` checks each one.
_RECEIVER_JITTER = "_RTCRtpReceiver__jitter_buffer"
_RECEIVER_STREAMS = "_RTCRtpReceiver__remote_streams"
_RECEIVER_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
_SENDER_ENCODER = "_RTCRtpSender__encoder"
CLASS_ATTRIBUTES: tuple[tuple[Any, str], ...] = (
    (RTCRtpReceiver, "_handle_rtp_packet"),
    (RTCRtpReceiver, "_send_rtcp"),
    (RTCRtpSender, "_send_keyframe"),
    (RTCRtpSender, "_next_encoded_frame"),
    (RTCCertificate, "_create_ssl_context"),
    (JitterBuffer, "_remove_frame"),
    (aioice.ice, "get_host_addresses"),
    (aioice.ice, "StunProtocol"),
    (aioice.ice, "server_reflexive_candidate"),
    (aiortc.rtcicetransport, "Connection"),
)
INSTANCE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    # set in __init__, so looked for on a fresh instance
    "RTCRtpReceiver": (_RECEIVER_JITTER, _RECEIVER_STREAMS, _RECEIVER_DECODER_THREAD),
    "JitterBuffer": ("_packets", "_origin"),
    "Connection": ("_protocols",),
}
SOURCE_MENTIONS: tuple[tuple[Any, str], ...] = (
    # packets get `_data` (the depacketized payload) from the receiver before they reach the buffer
    (RTCRtpReceiver._handle_rtp_packet, "packet._data"),
    # a sender makes its encoder only when it has none, so one set before media flows is kept
    (RTCRtpSender._next_encoded_frame, "if self.__encoder is None:"),
)


class AiortcMismatch(RuntimeError):
    """The installed aiortc/aioice lacks a private name the node patches."""


def missing_attributes() -> list[str]:
    """`module.Class.attribute` for every private name this module uses that is not there."""
    missing = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in CLASS_ATTRIBUTES if not hasattr(owner, name)]
    instances = {
        "RTCRtpReceiver": lambda: RTCRtpReceiver("video", transport=_NoTransport()),
        "JitterBuffer": lambda: JitterBuffer(capacity=16, is_video=True),
        "Connection": lambda: aioice.ice.Connection(ice_controlling=False),
    }
    for kind, names in INSTANCE_ATTRIBUTES.items():
        try:
            instance = instances[kind]()
        except Exception as exc:  # a changed constructor is a mismatch too
            missing.append(f"{kind}() ({exc})")
            continue
        missing += [f"{kind}.{name}" for name in names if not hasattr(instance, name)]
    for function, text in SOURCE_MENTIONS:
        try:
            found = text in inspect.getsource(function)
        except (OSError, TypeError):
            found = False
        if not found:
            missing.append(f"{function.__qualname__} setting {text}")
    return missing


def verify() -> None:
    """Raise `AiortcMismatch` naming every private attribute that this aiortc/aioice lacks."""
    missing = missing_attributes()
    if missing:
        raise AiortcMismatch(
            "the installed aiortc/aioice lack what livegen patches: " + ", ".join(missing)
            + " (use the versions pinned in pyproject.toml)"
        )


class _NoTransport:
    """Enough of a DTLS transport for constructing a receiver to look at (never started)."""

    state = "new"

    def _register_rtp_receiver(self, *args: Any) -> None: ...


# ---- ingest: jitter buffer --------------------------------------------------------------------
ARRIVALS_KEPT = 128
RTP_WRAP = 1 << 32


class FrameOnMarkerJitterBuffer(JitterBuffer):
    """Emits a frame as soon as it is whole (RTP marker bit), and records when each frame's
    first packet arrived and when it was complete, keyed the way aiortc's receiver re-times
    decoded frames (RTP timestamp minus that of the first frame)."""

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


def install_jitter_buffer(receiver: RTCRtpReceiver) -> FrameOnMarkerJitterBuffer:
    """Give a video receiver the frame-on-marker buffer; call before media flows (at the track
    event)."""
    buffer = FrameOnMarkerJitterBuffer()
    setattr(receiver, _RECEIVER_JITTER, buffer)
    return buffer


# ---- receivers and senders --------------------------------------------------------------------
RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]


def tap_rtp(receiver: RTCRtpReceiver, observe: Callable[[RtpPacket], None]) -> None:
    """Call `observe(packet)` for every RTP packet the receiver gets, before aiortc handles it."""
    handle = receiver._handle_rtp_packet

    async def observe_and_handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        observe(packet)
        await handle(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = observe_and_handle  # type: ignore[method-assign]


def replace_rtp_handler(receiver: RTCRtpReceiver, handler: RtpHandler) -> None:
    """Send the receiver's RTP packets to `handler(packet, arrival_time_ms)` instead of aiortc's
    depacketizer and decoder (nothing is decoded)."""
    receiver._handle_rtp_packet = handler  # type: ignore[method-assign]


def receiver_statistics(receiver: RTCRtpReceiver) -> dict[int, Any] | None:
    """The receiver's per-SSRC statistics (what its receiver reports are built from), or None."""
    return getattr(receiver, _RECEIVER_STREAMS, None)


async def send_rtcp(receiver: RTCRtpReceiver, packet: Any) -> None:
    await receiver._send_rtcp(packet)


def decoder_thread_id(receiver: RTCRtpReceiver) -> int | None:
    """The OS thread id of aiortc's decoder thread for `receiver`, once it runs (the fan-out
    bench measures the CPU a viewer spends decoding)."""
    return getattr(getattr(receiver, _RECEIVER_DECODER_THREAD, None), "native_id", None)


def route_keyframe_requests(sender: RTCRtpSender, request: Callable[[], None]) -> None:
    """A PLI/FIR that reaches `sender` calls `request()` instead of asking aiortc's encoder."""
    sender._send_keyframe = request  # type: ignore[method-assign]


class FrameEncoder(Protocol):
    """An encoder of the node's (media's `VideoEncoder`), as a sender may run it."""

    codec: str

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[av.Packet]: ...


class _OwnEncoder(Encoder):
    """aiortc's encoder interface over `FrameEncoder`; aiortc's own encoder for the codec only
    packetizes. No `target_bitrate`: the bitrate stays the configured one, whatever REMB says."""

    def __init__(self, frames: FrameEncoder):
        self.frames = frames
        self._packetizer = get_encoder(RTCRtpCodecParameters(mimeType=f"video/{frames.codec}", clockRate=90_000))

    def encode(self, frame: av.Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        payloads: list[bytes] = []
        timestamp = 0
        for packet in self.frames.encode(frame, force_keyframe):
            more, timestamp = self._packetizer.pack(packet)
            payloads += more
        return payloads, timestamp

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        return self._packetizer.pack(packet)


def encode_with(sender: RTCRtpSender, frames: FrameEncoder) -> None:
    """`sender` encodes each frame of its track with `frames` (on aiortc's encoder thread, as
    its own encoder would) and packetizes the result as aiortc does. Call once the codec is
    negotiated (`frames.codec`), before media flows."""
    setattr(sender, _SENDER_ENCODER, _OwnEncoder(frames))


# ---- DTLS -------------------------------------------------------------------------------------
CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
_AIORTC_CONTEXT = RTCCertificate._create_ssl_context


def _context_with_rsa_suites(self, srtp_profiles):
    context = _AIORTC_CONTEXT(self, srtp_profiles)
    context.set_cipher_list(CIPHERS)
    return context


def offer_rsa_cipher_suites() -> None:
    """Also offer the ECDHE-RSA AEAD suites (as strong) as the DTLS client."""
    RTCCertificate._create_ssl_context = _context_with_rsa_suites


# ---- ICE --------------------------------------------------------------------------------------
_AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses
_AIOICE_CONNECTION = aioice.ice.Connection


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on `addresses`; an empty list restores aioice's default
    (every interface but loopback)."""
    if not addresses:
        aioice.ice.get_host_addresses = _AIOICE_HOST_ADDRESSES
        return
    allowed = tuple(addresses)

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured_host_addresses


class PortRangeConnection(_AIOICE_CONNECTION):
    """An aioice connection whose host sockets are bound within `port_range` (inclusive)."""

    port_range: tuple[int, int] = (0, 0)

    async def _bind(self, address: str) -> aioice.ice.StunProtocol | None:
        loop = asyncio.get_running_loop()
        low, high = self.port_range
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        for port in ports[start:] + ports[:start]:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), local_addr=(address, port)
                )
            except OSError:
                continue  # taken: try the next one
            return protocol
        return None

    async def get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5) -> list[Candidate]:
        protocols = []
        for address in addresses:
            protocol = await self._bind(address)
            if protocol is None:
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            protocols.append(protocol)
        self._protocols += protocols
        candidates = [p.local_candidate for p in protocols]
        if self.stun_server:
            queries = [
                asyncio.ensure_future(aioice.ice.server_reflexive_candidate(p, self.stun_server))
                for p in protocols
                if ":" not in p.local_candidate.host
            ]
            if queries:
                done, pending = await asyncio.wait(queries, timeout=timeout)
                for task in pending:
                    task.cancel()
                candidates += [t.result()[0] for t in done if t.exception() is None]
        # a TURN relay (if configured) comes from aioice itself, which binds its own socket
        return candidates + await super().get_component_candidates(component, [], timeout)


def use_port_range(port_range: tuple[int, int] | None) -> None:
    """Bind ICE host sockets within this inclusive UDP port range; None restores random ports."""
    if port_range is None:
        aiortc.rtcicetransport.Connection = _AIOICE_CONNECTION
        return
    connection = type("ConfiguredPortRangeConnection", (PortRangeConnection,), {"port_range": port_range})
    aiortc.rtcicetransport.Connection = connection


def apply_policy(host_addresses: Sequence[str], udp_ports: tuple[int, int] | None) -> None:
    """What the app factory applies once: checked internals, ICE addresses and ports, DTLS suites."""
    verify()
    use_host_addresses(host_addresses)
    use_port_range(udp_ports)
    offer_rsa_cipher_suites()
