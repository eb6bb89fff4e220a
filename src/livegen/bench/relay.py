"""`livegen bench relay`: what each RTMP output and a recording cost the node, and the latency
from the publisher through the node and nginx-rtmp to a player.

A `SyntheticVideoTrack` with the delay stamp and a `SyntheticAudioTrack` are published over WHIP
to a node subprocess (see `node`). The bench starts nginx-rtmp on 127.0.0.1 (see
`livegen.testing.nginx_rtmp`) and adds RTMP outputs in steps (`--outputs 0,1,3`: none, then one,
then two more), each to its own stream key; with `--record`, a last step adds a recording to the
most outputs. Each step waits until its outputs are `live`, warms up, then measures a window:
the node's CPU (nginx's and the bench's too), its frames in and out, and every output's state,
bitrate and bytes sent as the node's API reports them.

The stream's video is encoded once and its packets handed to every output; its audio is encoded
once to AAC. Neither encoder runs without a taker, so the step from no output to the first also
carries that shared cost (H.264 and AAC encoding, a keyframe at least every 2 s). The cost per
output is therefore the least-squares slope of node CPU over the steps that have outputs; the
slope over every step, the shared cost and the cost between consecutive steps are kept beside it.

Latency: `RtmpPlayer` plays the first output back from nginx with PyAV on its own thread and
reads each decoded frame's stamp, in the same process and on the same clock as the camera that
drew it; a frame arrives once it is decoded, as at a WHEP viewer.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

from livegen.bench import relay_report
from livegen.bench.cpu import CpuWindow
from livegen.bench.driver import BenchFailed, Scenario, bounded
from livegen.bench.node import (
    LOOPBACK,
    NODE_START_TIMEOUT_S,
    STATS_TIMEOUT_S,
    STREAM,
    NodeProcess,
    counters_window,
    started_node,
)
from livegen.bench.options import RelayOptions
from livegen.bench.peers import CLOSE_TIMEOUT_S, close_client, video_codec
from livegen.bench.probe import PLAUSIBLE_MS, FrameNote, latencies, percentiles, summarize
from livegen.bench.report import result_head
from livegen.rtc.aiortc_adapter import use_host_addresses
from livegen.testing.clients import SignallingError, WhipPublisher
from livegen.testing.nginx_rtmp import NginxRtmp, nginx_missing
from livegen.testing.stamp import elapsed_ms, read_stamp
from livegen.testing.tracks import SyntheticAudioTrack, SyntheticVideoTrack, now_ms

CONNECT_TIMEOUT_S = 15.0
FIRST_FRAME_TIMEOUT_S = 15.0
LIVE_TIMEOUT_S = 15.0
"""How long an output or recording may take from its POST to `live`."""
PLAYER_TIMEOUT_S = 10.0
POLL_S = 0.2
PROGRESS_EVERY_S = 5.0
GOAL_CPU_PER_OUTPUT_PCT = 5.0
OUTPUT_FIELDS = ("name", "state", "reconnects", "last_error")
END_FIELDS = ("fps_in", "fps_out", "output", "audio")
"""What a step keeps of the node's last stream answer (its outputs are kept per output; the
recordings' entries carry file paths, which results never do)."""


def say(step: str, message: str) -> None:
    print(f"[{step:22}] {message}", flush=True)


class RtmpPlayer:
    """Plays an RTMP stream back on its own thread and notes each decoded video frame's arrival
    and stamp (a `probe.FrameNote`), as `LatencyProbe` does for a WebRTC track. `close` ends it."""

    def __init__(self, url: str):
        self.url = url
        self.notes: list[FrameNote] = []
        self.error: str | None = None
        self.first_frame = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livegen-bench-rtmp-player", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        limits = (PLAYER_TIMEOUT_S, PLAYER_TIMEOUT_S)
        try:
            with av.open(self.url, timeout=limits, options={"analyzeduration": "500000"}) as container:
                for frame in container.decode(video=0):
                    note = FrameNote(now_ms())
                    stamp = read_stamp(frame.to_ndarray(format="rgb24"))
                    if stamp is not None and elapsed_ms(stamp, note.received_ms) <= PLAUSIBLE_MS:
                        note.stamp, note.state = stamp, "read"
                    else:
                        note.state = "unreadable"
                    self.notes.append(note)
                    self.first_frame.set()
                    if self._stop.is_set():
                        return
        except (av.FFmpegError, OSError) as exc:
            if not self._stop.is_set():
                self.error = repr(exc)

    @property
    def ended(self) -> bool:
        return not self._thread.is_alive()

    def window(self, start_ms: int, end_ms: int) -> list[FrameNote]:
        return [n for n in list(self.notes) if start_ms <= n.received_ms < end_ms]

    def close(self) -> None:
        """Stop at the next frame; a stream that stalled ends with the read time-out."""
        self._stop.set()
        self._thread.join(PLAYER_TIMEOUT_S + 1)


