"""nginx-rtmp for the relay tests, and the synthetic encoded media pushed through outputs (H.264
from libx264, AAC from the node's own `AacEncoder`, Opus from libopus), made in the test, never
committed.

`NginxRtmp` (in `livegen.testing.nginx_rtmp`, which the bench shares) runs Debian's nginx with
libnginx-mod-rtmp on a free 127.0.0.1 port. The `nginx_rtmp` fixture gives one in a temporary
folder; it and `require_nginx_rtmp` skip when nginx or the module is missing, except in CI
(CI=true), where they fail.

Use it from a test module with `from tests.nginx_rtmp import nginx_rtmp_fixture  # noqa: F401`
and a `nginx_rtmp` argument.
"""

from __future__ import annotations

import contextlib
import fractions
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from livegen.media.packet import MediaPacket

# the server itself lives with the bench, which needs it too; the tests keep importing it from here
from livegen.testing.nginx_rtmp import (  # noqa: F401
    NGINX,
    RTMP_MODULE,
    NginxRtmp,
    free_port,
    nginx_missing,
)

VIDEO_CLOCK = fractions.Fraction(1, 90_000)
AUDIO_CLOCK = fractions.Fraction(1, 48_000)


class TlsTerminator:
    """RTMPS in front of an RTMP server, as platforms offer it: TLS on 127.0.0.1:`port` with a
    self-signed certificate for 127.0.0.1 (`cert_file`), plain TCP to `upstream_port`."""

    def __init__(self, folder: Path, upstream_port: int):
        self.upstream_port = upstream_port
        self.cert_file, key_file = folder / "cert.pem", folder / "key.pem"
        self._write_certificate(key_file)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert_file, key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, name="test-tls-accept", daemon=True).start()

    def _write_certificate(self, key_file: Path) -> None:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "livegen test")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_file.write_bytes(private)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="test-tls-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            secure = self._context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # a client that does not trust us hangs up during the handshake
            client.close()
            return
        self._sockets += [secure, upstream]
        # one thread per connection: an SSL socket must not be read and written concurrently
        try:
            while True:
                readable = [secure] if secure.pending() else select.select([secure, upstream], [], [])[0]
                for source, sink in ((secure, upstream), (upstream, secure)):
                    if source in readable:
                        data = source.recv(65536)
                        if not data:
                            raise ConnectionResetError
                        sink.sendall(data)
        except (OSError, ValueError):
            pass
        for end in (secure, upstream):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def require_nginx_rtmp() -> None:
    """Skip the calling test when nginx-rtmp cannot run here; fail it in CI (CI=true)."""
    reason = nginx_missing()
    if reason is not None:
        message = f"{reason}: run scripts/install-nginx-rtmp.sh (Debian: nginx, libnginx-mod-rtmp)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the RTMP tests")
        pytest.skip(message)


@pytest.fixture(name="nginx_rtmp")
def nginx_rtmp_fixture(tmp_path: Path) -> Iterator[NginxRtmp]:
    require_nginx_rtmp()
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    yield server
    server.stop()


# ---- synthetic media ------------------------------------------------------------------------
def luma_level(index: int) -> int:
    """The flat grey of frame `index` of a GOP: a distinct level per frame, so a decoded
    picture says which frame it was."""
    return 40 + 5 * (index % 30)


