"""Property-based fuzzing of the node's HTTP surface with Hypothesis, against one real node.

Whatever arrives — random and mutated SDP offers, trickle ICE fragments on live sessions, JSON
bodies, stream names and paths, headers — the node answers with a status below 500 (a 4xx
carries a problem+json body), logs no error, keeps serving, keeps its live stream flowing, and a
real aiortc publisher and viewer still work after it all.

The examples are derandomized and bounded, so CI sees the same inputs every run in well under a
minute. `LIVEGEN_FUZZ_SCALE=20 pytest tests/test_fuzz.py` runs twenty times as many.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from livegen.api.keys import HUB
from livegen.effects.registry import EFFECTS
from livegen.hub.registry import StreamHub
from livegen.rtc.trickle import SDPFRAG
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack
from tests.conftest import node_settings, start_node, wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

SCALE = float(os.environ.get("LIVEGEN_FUZZ_SCALE", "1"))
PUBLISH_TOKEN = "fuzz-publish-token"
OPERATOR_TOKEN = "fuzz-operator-token"
AUTH = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
SDP = "application/sdp"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---- the node under fuzz ------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Every ERROR (or worse) record, and every record carrying a traceback, while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def take(self) -> list[str]:
        found = [f"{r.name}: {r.getMessage()[:300]}" for r in self.records]
        self.records.clear()
        return found


@dataclass(repr=False)
class FuzzedNode:
    url: str
    port: int
    hub: StreamHub
    http: aiohttp.ClientSession
    publisher: WhipPublisher
    viewer: WhepViewer
    whip_offer: str
    whep_offer: str
    errors: ErrorLog
    frames_seen: list[int] = field(default_factory=lambda: [0])

    def __repr__(self) -> str:
        return f"FuzzedNode({self.url})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how Hypothesis shows it
        printer.text(repr(self))

    async def call(
        self, method: str, target: str | URL, body: str | bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, str, Any]:
        url = target if isinstance(target, URL) else URL(self.url + target, encoded=True)
        async with self.http.request(method, url, data=body, headers=headers or {}) as response:
            text = await response.text(errors="replace")
            return response.status, response.headers.get("Content-Type", ""), text, response.headers

    async def check(self, method: str, target: str | URL, body=None, headers=None) -> tuple[int, str, Any]:
        """One request: never a 5xx, a 4xx carries problem+json. What a 201 created is ended."""
        status, content_type, text, response_headers = await self.call(method, target, body, headers)
        if currently_in_test_context():  # pytest --hypothesis-show-statistics: what the fuzz reached
            event(f"{method} {str(target)[:12]} → {status}")
        shown = str(target)[:200]
        logged = self.errors.take()
        assert status < 500 and not logged, f"{method} {shown} → {status}: {text[:500]}; logged {logged}"
        # aiohttp's parser answers what it cannot parse (a line over 8190 bytes) itself, in plain
        # text, before any handler or middleware runs
        parser_refusal = status == 400 and content_type.startswith("text/plain")
        if status >= 400 and method != "HEAD" and not parser_refusal:
            assert content_type.startswith(PROBLEM_JSON), f"{method} {shown} → {status} {content_type}: {text[:200]}"
        location = response_headers.get("Location", "")
        if status == 201 and location.startswith(("/whip/", "/whep/")):  # a session: ended at once
            deleted, *_ = await self.call("DELETE", location, headers=AUTH)
            assert deleted == 200, f"DELETE {location} → {deleted}"
        return status, text, response_headers

    def assert_healthy(self) -> None:
        errors = self.errors.take()
        assert not errors, errors
        assert not self.hub._negotiating, self.hub._negotiating
        assert sorted(self.hub.streams) == ["cam"], sorted(self.hub.streams)
        stream = self.hub.streams["cam"]
        assert stream.ingest is not None and stream.ingest.pc.connectionState == "connected"
        assert list(stream.viewers) == [self.viewer.location.rsplit("/", 1)[1]]


async def drain(track, seen: list[int]) -> None:
    while True:
        await track.recv()
        seen[0] += 1


async def real_offer(*tracks: Any, receive: tuple[str, ...] = ()) -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    for kind in receive:
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node() -> AsyncIterator[FuzzedNode]:
    """One node for the module (tokens on, so the auth checks are fuzzed too), with a live stream
    "cam": a real publisher and a real viewer whose sessions the trickle fuzz targets."""
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    settings_ = node_settings(
        auth={"publish_tokens": {"*": PUBLISH_TOKEN}, "operator_token": OPERATOR_TOKEN},
        rtc={"connect_timeout_s": 5},
    )
    runner, url = await start_node(settings_)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        publisher = WhipPublisher(url, "cam", http, token=PUBLISH_TOKEN)
        await publisher.publish(SyntheticVideoTrack(160, 120, fps=10))
        await publisher.wait_connected()
        viewer = WhepViewer(url, "cam", http)
        await viewer.watch()
        await viewer.wait_connected()
        fuzzed = FuzzedNode(
            url, int(url.rsplit(":", 1)[1]), runner.app[HUB], http, publisher, viewer,
            await real_offer(SyntheticVideoTrack(160, 120), SyntheticAudioTrack()),
            await real_offer(receive=("video", "audio")),
            errors,
        )
        pump = asyncio.create_task(drain(await viewer.video(), fuzzed.frames_seen), name="fuzz viewer drain")
        try:
            yield fuzzed
        finally:
            pump.cancel()
            await viewer.close()
            await publisher.close()
    await runner.cleanup()
    logging.getLogger().removeHandler(errors)


# ---- strategies ---------------------------------------------------------------------------------

INTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**32, 2**63, 10**30]),
    st.integers(0, 127),
)
NUMBER_TEXT = st.one_of(
    INTS.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "-", "1e999", "0x10", "١٢٣", "9" * 400, "1.5.5", " 7"]),
)
LINE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60
)
ATTRIBUTES = st.one_of(
    st.builds(lambda n: f"a=framerate:{n}", NUMBER_TEXT),
    st.builds(
        lambda pt, c, r: f"a=rtpmap:{pt} {c}/{r}",
        NUMBER_TEXT, st.sampled_from(["VP8", "H264", "opus", "rtx", "AV1", "x"]), NUMBER_TEXT,
    ),
    st.builds(lambda pt, v: f"a=fmtp:{pt} {v}", NUMBER_TEXT, LINE_TEXT),
    st.builds(
        lambda pt, v: f"a=rtcp-fb:{pt} {v}",
        NUMBER_TEXT, st.sampled_from(["nack", "nack pli", "ccm fir", "goog-remb", ""]),
    ),
    st.builds(lambda v: f"a=mid:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=group:BUNDLE {v}", LINE_TEXT),
    st.builds(lambda v: f"a=setup:{v}", st.sampled_from(["actpass", "active", "passive", "holdconn", ""])),
    st.builds(lambda v: f"a=fingerprint:{v}", st.sampled_from(["sha-256 00:11", "md5 AB", "", "sha-256"])),
    st.builds(lambda v: f"a=ice-ufrag:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=ice-pwd:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=ssrc:{v} cname:x", NUMBER_TEXT),
    st.builds(lambda v: f"a=ssrc-group:FID {v}", LINE_TEXT),
    st.builds(lambda v: f"a=extmap:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=msid:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=rid:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=simulcast:{v}", LINE_TEXT),
    st.builds(lambda v: f"a=sctp-port:{v}", NUMBER_TEXT),
    st.builds(lambda v: f"b=AS:{v}", NUMBER_TEXT),
    st.builds(lambda v: f"c=IN IP4 {v}", st.sampled_from(["0.0.0.0", "127.0.0.1", "::1", "x", "999.1.1.1", ""])),
    st.builds(lambda v: f"a=candidate:{v}", LINE_TEXT),
    st.sampled_from(["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive", "a=rtcp-mux", "a=rtcp-rsize",
                     "a=end-of-candidates", "a=ice-options:trickle", "a=ice-lite", "a=extmap-allow-mixed"]),
    st.builds(
        lambda kind, port, proto, pts: f"m={kind} {port} {proto} {pts}",
        st.sampled_from(["video", "audio", "application", "text", "VIDEO", ""]),
        NUMBER_TEXT,
        st.sampled_from(["UDP/TLS/RTP/SAVPF", "RTP/AVP", "UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "x"]),
        st.lists(NUMBER_TEXT, max_size=4).map(" ".join),
    ),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(list("vosiuepcbtrzkam")), LINE_TEXT),
)


@st.composite
def mutated_sdp(draw: st.DrawFn, real: str) -> str:
    """A real aiortc offer with a few lines dropped, duplicated, swapped, rewritten or inserted,
    numbers replaced, values replaced, or cut short; with any line ending."""
    lines = real.strip().split("\r\n")
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3, 4]))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "insert", "number", "value", "replace", "truncate"]))
        # the first line ("v=0") less often: Hypothesis favours small numbers
        last = max(0, len(lines) - 1)
        i = min(draw(st.integers(0, last) if draw(st.integers(0, 9)) == 0 else st.integers(1, max(1, last))), last)
        if not lines:
            lines.append(draw(ATTRIBUTES))
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(ATTRIBUTES))
        elif op == "number":
            numbers = list(re.finditer(r"\d+", lines[i]))
            if numbers:
                m = draw(st.sampled_from(numbers))
                lines[i] = lines[i][: m.start()] + draw(NUMBER_TEXT) + lines[i][m.end() :]
        elif op == "value":
            head, sep, _ = lines[i].partition(":" if lines[i].startswith("a=") else "=")
            lines[i] = head + (sep or "=") + draw(LINE_TEXT)
        elif op == "replace":
            lines[i] = draw(LINE_TEXT)
        else:  # cut short, by the end (small numbers come first): mostly the last few lines
            lines = lines[: len(lines) - i]
            lines[-1] = lines[-1][: len(lines[-1]) - draw(st.integers(0, len(lines[-1])))]
    ending = draw(st.sampled_from(["\r\n"] * 6 + ["\n", "\r", "\r\n\r\n", " \r\n"]))
    return ending.join(lines) + draw(st.sampled_from([ending] * 3 + ["", "\x00", "\ufeff"]))


RANDOM_SDP = st.one_of(
    st.text(max_size=300),
    st.lists(ATTRIBUTES, max_size=12).map(lambda lines: "v=0\r\n" + "\r\n".join(lines) + "\r\n"),
    st.binary(max_size=200),
)


def offers(own: str, other: str) -> st.SearchStrategy[str | bytes]:
    """Mostly mutations of a real offer of the endpoint's own kind."""
    return st.one_of(mutated_sdp(own), mutated_sdp(own), mutated_sdp(own), mutated_sdp(other), RANDOM_SDP)