# ---- the node's API -----------------------------------------------------------------------------
async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=STATS_TIMEOUT_S)) as response:
        text = await response.text()
        if response.status != 201:
            raise BenchFailed(f"POST {url.split('/api/', 1)[-1]} answered {response.status}: {text}")
        return await response.json()


def relays(stats: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The stream's outputs and recordings by id, from its `stream_stats` answer."""
    stats = stats or {}
    return {o["id"]: o for o in (stats.get("outputs") or []) + (stats.get("recordings") or [])}


async def wait_live(node: NodeProcess, http: aiohttp.ClientSession, ids: list[str], label: str) -> None:
    """Until every one of `ids` is `live`; BenchFailed at once when one failed, or at the timeout."""
    deadline = now_ms() + LIVE_TIMEOUT_S * 1000
    while True:
        found = relays(await node.stream_stats(http))
        pending = [found.get(i) or {"id": i, "state": "missing"} for i in ids]
        pending = [o for o in pending if o["state"] != "live"]
        if not pending:
            return
        failed = [o for o in pending if o["state"] in ("failed", "stopped", "missing")]
        if failed or now_ms() > deadline:
            details = "; ".join(f"{o.get('name') or o['id']} {o['state']} ({o.get('last_error')})" for o in failed or pending)
            raise BenchFailed(f"{label}: not every output went live within {LIVE_TIMEOUT_S:.0f} s: {details}")
        await asyncio.sleep(POLL_S)


async def wait_flowing(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    """Until the node has processed the publisher's first frames."""
    deadline = now_ms() + FIRST_FRAME_TIMEOUT_S * 1000
    while not ((await node.stream_stats(http)) or {}).get("frames_out"):
        if now_ms() > deadline:
            raise BenchFailed(f"the node processed no frame within {FIRST_FRAME_TIMEOUT_S:.0f} s of the publish")
        await asyncio.sleep(POLL_S)


# ---- measuring one step -------------------------------------------------------------------------
def relay_window(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One output's or recording's figures over a window: its end state, what it sent."""
    sent = after.get("bytes", 0) - before.get("bytes", 0)
    figures = {key: after.get(key) for key in OUTPUT_FIELDS}
    figures |= {
        "kbps": round(8 * sent / seconds / 1000, 1),
        "bitrate_kbps_at_end": round(after.get("bitrate_bps", 0) / 1000, 1),
        "bytes_in_window": sent,
        "bytes": after.get("bytes"),
        "packets_dropped_in_window": after.get("packets_dropped", 0) - before.get("packets_dropped", 0),
    }
    if after.get("kind") == "recording":
        figures |= {"duration_s": after.get("duration_s"), "files": len(after.get("files") or [])}
    return figures


def node_window(before: dict[str, Any] | None, after: dict[str, Any] | None, seconds: float) -> dict[str, Any] | None:
    """The node's stream counters over the window, its frame rates in and out over it, and
    what its last answer said (`END_FIELDS`)."""
    if not before or not after:
        return None
    window = counters_window(before, after)
    return {
        "fps_in": round(window.get("frames_in", 0) / seconds, 2),
        "fps_out": round(window.get("frames_out", 0) / seconds, 2),
        "window": window,
        "end": {key: after.get(key) for key in END_FIELDS},
    }


async def measure_step(
    label: str, opts: RelayOptions, node: NodeProcess, nginx: NginxRtmp, http: aiohttp.ClientSession,
    camera: SyntheticVideoTrack, player: RtmpPlayer | None,
) -> tuple[dict[str, Any], list[FrameNote]]:
    """The step's figures, and the frames the player noted in its window."""
    cpu = CpuWindow({"node_process": node.pid, "nginx_process": nginx.pid, "bench_process": None})
    before = await node.stream_stats(http)
    sent_before = camera.frames_sent
    cpu.start()
    start = now_ms()
    for tick in range(1, math.ceil(opts.seconds / PROGRESS_EVERY_S) + 1):
        elapsed = min(opts.seconds, tick * PROGRESS_EVERY_S)
        await asyncio.sleep(max(0.0, start + elapsed * 1000 - now_ms()) / 1000)
        seconds = max(now_ms() - start, 1) / 1000
        line = f"{elapsed:4g}/{opts.seconds:g} s  sent {(camera.frames_sent - sent_before) / seconds:5.1f} fps"
        if player is not None:
            if player.ended:
                raise BenchFailed(f"{label}: the RTMP player stopped: {player.error}")
            so_far = player.window(start, now_ms())
            lat = percentiles(latencies(so_far))
            line += (f"  played {len(so_far) / seconds:5.1f} fps  latency p50 {lat['p50'] or 0:6.1f} ms"
                     f"  p95 {lat['p95'] or 0:6.1f} ms")
        say(label, line)
    end = now_ms()
    usage = cpu.stop()
    sent = camera.frames_sent - sent_before
    after = await node.stream_stats(http)

    seconds = (end - start) / 1000
    was, now = relays(before), relays(after)
    figures = {i: relay_window(was.get(i, {}), o, seconds) for i, o in now.items()}
    notes = player.window(start, end) if player is not None else []
    return {
        "seconds": round(seconds, 2),
        "frames_sent": sent,
        "sent_fps": round(sent / seconds, 2),
        "cpu": usage,
        "node": node_window(before, after, seconds),
        "outputs_live": sum(f["state"] == "live" for i, f in figures.items() if now[i]["kind"] != "recording"),
        "output_stats": [f for i, f in figures.items() if now[i]["kind"] != "recording"],
        "recording_stats": next((f for i, f in figures.items() if now[i]["kind"] == "recording"), None),
        "player": summarize(notes, sent, seconds) if player is not None else None,
    }, notes


# ---- the ladder ---------------------------------------------------------------------------------
async def run_ladder(
    opts: RelayOptions, node: NodeProcess, nginx: NginxRtmp, http: aiohttp.ClientSession
) -> dict[str, Any]:
    """Publish, then the output steps and the recording step; the player and publisher closed
    whatever happened (the node and nginx are stopped by the caller)."""
    camera = SyntheticVideoTrack(opts.width, opts.height, opts.fps, stamp=True)
    microphone = SyntheticAudioTrack()
    publisher = WhipPublisher(node.url, STREAM, http, preset=opts.preset)
    player: RtmpPlayer | None = None
    added: list[str] = []
    base = f"{node.url}/api/streams/{STREAM}"
    try:
        say("publish", f"{opts.width}x{opts.height}@{opts.fps:g} with audio, preset {opts.preset}")
        try:
            await publisher.publish(camera, microphone)
            await publisher.wait_connected(CONNECT_TIMEOUT_S)
        except SignallingError as exc:
            raise BenchFailed(f"the publish was refused: {exc}") from None
        except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
            raise BenchFailed(f"the publisher did not connect: {exc!r}") from None
        await wait_flowing(node, http)

        ladder = [(n, False) for n in opts.outputs] + ([(opts.outputs[-1], True)] if opts.record else [])
        steps, notes = [], []
        for count, recording in ladder:
            label = relay_report.step_name(count, recording)
            while len(added) < count:
                key = f"{STREAM}-{len(added) + 1}"
                added.append((await post(http, f"{base}/outputs", {"url": nginx.url(key), "name": key}))["id"])
            if recording:
                added.append((await post(http, f"{base}/recordings"))["id"])
            say(label, "waiting for every output to go live")
            await wait_live(node, http, added, label)
            if player is None and count:
                player = RtmpPlayer(nginx.url(f"{STREAM}-1"))
                player.start()
                if not await asyncio.to_thread(player.first_frame.wait, FIRST_FRAME_TIMEOUT_S):
                    raise BenchFailed(f"{label}: the RTMP player got no frame from nginx: {player.error}")
            say(label, f"live; warming up {opts.warmup:g} s")
            await asyncio.sleep(opts.warmup)
            step, played = await measure_step(label, opts, node, nginx, http, camera, player)
            steps.append({"outputs": count, "recording": recording, **step})
            notes += played
        return {
            "codec": f"{video_codec(publisher.pc.remoteDescription.sdp)} in, H264 + AAC out",
            "steps": steps,
            "player": player_total(steps, notes),
        }
    finally:
        if player is not None:
            await asyncio.to_thread(player.close)
        camera.stop()
        microphone.stop()
        await close_client("WHIP publisher", publisher)


# ---- the scenario -------------------------------------------------------------------------------
def slope(steps: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of node CPU % over the output count."""
    points = [(s["outputs"], s["cpu"]["node_process_pct"]) for s in steps if s["cpu"].get("node_process_pct") is not None]
    if len({n for n, _ in points}) < 2:
        return None
    return round(float(np.polyfit(*zip(*points, strict=True), 1)[0]), 1)


def cpu_figures(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """What outputs and the recording cost the node, from the steps' CPU (module docstring)."""
    ladder = [s for s in steps if not s["recording"]]
    cpu = {s["outputs"]: s["cpu"].get("node_process_pct") for s in ladder}
    per_output = slope([s for s in ladder if s["outputs"] > 0])
    by_step = {
        f"{a}-{b}": round((cpu[b] - cpu[a]) / (b - a), 1) if cpu[a] is not None and cpu[b] is not None else None
        for a, b in itertools.pairwise(cpu)
    }
    first = min((n for n in cpu if n > 0), default=None)
    shared = None
    if first is not None and per_output is not None and cpu.get(0) is not None and cpu[first] is not None:
        shared = round(cpu[first] - cpu[0] - first * per_output, 1)
    recorded = next((s for s in steps if s["recording"]), None)
    without = cpu.get(recorded["outputs"]) if recorded is not None else None
    recording = recorded["cpu"].get("node_process_pct") if recorded is not None else None
    return {
        "cpu_per_output_pct": per_output,
        "cpu_per_output_all_steps_pct": slope(ladder),
        "cpu_per_output_by_step_pct": by_step,
        "cpu_shared_by_outputs_pct": shared,
        "cpu_recording_pct": round(recording - without, 1) if recording is not None and without is not None else None,
    }


def player_total(steps: list[dict[str, Any]], notes: list[FrameNote]) -> dict[str, Any] | None:
    """The player's figures over every measured window it played in (the longest gap within
    one: the warm-ups between them are no gaps)."""
    windows = [s["player"] for s in steps if s["player"] is not None]
    if not windows:
        return None
    total = summarize(notes, sum(w["frames_sent"] for w in windows), sum(s["seconds"] for s in steps if s["player"]))
    total["max_gap_ms"] = max((w["max_gap_ms"] for w in windows if w["max_gap_ms"] is not None), default=None)
    return total


async def measure_relay(opts: RelayOptions) -> dict[str, Any]:
    reason = nginx_missing()
    if reason is not None:
        raise BenchFailed(f"{reason}: run scripts/install-nginx-rtmp.sh (Debian: nginx, libnginx-mod-rtmp)")
    use_host_addresses([LOOPBACK])  # this process's aiortc peers gather on loopback only
    with tempfile.TemporaryDirectory(prefix="livegen-bench-relay-") as scratch:
        nginx = NginxRtmp(Path(scratch) / "nginx")
        settings = {
            "recording": {"dir": str(Path(scratch) / "recordings")},
            "relay": {"max_outputs_per_stream": opts.outputs[-1] + 1},
        }
        try:
            say("nginx", "starting nginx-rtmp")
            try:
                await asyncio.to_thread(nginx.start)
            except RuntimeError as exc:
                raise BenchFailed(f"nginx-rtmp did not start: {exc}") from None
            async with aiohttp.ClientSession() as http:
                node_say = lambda message: say("node", message)  # noqa: E731
                async with started_node(http, "node", node_say, device=opts.device, settings=settings) as (node, ready):
                    say("node", f"ready on {node.url} (device {ready.get('device')}); nginx on port {nginx.port}")
                    measured = await run_ladder(opts, node, nginx, http)
        finally:
            await asyncio.to_thread(nginx.stop)
    steps = measured["steps"]
    figures = cpu_figures(steps)
    per_output = figures["cpu_per_output_pct"]
    return {
        **result_head(opts.scenario, opts.command(), asdict(opts), ready.get("device")),
        "codec": measured["codec"],
        "steps": steps,
        **figures,
        "player": measured["player"],
        "goal": {
            "target": f"≤ {GOAL_CPU_PER_OUTPUT_PCT:g} % of one core per RTMP output",
            "cpu_per_output_pct": per_output,
            "met": None if per_output is None else per_output <= GOAL_CPU_PER_OUTPUT_PCT,  # None: not measured
        },
    }


def deadline_s(opts: RelayOptions) -> float:
    """A bound on the whole run: nginx's and the node's start, every step at its slowest."""
    steps = len(opts.outputs) + opts.record
    step = LIVE_TIMEOUT_S + opts.warmup + opts.seconds + 2 * STATS_TIMEOUT_S + opts.outputs[-1] * STATS_TIMEOUT_S
    start = PLAYER_TIMEOUT_S + NODE_START_TIMEOUT_S + CONNECT_TIMEOUT_S + 2 * FIRST_FRAME_TIMEOUT_S
    return start + steps * step + 2 * CLOSE_TIMEOUT_S + PLAYER_TIMEOUT_S


SCENARIO = Scenario(
    name=RelayOptions.scenario, options=RelayOptions.from_args, measure=bounded(measure_relay, deadline_s),
    section=relay_report.section, table=relay_report.table,
)
