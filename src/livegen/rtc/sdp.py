"""SDP text work: checks on an offer before it reaches aiortc (so bad input gets a precise 400 or
422), what an answer negotiated, and the node's advertised addresses added to its answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from livegen.errors import InvalidSdp, Unprocessable

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class MediaSection:
    kind: str
    direction: str
    port: int
    framerate: float | None = None


def parse_media_sections(sdp: str) -> list[MediaSection]:
    """The m= sections of an offer with their directions; `InvalidSdp` if it is not SDP."""
    text = sdp.strip()
    if not text:
        raise InvalidSdp("the offer is empty")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines[0] != "v=0":
        raise InvalidSdp("the offer is not SDP: it must start with 'v=0'")
    if any(len(line) < 2 or line[1] != "=" for line in lines):
        raise InvalidSdp("the offer has lines that are not 'x=value' SDP lines")
    session_direction = "sendrecv"
    sections: list[MediaSection] = []
    current: dict | None = None
    for line in lines[1:]:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise InvalidSdp(f"malformed media line {line!r}")
            current = {"kind": parts[0], "port": int(parts[1].split("/")[0]), "direction": None, "framerate": None}
            sections.append(current)  # type: ignore[arg-type]
        elif line.startswith("a=framerate:") and current is not None:
            try:
                current["framerate"] = float(line.split(":", 1)[1])
            except ValueError:
                raise InvalidSdp(f"malformed framerate line {line!r}") from None
        elif line[2:] in _DIRECTIONS and line.startswith("a="):
            if current is None:
                session_direction = line[2:]
            else:
                current["direction"] = line[2:]
    if not sections:
        raise InvalidSdp("the offer has no media sections (m= lines)")
    return [
        MediaSection(s["kind"], s["direction"] or session_direction, s["port"], s["framerate"])  # type: ignore[index]
        for s in sections
    ]


def require_video(sections: list[MediaSection], *, sending: bool) -> None:
    """422 unless the offer has a video section that sends (WHIP) or receives (WHEP) video."""
    wanted = ("sendrecv", "sendonly") if sending else ("sendrecv", "recvonly")
    if not any(s.kind == "video" and s.direction in wanted and s.port != 0 for s in sections):
        role = "send" if sending else "receive"
        raise Unprocessable(f"the offer has no video section that can {role} video")


def negotiated_codec(sdp: str, kind: str) -> str | None:
    """The codec name (e.g. "H264") of the first payload type of the first `kind` section."""
    payload: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if payload is not None:
                break
            parts = line[2:].split()
            if parts[0] == kind and len(parts) > 3 and parts[1] != "0":
                payload = parts[3]
        elif payload is not None and line.startswith(f"a=rtpmap:{payload} "):
            return line.split(" ", 1)[1].split("/")[0]
    return None


def codec_preferences(kind: str, names: list[str]) -> list:
    """aiortc codec capabilities for `names` in that order, with RTX so NACKs are served."""
    from aiortc import RTCRtpSender

    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    ordered = [c for name in names for c in capabilities if c.mimeType.lower() == f"{kind}/{name}".lower()]
    return ordered + [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]


def payload_types(sdp: str, kind: str, codec: str) -> set[int]:
    """Payload types mapped to `codec` (case-insensitive) in the `kind` sections of an SDP."""
    found: set[int] = set()
    in_kind = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_kind = line[2:].split(" ", 1)[0] == kind
        elif in_kind and line.startswith("a=rtpmap:"):
            pt, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            if encoding.split("/")[0].lower() == codec.lower() and pt.isdigit():
                found.add(int(pt))
    return found


def advertise_addresses(sdp: str, addresses: Sequence[str]) -> str:
    """Add, for every host candidate in `sdp`, one per advertised address on the same port: what
    a client behind the internet reaches when the node sits behind a 1:1 NAT."""
    if not addresses:
        return sdp
    out: list[str] = []
    for line in sdp.split("\r\n"):
        out.append(line)
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line[len("a=candidate:") :].split()
            if len(parts) < 8:
                continue
            for index, address in enumerate(addresses, start=1):
                extra = parts.copy()
                extra[0] = f"{parts[0]}a{index}"  # a foundation of its own
                extra[3] = str(max(int(parts[3]) - index, 1))  # just below the real one
                extra[4] = address
                out.append("a=candidate:" + " ".join(extra))
    return "\r\n".join(out)