def h264_gop(width: int = 640, height: int = 360, frames: int = 30) -> list[bytes]:
    """`frames` encoded frames, the first an IDR with SPS/PPS in-band, as the node's encoder
    makes them (constrained baseline, Annex B, no B-frames); frame i is flat `luma_level(i)`."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base, context.framerate = VIDEO_CLOCK, fractions.Fraction(30, 1)
    context.profile, context.max_b_frames, context.gop_size = "Baseline", 0, 10 * frames
    context.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "scenecut=0:repeat-headers=1"}
    packets: list[bytes] = []
    for i in range(frames):
        picture = np.full((height * 3 // 2, width), 128, np.uint8)
        picture[:height] = luma_level(i)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts, frame.time_base = i * 3000, VIDEO_CLOCK
        packets += [bytes(p) for p in context.encode(frame)]
    packets += [bytes(p) for p in context.encode(None)]
    assert len(packets) == frames
    return packets


def video_packet(data: bytes, index: int, keyframe: bool) -> av.Packet:
    packet = av.Packet(data)
    packet.pts = packet.dts = index * 3000
    packet.time_base = VIDEO_CLOCK
    packet.is_keyframe = keyframe
    return packet


def aac_packets(seconds: float, frequency: float = 440.0) -> list[av.Packet]:
    """AAC-LC 48 kHz stereo of a tone, pts from 0 in 1/48000 (as `AacEncoder` hands them on)."""
    context = av.CodecContext.create("aac", "w")
    context.sample_rate, context.layout, context.format = 48_000, "stereo", "fltp"
    context.time_base = AUDIO_CLOCK
    context.open()
    packets: list[av.Packet] = []
    for n in range(int(seconds * 48_000 / 1024)):
        t = (n * 1024 + np.arange(1024)) / 48_000
        tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, n * 1024, AUDIO_CLOCK
        packets += list(context.encode(frame))
    shift = -packets[0].pts
    for packet in packets:
        packet.pts = packet.dts = packet.pts + shift
        packet.time_base = AUDIO_CLOCK
    return packets


def recorded_feed(gop: list[bytes], seconds: float, origin: float = 1000.0) -> list[MediaPacket]:
    """`seconds` of 30 fps video (the GOP repeated) and tone AAC, in the order of their `at`
    (the audio's first packet at the first frame's time): what an output gets, without waiting."""
    video = [
        MediaPacket("video", video_packet(gop[i % len(gop)], i, i % len(gop) == 0), origin + i / 30)
        for i in range(int(seconds * 30))
    ]
    audio = [MediaPacket("audio", p, origin + (p.pts - 1024) / 48_000) for p in aac_packets(seconds)]
    return sorted(video + audio, key=lambda item: item.at)


class LiveVideoFeed:
    """Video at 30 fps real time from a thread, the GOP repeated; `request_keyframe` makes the
    next frame the GOP's IDR, as the stream's encoder does."""

    def __init__(self, gop: list[bytes], offer: Callable[[MediaPacket], None]):
        self._gop = gop
        self._offer = offer
        self._keyframe = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-video-feed", daemon=True)
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._keyframe.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        started = time.monotonic()
        position = 0
        for index in range(10**9):
            if self._keyframe.is_set():
                self._keyframe.clear()
                position = 0
            due = started + index / 30
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._offer(MediaPacket("video", video_packet(self._gop[position], index, position == 0), time.monotonic()))
            position = (position + 1) % len(self._gop)


def play(url: str, seconds: float, timeout: float = 10.0) -> dict[str, list]:
    """Read `url` (an RTMP stream) for `seconds` of video: per stream, its codec; the decoded
    video frames as (seconds, mean luma); the audio packets' times; the decoded audio's
    (sample rate, layout)s."""
    result: dict[str, list] = {"codecs": [], "video": [], "audio": [], "audio_format": []}
    with av.open(url, timeout=(timeout, timeout), options={"analyzeduration": "500000"}) as container:
        result["codecs"] = sorted(s.codec_context.name for s in container.streams if s.type in ("audio", "video"))
        for packet in container.demux():
            if packet.pts is None:
                continue
            at = float(packet.pts * packet.time_base)
            if packet.stream.type == "audio":
                result["audio"].append(at)
                for frame in packet.decode():
                    if (frame.sample_rate, frame.layout.name) not in result["audio_format"]:
                        result["audio_format"].append((frame.sample_rate, frame.layout.name))
            elif packet.stream.type == "video":
                for frame in packet.decode():
                    luma = frame.to_ndarray(format="yuv420p")[: frame.height]
                    result["video"].append((float(frame.pts * frame.time_base), float(luma.mean())))
                if result["video"] and result["video"][-1][0] - result["video"][0][0] >= seconds:
                    break
    return result


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Block until `condition()` holds (tests that drive outputs from plain threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