CANDIDATE_HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "192.0.2.1", "0.0.0.0", "255.255.255.255", "999.0.0.1", "", "x",
                     "localhost", "fe80::1%eth0", "[::1]", "1.2.3"]),
    st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=20),
)


@st.composite
def candidate_lines(draw: st.DrawFn) -> str:
    fields = [
        draw(st.one_of(st.text("abc0123456789+/", min_size=1, max_size=8), LINE_TEXT)),  # foundation
        draw(NUMBER_TEXT),  # component
        draw(st.sampled_from(["udp", "UDP", "tcp", "sctp", "x"])),
        draw(NUMBER_TEXT),  # priority
        draw(CANDIDATE_HOSTS),
        draw(NUMBER_TEXT),  # port
        "typ",
        draw(st.sampled_from(["host", "srflx", "prflx", "relay", "x"])),
    ]
    extra = draw(st.lists(st.sampled_from(["raddr", "0.0.0.0", "rport", "0", "tcptype", "active", "generation", "0",
                                           "ufrag", "abcd", "network-id", "1", "typ"]), max_size=6))
    words = fields + extra
    cut = draw(st.integers(0, len(words)))
    return "a=candidate:" + " ".join(words[:cut] if draw(st.booleans()) else words)


@st.composite
def sdp_fragments(draw: st.DrawFn, ufrag: str, pwd: str) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"a=ice-ufrag:{draw(st.sampled_from([ufrag, ufrag, 'zzzz']) | LINE_TEXT)}")
        lines.append(f"a=ice-pwd:{draw(st.sampled_from([pwd, pwd, 'x' * 24]) | LINE_TEXT)}")
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            lines.append(f"m={draw(st.sampled_from(['video', 'audio', 'application']))} 9 UDP/TLS/RTP/SAVPF 0")
            lines.append(f"a=mid:{draw(st.sampled_from(['0', '1', '2', '']) | LINE_TEXT)}")
        lines.extend(draw(st.lists(candidate_lines() | ATTRIBUTES | LINE_TEXT, min_size=1, max_size=3)))
    if draw(st.booleans()):
        lines.append("a=end-of-candidates")
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return ending.join(lines) + ending


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), INTS, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
        st.sampled_from(list(EFFECTS) + ["studio", "blur", "generated", "news", "office", "passthrough", "upload:x"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=max_leaves,
    )


PARAM_NAMES = sorted({name for cls in EFFECTS.values() for name in cls.Params.model_fields} | {"layers", "x"})


@st.composite
def stream_patches(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies shaped like a StreamPatch: known keys, effects and parameter names, values of any type."""
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["preset"] = draw(st.sampled_from(["passthrough", "grayscale", "edges", "nope", ""]) | json_values(3))
    if draw(st.booleans()):
        body["effects"] = draw(st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(list(EFFECTS)) | json_values(2)},
                optional={"params": st.dictionaries(st.sampled_from(PARAM_NAMES), json_values(4), max_size=3)},
            ) | json_values(3),
            max_size=3,
        ) | json_values(3))
    if draw(st.booleans()):
        body["params"] = draw(st.dictionaries(
            st.sampled_from(list(EFFECTS)) | st.text(max_size=8),
            st.dictionaries(st.sampled_from(PARAM_NAMES), json_values(4), max_size=3) | json_values(3),
            max_size=3,
        ))
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(json_values(3))
    return body


OUTPUT_URLS = st.one_of(
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}{path}",
        st.sampled_from(["rtmp", "rtmps", "http", "https", "srt", "file", "RTMP", "ftp", ""]),
        st.sampled_from(["[::1", "[", "]", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:x", "user:pw@", "", "[::1]:0"])
        | st.text(max_size=20),
        st.text(max_size=20),
    ),
    st.text(max_size=40),
)


@st.composite
def output_requests(draw: st.DrawFn) -> Any:
    body = {"url": draw(OUTPUT_URLS | json_values(2))}
    for key in ("name", "token", "x"):
        if draw(st.booleans()):
            body[key] = draw(json_values(2))
    return body


DEEP = st.integers(1, 40_000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 40_000).map(
    lambda n: '{"a":' * n + "1" + "}" * n
)
HUGE_NUMBER = st.integers(4_000, 20_000).map(lambda n: '{"preset": ' + "7" * n + "}") | st.sampled_from(
    ['{"params": {"edges": {"strength": 1e999}}}', '{"params": {"edges": {"strength": NaN}}}', '{"preset": -Infinity}',
     '{"params": {"edges": {"strength": ' + "9" * 5000 + ".5}}}"]
)


def json_bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """Mostly bodies shaped like what the endpoint takes; else any JSON, JSON that Python's
    parser chokes on, or no JSON at all."""
    as_json = st.builds(json.dumps, shaped)
    return st.one_of(as_json, as_json, as_json, as_json, st.builds(json.dumps, json_values()), DEEP, HUGE_NUMBER,
                     st.text(max_size=100), st.binary(max_size=100))


JSON_ENDPOINTS = [
    *[("PATCH", "/api/streams/cam", json_bodies(stream_patches()))] * 5,
    *[("POST", "/api/streams/cam/outputs", json_bodies(output_requests()))] * 3,
    ("PATCH", "/api/streams/nope", json_bodies(stream_patches())),
    ("POST", "/api/assets", json_bodies(json_values())),
    ("PATCH", "/whip/cam/x", json_bodies(json_values())),
]

NAMES = st.one_of(
    st.text(max_size=80),
    st.text("abcAZ09_-.%/~", min_size=1, max_size=70),
    st.sampled_from([".", "..", "%2e%2e", "%2F", "%00", "%ff", "%", "%%", "a/b", "//", "cam/", "cam%2fx", "ca m",
                     "cam\u0000", "\u202ecam", "caf\u00e9", "\U0001f3a5", "cam.", "CAM", "a" * 64, "a" * 65]),
    st.integers(65, 12_000).map(lambda n: "a" * n),
).filter(lambda name: unquote(name) != "cam")  # the live stream is not a fuzzed name


def path_segment(name: str, percent: bool) -> str:
    """A stream name as it goes in a path: percent-encoded whole, or raw where that is legal."""
    return quote(name, safe="" if percent else "/%.~") if percent or name.isascii() else quote(name, safe="/%")


HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")),
    st.sampled_from(["", " ", "Bearer", "Bearer ", f"Bearer {PUBLISH_TOKEN}", f"bearer   {PUBLISH_TOKEN}  ",
                     f"Bearer {OPERATOR_TOKEN}", f"Basic {PUBLISH_TOKEN}", "Bearer é", "Bearer \x00", "*", '"x"',
                     "W/\"x\"", SDP, SDPFRAG, JSON, f"{SDP}; charset=latin-1", f"{JSON}; charset=utf-16",
                     "multipart/form-data; boundary=", "text/plain", "application/sdp;;;", "image/png", "100-continue",
                     "100-Continue"]),
)
CLIENT_HEADER_VALUES = HEADER_VALUES.map(lambda v: "".join(c for c in v if " " <= c != "\x7f"))
"""What aiohttp's client agrees to send (it refuses control characters); raw requests send the rest."""
HEADER_NAMES = st.sampled_from(
    ["Content-Type", "Authorization", "If-Match", "If-None-Match", "Origin", "Accept", "Range", "Content-Encoding",
     "Expect", "Access-Control-Request-Method", "X-Forwarded-For", "Cookie", "Host"]
)


# ---- the properties ------------------------------------------------------------------------------


@fuzz_settings(120)
@given(data=st.data())
async def test_offers_never_5xx(node: FuzzedNode, data: st.DataObject):
    endpoints = ["/whip/fz"] * 4 + ["/whep/cam"] * 4 + ["/whip/cam", "/whep/fz"]
    endpoint = data.draw(st.sampled_from(endpoints), label="endpoint")
    own, other = (node.whip_offer, node.whep_offer)
    if endpoint.startswith("/whep"):
        own, other = other, own
    offer = data.draw(offers(own, other), label="offer")
    content_type = data.draw(st.sampled_from([SDP] * 8 + [f"{SDP}; charset=utf-8", "text/plain"]))
    await node.check("POST", endpoint, offer, {"Content-Type": content_type, **AUTH})
    node.assert_healthy()


@fuzz_settings(120)
@given(data=st.data())
async def test_trickle_fragments_never_5xx(node: FuzzedNode, data: st.DataObject):
    client = data.draw(st.sampled_from([node.publisher, node.viewer]), label="session")
    location = client.location
    offer = client.pc.localDescription.sdp
    ufrag = re.search(r"a=ice-ufrag:(\S+)", offer).group(1)
    pwd = re.search(r"a=ice-pwd:(\S+)", offer).group(1)
    body = data.draw(sdp_fragments(ufrag, pwd) | st.text(max_size=200) | st.binary(max_size=100), label="fragment")
    cam = node.hub.streams["cam"]
    session = cam.ingest if client is node.publisher else next(iter(cam.viewers.values()))
    headers = {"Content-Type": data.draw(st.sampled_from([SDPFRAG] * 8 + [SDP, f"{SDPFRAG}; x=1"])), **AUTH}
    if_match = data.draw(st.sampled_from([None] * 6 + [session.etag, "*", '"stale"', " * "]) | CLIENT_HEADER_VALUES)
    if if_match is not None and data.draw(st.integers(0, 3)) == 0:  # most PATCHes reach the fragment
        headers["If-Match"] = if_match
    target = data.draw(st.sampled_from([location] * 8 + [location + "x", location.rsplit("/", 1)[0] + "/nope"]))
    await node.check("PATCH", URL(target, encoded=True), body, headers)
    node.assert_healthy()


@fuzz_settings(200)
@given(data=st.data())
async def test_json_bodies_never_5xx(node: FuzzedNode, data: st.DataObject):
    method, path, bodies = data.draw(st.sampled_from(JSON_ENDPOINTS), label="endpoint")
    body = data.draw(bodies, label="body")
    content_type = data.draw(st.sampled_from([JSON] * 6 + [f"{JSON}; charset=utf-8", "text/json"]))
    status, text, _ = await node.check(method, path, body, {"Content-Type": content_type, **AUTH})
    if path.endswith("/outputs") and status == 201:
        output = json.loads(text)["id"]
        delete_status, *_ = await node.call("DELETE", f"{path}/{output}", headers=AUTH)
        assert delete_status == 200
    node.assert_healthy()


@fuzz_settings(200)
@given(data=st.data())
async def test_stream_names_and_paths_never_5xx(node: FuzzedNode, data: st.DataObject):
    name = data.draw(NAMES, label="name")
    segment = path_segment(name, data.draw(st.booleans(), label="percent"))
    method, template, body, content_type = data.draw(st.sampled_from([
        ("GET", "/api/streams/{}", None, None),
        ("PATCH", "/api/streams/{}", '{"preset": "passthrough"}', JSON),
        ("DELETE", "/api/streams/{}", None, None),
        ("POST", "/whip/{}", node.whip_offer, SDP),
        ("POST", "/whep/{}", node.whep_offer, SDP),
        ("POST", "/whip/fz?preset={}", node.whip_offer, SDP),
        ("OPTIONS", "/whip/{}", None, None),
        ("HEAD", "/whep/{}", None, None),
        ("PATCH", "/whip/cam/{}", "a=end-of-candidates\r\n", SDPFRAG),
        ("DELETE", "/whep/{}/abc", None, None),
        ("GET", "/watch/{}", None, None),
        ("GET", "/api/streams/cam/outputs/{}", None, None),
        ("DELETE", "/api/streams/{}/viewers/{}", None, None),
        ("GET", "/api/recordings/{}/file?part={}", None, None),
        ("DELETE", "/api/recordings/{}", None, None),
        ("GET", "/{}", None, None),
        ("POST", "/api/streams/{}/recordings", None, None),
    ]), label="route")
    target = template.replace("{}", segment)
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    if method == "HEAD":
        # aiohttp's server answers a request line it cannot parse with a body, even to a HEAD,
        # and aiohttp's client then refuses the answer: read the status off the wire instead
        auth = [(b"Authorization", AUTH["Authorization"].encode())]
        status = await raw_request(node.port, b"HEAD", target.encode(), auth, b"")
        logged = node.errors.take()
        assert status < 500 and not logged, (target[:200], status, logged)
    else:
        await node.check(method, target, body, headers)
    node.assert_healthy()


async def raw_request(port: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """Send bytes the way a hostile client would (no client-side checks); the status answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        head += [name + b": " + value for name, value in headers]
        if body:
            head.append(b"Content-Length: %d" % len(body))
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # answered and closed before the body was read: the status is still there
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", status_line)
    assert match, f"no answer to {method!r} {target[:200]!r}: {status_line!r}"
    return int(match.group(1))


RAW_TARGETS = st.one_of(
    st.sampled_from([b"/whip/cam", b"/whep/cam", b"/api/streams/cam", b"/api/streams/cam/outputs", b"/api/streams",
                     b"/api/node", b"/api/recordings", b"/api/assets", b"/metrics", b"/health", b"/ready", b"/ops",
                     b"/api/presets", b"/whip/cam/abc", b"/whep/cam/abc", b"/api/recordings/0123abcd/file"]),
    st.lists(
        st.sampled_from([b"whip", b"whep", b"api", b"streams", b"cam", b"watch", b"..", b".", b"%2e%2e", b"%2F",
                         b"%00", b"%ff", b"%", b"", b"\xc3\xa9", b"\xff", b"a" * 300, b"?part=-1", b"?preset=%ff",
                         b"#x", b"*"])
        | st.binary(max_size=12).map(lambda b: bytes(c for c in b if c > 0x20 and c not in (0x7F,))),
        min_size=1, max_size=6,
    ).map(lambda segments: b"/" + b"/".join(segments)),
    st.sampled_from([b"*", b"http://127.0.0.1/health", b"health", b"//health", b"/health?" + b"x" * 9000]),
)


@fuzz_settings(150)
@given(data=st.data())
async def test_headers_and_raw_requests_never_5xx(node: FuzzedNode, data: st.DataObject):
    method = data.draw(st.sampled_from([b"GET", b"POST", b"PATCH", b"DELETE", b"OPTIONS", b"HEAD", b"PUT", b"get",
                                        b"FOO", b"TRACE"]), label="method")
    target = data.draw(RAW_TARGETS, label="target")
    headers = data.draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5), label="headers")
    bodies = [b"", node.whip_offer.encode(), b'{"preset": "grayscale"}', b"a=end-of-candidates\r\n", b"\xff\xfe\x00"]
    body = data.draw(st.sampled_from(bodies) | st.binary(max_size=64), label="body")
    raw_headers = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    status = await raw_request(node.port, method, target, raw_headers, body)
    event(f"→ {status}")
    logged = node.errors.take()
    assert status < 500 and not logged, (method, target[:200], headers, status, logged)
    node.assert_healthy()


async def test_an_expectation_that_is_not_utf8_is_417_not_500(node: FuzzedNode):
    """Found by the fuzz: aiohttp quoted the header into its 417 and failed on the bytes."""
    for value in (b"\xff", b"x-\xc3", b"202-accepted"):
        status = await raw_request(node.port, b"GET", b"/health", [(b"Expect", value)], b"")
        assert status == 417, (value, status)
        node.assert_healthy()
    # 100-continue still works: the body follows the interim answer
    async with node.http.patch(f"{node.url}/api/streams/cam", json={"preset": "passthrough"}, headers=AUTH,
                               expect100=True) as response:
        assert response.status == 200


async def test_an_output_url_that_does_not_parse_is_422_not_500(node: FuzzedNode):
    """Found by the fuzz: urlsplit() raised on an unclosed IPv6 bracket before any check."""
    for url in ("rtmp://[::1", "http://[", "https://]x/whip"):
        status, text, _ = await node.check("POST", "/api/streams/cam/outputs", json.dumps({"url": url}),
                                           {"Content-Type": JSON, **AUTH})
        assert status == 422 and "url" in text, (url, status, text)
    node.assert_healthy()


async def test_the_node_still_serves_and_streams_after_the_fuzz(node: FuzzedNode):
    """Runs last: the live stream kept flowing through every fuzzed request, nothing is left
    over, and a new real publisher and viewer still work."""
    status, *_ = await node.call("GET", "/health")
    assert status == 200
    node.assert_healthy()
    before = node.frames_seen[0]
    await wait_until(lambda: node.frames_seen[0] >= before + 5, timeout=15)  # cam still reaches its viewer

    publisher = WhipPublisher(node.url, "after", node.http, token=PUBLISH_TOKEN)
    await publisher.publish(SyntheticVideoTrack(160, 120, fps=15))
    viewer = WhepViewer(node.url, "after", node.http)
    await viewer.watch()
    await viewer.wait_connected()
    track = await viewer.video()
    async with asyncio.timeout(15):
        frames = [await track.recv() for _ in range(5)]
    assert (frames[-1].width, frames[-1].height) == (160, 120)
    assert await viewer.close() == 200
    assert await publisher.close() == 200
    await wait_until(lambda: sorted(node.hub.streams) == ["cam"], timeout=5)
    assert not node.errors.take()
