"""`RtmpConnection`: one RTMP or RTMPS publishing session, spoken by the node itself.

Why not FFmpeg's rtmp protocol through PyAV: PyAV opens an output URL with a bare `avio_open`,
without options and without an interrupt callback, so neither `rw_timeout` nor any time-out
reaches the socket. A server that accepts the TCP connection and then says nothing hangs the
muxing thread for ever (seen with PyAV 18.1), and every refusal reads as the same EIO. Here every
socket operation has a time-out, a rejected application or stream key is told apart from a
dropped connection, and RTMPS certificates are verified (FFmpeg's tls does not by default).

What it speaks, as OBS and librtmp do: the plain handshake (C0–C2); `connect` →
`releaseStream`, `FCPublish`, `createStream` → `publish(key, "live")`; then the FLV tags that
PyAV's FLV muxer writes into `write()` (this object is the muxer's file) go out as RTMP messages
(audio 8, video 9, onMetaData as `@setDataFrame` 18) in 4096-byte chunks. It answers the
server's pings and acknowledges what it receives, so servers that enforce the window keep it.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RTMP_PORT = 1935
RTMPS_PORT = 443
CHUNK_SIZE = 4096
FLASH_VERSION = "FMLE/3.0 (compatible; livegen)"
# chunk streams: protocol control must use 2; the others are conventions (librtmp's)
CSID_CONTROL, CSID_COMMAND, CSID_AUDIO, CSID_VIDEO, CSID_DATA = 2, 3, 4, 6, 5
MSG_SET_CHUNK_SIZE, MSG_ABORT, MSG_ACK, MSG_USER_CONTROL, MSG_WINDOW_ACK = 1, 2, 3, 4, 5
MSG_AUDIO, MSG_VIDEO, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 8, 9, 18, 20
FLV_TAG_CSID = {MSG_AUDIO: CSID_AUDIO, MSG_VIDEO: CSID_VIDEO, MSG_DATA_AMF0: CSID_DATA}
CLOSED = "closed"
"""`RtmpRejected.code` when the server hung up instead of answering (nginx-rtmp does, for an
unknown application)."""


class RtmpRejected(Exception):
    """The server said no (an `_error` or an error `onStatus`) or hung up in answer to `phase`
    ("connect" or "publish")."""

    def __init__(self, phase: str, code: str, description: str = ""):
        if code == CLOSED:
            what = "a wrong application?" if phase == "connect" else "a wrong or unauthorised stream key?"
            message = f"the server rejected {phase}: it closed the connection ({what})"
        else:
            message = f"the server rejected {phase}: {code}" + (f" ({description})" if description else "")
        super().__init__(message)
        self.phase, self.code, self.description = phase, code, description


@dataclass(frozen=True)
class RtmpTarget:
    """An `rtmp://` or `rtmps://` URL taken apart: the application is the first path segment,
    the stream key everything after it (with the query, as FFmpeg does)."""

    tls: bool
    host: str
    port: int
    app: str
    key: str

    @property
    def tc_url(self) -> str:
        return f"{'rtmps' if self.tls else 'rtmp'}://{self.host}:{self.port}/{self.app}"

    @classmethod
    def parse(cls, url: str) -> RtmpTarget:
        """Raises ValueError naming what is wrong (never quoting the key)."""
        parts = urlsplit(url)
        if parts.scheme not in ("rtmp", "rtmps"):
            raise ValueError(f"not an rtmp:// or rtmps:// URL (scheme {parts.scheme!r})")
        if "@" in parts.netloc:
            raise ValueError("credentials in an RTMP URL are not supported; the stream key carries the secret")
        if not parts.hostname:
            raise ValueError("the RTMP URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the RTMP URL has an invalid port") from None
        app, _, key = parts.path.lstrip("/").partition("/")
        if parts.query:
            key = f"{key}?{parts.query}"
        if not app or not key.strip("/"):
            raise ValueError("an RTMP URL needs an application and a stream key: rtmp://host[:port]/app/key")
        tls = parts.scheme == "rtmps"
        return cls(tls, parts.hostname, port or (RTMPS_PORT if tls else RTMP_PORT), app, key)


# ---- AMF0, the subset commands use ---------------------------------------------------------
def amf_encode(value: Any) -> bytes:
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, (int, float)):
        return b"\x00" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) < 0x10000:
            return b"\x02" + struct.pack(">H", len(raw)) + raw
        return b"\x0c" + struct.pack(">I", len(raw)) + raw  # a long string
    if isinstance(value, dict):
        body = b"".join(struct.pack(">H", len(k.encode())) + k.encode() + amf_encode(v) for k, v in value.items())
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def amf_decode_all(data: bytes) -> list[Any]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _amf_decode(data, pos)
        values.append(value)
    return values


def _amf_decode(data: bytes, pos: int) -> tuple[Any, int]:
    marker = data[pos]
    pos += 1
    if marker == 0x00:
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:
        return bool(data[pos]), pos + 1
    if marker in (0x02, 0x0C):
        size_len = 2 if marker == 0x02 else 4
        size = int.from_bytes(data[pos : pos + size_len], "big")
        pos += size_len
        return data[pos : pos + size].decode(errors="replace"), pos + size
    if marker in (0x03, 0x08):  # object, ECMA array (a count first, then the same pairs)
        if marker == 0x08:
            pos += 4
        obj: dict[str, Any] = {}
        while data[pos : pos + 3] != b"\x00\x00\x09":
            size = int.from_bytes(data[pos : pos + 2], "big")
            key = data[pos + 2 : pos + 2 + size].decode(errors="replace")
            obj[key], pos = _amf_decode(data, pos + 2 + size)
        return obj, pos + 3
    if marker == 0x0A:
        count = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        items = []
        for _ in range(count):
            item, pos = _amf_decode(data, pos)
            items.append(item)
        return items, pos
    if marker in (0x05, 0x06):
        return None, pos
    if marker == 0x0B:  # date: a double and a time zone
        return struct.unpack_from(">d", data, pos)[0], pos + 10
    raise ValueError(f"unsupported AMF0 marker 0x{marker:02x}")


@dataclass
class _InChunkStream:
    length: int = 0
    type_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


class _NeedMore(Exception):
    pass


class RtmpConnection:
    """Connect with `open()`; then it is the FLV muxer's file (`write`); `close()` ends it."""

    def __init__(self, target: RtmpTarget, timeout_s: float):
        self.target = target
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._out_chunk_size = 128
        self._in_chunk_size = 128
        self._in_streams: dict[int, _InChunkStream] = {}
        self._inbuf = bytearray()
        self._received = 0
        self._acked = 0
        self._window = 2_500_000
        self._commands: deque[list[Any]] = deque()
        self._stream_id = 0
        self._flv = bytearray()
        self._flv_started = False
        self.bytes_sent = 0

    # ---- session ---------------------------------------------------------------------------
    def open(self) -> None:
        """Connect and publish; raises OSError (refused, reset, time-out, DNS), ssl.SSLError or
        `RtmpRejected`."""
        t = self.target
        sock = socket.create_connection((t.host, t.port), timeout=self.timeout_s)
        self._sock = sock  # from here on, close() closes it whatever fails
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if t.tls:
            self._sock = ssl.create_default_context().wrap_socket(sock, server_hostname=t.host)
        self._handshake()
        self._send(CSID_CONTROL, MSG_SET_CHUNK_SIZE, 0, 0, struct.pack(">I", CHUNK_SIZE))
        self._out_chunk_size = CHUNK_SIZE
        self._command(
            "connect",
            1,
            {"app": t.app, "type": "nonprivate", "flashVer": FLASH_VERSION, "tcUrl": t.tc_url},
        )
        self._await_result(1, "connect")
        self._command("releaseStream", 2, None, t.key)
        self._command("FCPublish", 3, None, t.key)
        self._command("createStream", 4, None)
        self._stream_id = int(self._await_result(4, "publish")[3] or 1)
        self._command("publish", 5, None, t.key, "live", stream_id=self._stream_id)
        self._await_publish_start()

    def close(self, goodbye: bool = True) -> None:
        """Close the socket, after saying goodbye (bounded: at most a second) if asked."""
        sock = self._sock
        if sock is None:
            return
        try:
            if goodbye:
                sock.settimeout(min(self.timeout_s, 1.0))
                self._command("FCUnpublish", 6, None, self.target.key)
                self._command("deleteStream", 7, None, self._stream_id)
        except OSError:
            pass
        finally:
            self._sock = None
            sock.close()

    def abort(self) -> None:
        """From another thread: end a blocked send or receive now (the owner is stopping)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- the FLV muxer's file --------------------------------------------------------------
    def write(self, data: bytes) -> int:
        """FLV bytes from the muxer: each complete tag goes out as one RTMP message."""
        self._flv += data
        if not self._flv_started:
            if len(self._flv) < 9:
                return len(data)
            if self._flv[:3] != b"FLV":
                raise ValueError("the muxer did not write FLV")
            header_size = int.from_bytes(self._flv[5:9], "big")
            if len(self._flv) < header_size + 4:
                return len(data)
            del self._flv[: header_size + 4]  # the header and PreviousTagSize0
            self._flv_started = True
        while len(self._flv) >= 11:
            size = int.from_bytes(self._flv[1:4], "big")
            if len(self._flv) < 11 + size + 4:
                break
            tag_type = self._flv[0] & 0x1F
            timestamp = int.from_bytes(self._flv[4:7], "big") | (self._flv[7] << 24)
            payload = bytes(self._flv[11 : 11 + size])
            del self._flv[: 11 + size + 4]
            if tag_type == MSG_DATA_AMF0:
                payload = amf_encode("@setDataFrame") + payload
            if tag_type in FLV_TAG_CSID:
                self._send(FLV_TAG_CSID[tag_type], tag_type, self._stream_id, timestamp, payload)
        self._serve_incoming()
        return len(data)

    # ---- sending ---------------------------------------------------------------------------
    def _sock_or_fail(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionResetError("the RTMP connection is closed")
        return self._sock

    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= 0xFFFFFF  # past 4.66 h: the time moves to 4 extra bytes per chunk
        ext = struct.pack(">I", timestamp) if extended else b""
        out = bytearray([csid])  # fmt 0, csid < 64
        out += min(timestamp, 0xFFFFFF).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
        out += bytes([type_id]) + struct.pack("<I", stream_id) + ext
        size = self._out_chunk_size
        out += payload[:size]
        for offset in range(size, len(payload), size):
            out.append(0xC0 | csid)  # fmt 3: a continuation of the same message
            out += ext
            out += payload[offset : offset + size]
        self._sock_or_fail().sendall(out)
        self.bytes_sent += len(out)

    def _command(self, name: str, txn: int, *args: Any, stream_id: int = 0) -> None:
        payload = b"".join(amf_encode(v) for v in (name, txn, *args))
        self._send(CSID_COMMAND, MSG_COMMAND_AMF0, stream_id, 0, payload)

    # ---- receiving -------------------------------------------------------------------------
    def _handshake(self) -> None:
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(1528)
        sock = self._sock_or_fail()
        sock.sendall(b"\x03" + c1)
        s0s1 = self._recv_exact(1 + 1536)
        if s0s1[0] != 3:
            raise ConnectionError(f"not an RTMP server (handshake version {s0s1[0]})")
        sock.sendall(s0s1[1:])  # C2 echoes S1
        self._recv_exact(1536)  # S2

    def _recv_exact(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self._sock_or_fail().recv(size - len(data))
            if not chunk:
                raise ConnectionResetError("the server closed the connection during the handshake")
            data += chunk
        return bytes(data)

    def _receive(self, phase: str) -> None:
        """Wait (up to the time-out) for more bytes and take in the messages they complete."""
        chunk = self._sock_or_fail().recv(65536)
        if not chunk:
            raise RtmpRejected(phase, CLOSED)
        self._take_in(chunk)

    def _serve_incoming(self) -> None:
        """While publishing: take in whatever the server sent, without waiting."""
        sock = self._sock_or_fail()
        while True:
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not pending and not select.select([sock], [], [], 0)[0]:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._take_in(chunk)
        while self._commands:
            command = self._commands.popleft()
            info = command[3] if len(command) > 3 and isinstance(command[3], dict) else {}
            if command[0] == "onStatus" and info.get("level") == "error":
                raise ConnectionResetError(f"the server ended the stream: {info.get('code')}")

    def _await_result(self, txn: int, phase: str) -> list[Any]:
        while True:
            while self._commands:
                command = self._commands.popleft()
                if command[0] in ("_result", "_error") and len(command) > 1 and command[1] == txn:
                    if command[0] == "_error":
                        info = command[3] if len(command) > 3 and isinstance(command[3], dict) else {}
                        raise RtmpRejected(phase, str(info.get("code", "_error")), str(info.get("description", "")))
                    return command + [None] * (4 - len(command))
            self._receive(phase)

    def _await_publish_start(self) -> None:
        while True:
            while self._commands:
                command = self._commands.popleft()
                info = command[3] if len(command) > 3 and isinstance(command[3], dict) else {}
                if command[0] == "onStatus":
                    code = str(info.get("code", ""))
                    if info.get("level") == "error" or code == "NetStream.Publish.BadName":
                        raise RtmpRejected("publish", code, str(info.get("description", "")))
                    if code == "NetStream.Publish.Start":
                        return
                elif command[0] == "_error":
                    raise RtmpRejected("publish", str(info.get("code", "_error")), str(info.get("description", "")))
            self._receive("publish")

    def _take_in(self, data: bytes) -> None:
        self._received += len(data)
        if self._received - self._acked >= self._window:
            self._acked = self._received
            self._send(CSID_CONTROL, MSG_ACK, 0, 0, struct.pack(">I", self._received & 0xFFFFFFFF))
        self._inbuf += data
        while True:
            try:
                consumed = self._parse_chunk()
            except _NeedMore:
                return
            del self._inbuf[:consumed]

    def _parse_chunk(self) -> int:
        """Take one chunk from the front of the input; the bytes it used."""
        buf = self._inbuf

        def need(end: int) -> None:
            if len(buf) < end:
                raise _NeedMore

        need(1)
        fmt, csid, pos = buf[0] >> 6, buf[0] & 0x3F, 1
        if csid == 0:
            need(2)
            csid, pos = 64 + buf[1], 2
        elif csid == 1:
            need(3)
            csid, pos = 64 + buf[1] + 256 * buf[2], 3
        header = (11, 7, 3, 0)[fmt]
        need(pos + header)
        stream = self._in_streams.get(csid) or _InChunkStream()
        length, type_id, extended = stream.length, stream.type_id, stream.extended
        if fmt <= 2:
            extended = int.from_bytes(buf[pos : pos + 3], "big") == 0xFFFFFF
        if fmt <= 1:
            length, type_id = int.from_bytes(buf[pos + 3 : pos + 6], "big"), buf[pos + 6]
        pos += header + (4 if extended else 0)
        take = min(length - len(stream.payload), self._in_chunk_size)
        need(pos + take)
        # only now, with the whole chunk here, does the chunk stream's state change
        stream.length, stream.type_id, stream.extended = length, type_id, extended
        stream.payload += buf[pos : pos + take]
        self._in_streams[csid] = stream
        if len(stream.payload) >= length:
            message, stream.payload = bytes(stream.payload), bytearray()
            self._on_message(type_id, message)
        return pos + take

    def _on_message(self, type_id: int, message: bytes) -> None:
        if type_id == MSG_SET_CHUNK_SIZE and len(message) >= 4:
            self._in_chunk_size = max(1, struct.unpack(">I", message[:4])[0] & 0x7FFFFFFF)
        elif type_id == MSG_WINDOW_ACK and len(message) >= 4:
            self._window = max(1, struct.unpack(">I", message[:4])[0])
        elif type_id == MSG_ABORT and len(message) >= 4:
            self._in_streams.pop(struct.unpack(">I", message[:4])[0], None)
        elif type_id == MSG_USER_CONTROL and len(message) >= 6 and message[:2] == b"\x00\x06":
            self._send(CSID_CONTROL, MSG_USER_CONTROL, 0, 0, b"\x00\x07" + message[2:6])  # ping → pong
        elif type_id == MSG_COMMAND_AMF0:
            try:
                values = amf_decode_all(message)
            except (ValueError, IndexError, struct.error):
                log.debug("rtmp %s: an undecodable command from the server", self.target.host)
                return
            if values and isinstance(values[0], str):
                self._commands.append(values)
