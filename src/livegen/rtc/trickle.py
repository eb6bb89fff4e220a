"""Trickle ICE fragments (`application/trickle-ice-sdpfrag`, RFC 8840) sent with WHIP/WHEP PATCH."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from livegen.errors import BadRequest

SDPFRAG = "application/trickle-ice-sdpfrag"


@dataclass
class IceFragment:
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end_of_candidates: bool = False


def ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """The first a=ice-ufrag / a=ice-pwd of an SDP (session or first media section)."""
    ufrag = pwd = None
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line.split(":", 1)[1].strip()
    return ufrag, pwd


def parse_fragment(text: str) -> IceFragment:
    fragment = IceFragment()
    fragment.ufrag, fragment.pwd = ice_credentials(text)
    mid: str | None = None
    mline = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise BadRequest(f"not an SDP fragment line: {line[:60]!r}")
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[len("a=candidate:") :])
            except (AssertionError, ValueError, IndexError):
                raise BadRequest(f"malformed candidate line {line[:80]!r}") from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = max(mline, 0)
            fragment.candidates.append(candidate)
        elif line == "a=end-of-candidates":
            fragment.end_of_candidates = True
    return fragment
