"""A WHIP (RFC 9725) publisher on GStreamer's webrtcbin, for the interop tests.

Runs on the system Python with Debian's GStreamer bindings (python3-gst-1.0), not in the
project's virtual environment: the WebRTC stack under test is GStreamer's (webrtcbin, libnice,
libsrtp, vp8enc/x264enc, opusenc), the HTTP side is the standard library.

    /usr/bin/python3 tests/interop/gst_whip_publish.py URL [--seconds N] [--no-audio] ...

It publishes a moving test pattern (and a sine tone) to URL, stays for --seconds (or until
SIGTERM/SIGINT), then ends the session with DELETE. Its candidates are restricted to
--address (default 127.0.0.1). Progress goes to stdout as one JSON object a line:
{"event": "created", "location": ...}, {"event": "connected"}, {"event": "deleted", "status": 200}.
Exit status: 0 after a clean session, 1 when signalling or ICE failed, 2 when GStreamer
lacks something it needs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import urllib.error
import urllib.request
from urllib.parse import urljoin

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    gi.require_version("Nice", "0.1")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice
except (ImportError, ValueError) as missing:  # pragma: no cover - depends on the machine
    print(f"GStreamer Python bindings missing: {missing}", file=sys.stderr)
    sys.exit(2)

ENCODERS = {
    "vp8": "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 target-bitrate=600000 ! rtpvp8pay picture-id-mode=15-bit",
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 ! video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 aggregate-mode=zero-latency",
}
ENCODING_NAMES = {"vp8": "VP8", "h264": "H264"}


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Publisher:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.location: str | None = None
        self.failed: str | None = None
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(self.description())
        self.webrtc = self.pipeline.get_by_name("pub")
        self.restrict_candidates(args.address)
        for transceiver in self.transceivers():
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def description(self) -> str:
        a = self.args
        video = (
            f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1 "
            f"! videoconvert ! queue max-size-buffers=2 leaky=downstream ! {ENCODERS[a.codec]} "
            f"! application/x-rtp,media=video,encoding-name={ENCODING_NAMES[a.codec]},payload=96 ! pub."
        )
        audio = (
            "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 "
            "! queue ! opusenc frame-size=20 ! rtpopuspay "
            "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! pub."
        )
        return " ".join(["webrtcbin name=pub bundle-policy=max-bundle", video, "" if a.no_audio else audio])

    def restrict_candidates(self, address: str) -> None:
        """libnice gathers on every interface but loopback unless told which addresses to use."""
        # Keep the wrapper for the whole run: webrtcbin 1.22 hands out its ICE object with a
        # floating reference, which PyGObject sinks and would drop (freeing it) with the wrapper.
        self.ice = self.webrtc.get_property("ice-agent")
        agent: Nice.Agent = self.ice.get_property("agent")
        local = Nice.Address.new()
        if not local.set_from_string(address):
            raise SystemExit(f"not an IP address: {address}")
        agent.add_local_address(local)

    def transceivers(self) -> list:
        found = []
        while (t := self.webrtc.emit("get-transceiver", len(found))) is not None:
            found.append(t)
        return found

    # -- signalling -------------------------------------------------------------------------
    def on_negotiation_needed(self, _element) -> None:
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        self.webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise: Gst.Promise, _data) -> None:
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            self.fail(f"webrtcbin made no offer: {reply.to_string() if reply else 'no reply'}")
            return
        self.webrtc.emit("set-local-description", offer, None)

    def on_gathering_state(self, *_args) -> None:
        # No trickle: the offer goes out once with every candidate in it (what OBS does too).
        if self.webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.post_offer)

    def post_offer(self) -> bool:
        if self.location is not None or self.failed:
            return False
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            self.args.url, data=offer.encode(), method="POST", headers={"Content-Type": "application/sdp"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer = response.status, response.read().decode()
                location = response.headers.get("Location")
        except urllib.error.HTTPError as error:
            self.fail(f"POST {self.args.url}: HTTP {error.code}: {error.read().decode(errors='replace')}")
            return False
        except OSError as error:
            self.fail(f"POST {self.args.url}: {error}")
            return False
        if status != 201 or not location:
            self.fail(f"POST {self.args.url}: HTTP {status} (Location {location!r})")
            return False
        self.location = urljoin(self.args.url, location)
        emit("created", location=location, status=status)
        ok, sdp = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail("the answer is not SDP")
            return False
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", description, None)
        return False

    def on_connection_state(self, *_args) -> None:
        state = self.webrtc.get_property("connection-state")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            emit("connected")
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.fail("the peer connection failed")

    # -- life cycle -------------------------------------------------------------------------
    def on_error(self, _bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        self.fail(f"GStreamer: {error.message} ({debug})")

    def fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            emit("failed", reason=why)
        self.loop.quit()

    def delete(self) -> None:
        if self.location is None:
            return
        request = urllib.request.Request(self.location, method="DELETE")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError as error:
            status = str(error)
        emit("deleted", status=status)
        self.location = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.stop)
        if self.args.seconds > 0:
            GLib.timeout_add(int(self.args.seconds * 1000), self.stop)
        self.pipeline.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            self.delete()
            self.pipeline.set_state(Gst.State.NULL)
        return 1 if self.failed else 0

    def stop(self) -> bool:
        self.loop.quit()
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/cam")
    parser.add_argument("--seconds", type=float, default=0, help="publish this long, then DELETE (0: until a signal)")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="vp8")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--no-audio", action="store_true", help="publish video only")
    parser.add_argument("--address", default="127.0.0.1", help="the only local address ICE may use")
    args = parser.parse_args()
    Gst.init(None)
    missing = [name for name in ("webrtcbin", "nicesrc", "vp8enc" if args.codec == "vp8" else "x264enc", "opusenc")
               if Gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    return Publisher(args).run()


if __name__ == "__main__":
    sys.exit(main())
