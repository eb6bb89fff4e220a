"""`NodeProcess`: a real node (`python -m livegen serve`) in a subprocess, owned by the bench,
and what the bench reads from it over HTTP.

The node gets its own settings file (loopback-only ICE, a free port, no `LIVEGEN_*` variables
from the caller, plus whatever a scenario sets, e.g. `output.mode`) and logs to a file in the
bench's scratch folder, so a failed start can show why. `stop()` always ends it: SIGTERM first
(aiohttp shuts down gracefully), SIGKILL when that takes too long. `started_node` wraps the
whole life of one node for a scenario. What a scenario may ask of a running node: its
settings as it loaded them, a stream's stats, a live change of a stream's chain, and the memory,
threads and open files of its process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from livegen.bench.driver import BenchFailed
from livegen.config import Settings, load_settings, merge_sections

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STREAM = "bench"
"""The stream the bench publishes to its node."""
NODE_START_TIMEOUT_S = 60.0
STATS_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 10.0
STREAM_COUNTERS = ("frames_in", "frames_out", "over_budget")
STREAM_TALLIES = ("dropped", "degraded", "errors")
"""Counts by reason in a stream's stats (frames dropped, degradations, effect errors)."""


class NodeStartError(RuntimeError):
    """The node did not come up; the message carries the end of its log."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class NodeProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        device: str = "auto",
        log_level: str = "INFO",
        settings: dict[str, Any] | None = None,
    ):
        self.workdir = workdir
        self.device = device
        self.log_level = log_level
        self.settings = settings or {}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "node.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "node.yaml"

    def start(self) -> None:
        self.port = free_port()
        config = self.config_path
        base = {
            # drain_s 0: stop() ends the node at once, live streams or not (no drain to wait out)
            "server": {"host": LOOPBACK, "port": self.port, "drain_s": 0},
            "rtc": {"host_addresses": [LOOPBACK]},
            "engine": {"device": self.device},
            "log_level": self.log_level,
        }
        # the scenario's settings go over the defaults, never over the loopback-only address
        settings = merge_sections(
            merge_sections(base, self.settings), {"server": {"host": LOOPBACK, "port": self.port}}
        )
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        # The node runs on exactly the settings above: LIVEGEN_* variables of the caller's shell
        # would override the file and make runs differ silently.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEGEN_")}
        env["LIVEGEN_RTC__HOST_ADDRESSES"] = f'["{LOOPBACK}"]'
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "livegen", "serve", "--port", str(self.port), "--config", str(config)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=env
        )
        log.debug("node pid %d on port %d", self.process.pid, self.port)

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float) -> dict[str, Any]:
        """Poll `GET /health` until it answers, then return `GET /ready`'s body."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise NodeStartError(f"the node exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                async with http.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise NodeStartError(f"no answer on {self.url}/health after {timeout:.0f} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        async with http.get(f"{self.url}/ready") as response:
            return await response.json()

    async def stream_stats(self, http: aiohttp.ClientSession, stream: str = STREAM) -> dict[str, Any] | None:
        """The node's own `GET /api/streams/{stream}` answer, None when it has none to give."""
        try:
            limit = aiohttp.ClientTimeout(total=STATS_TIMEOUT_S)
            async with http.get(f"{self.url}/api/streams/{stream}", timeout=limit) as response:
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            log.warning("node stats unavailable: %r", exc)
            return None

    def settings_in_use(self) -> Settings:
        """The settings the node runs on: its settings file over the defaults, as it loads them
        (it gets no `LIVEGEN_*` variables that could change them, see `start`)."""
        return load_settings(self.config_path, env={})

    def engine_settings(self) -> dict[str, Any]:
        """The node's `engine` settings as a result records them: numbers, names and switches;
        no folders (they are machine paths)."""
        engine = self.settings_in_use().engine.model_dump(mode="json")
        return {key: value for key, value in engine.items() if not key.endswith("_dir")}

    async def patch_stream(self, http: aiohttp.ClientSession, stream: str, body: dict[str, Any]) -> dict[str, Any]:
        """`PATCH /api/streams/{stream}` with `body`; the stream as the node answers. Any answer
        but 200 (a 422 for a chain the node will not run) is a `BenchFailed` quoting the node."""
        try:
            limit = aiohttp.ClientTimeout(total=STATS_TIMEOUT_S)
            async with http.patch(f"{self.url}/api/streams/{stream}", json=body, timeout=limit) as response:
                text = await response.text()
                if response.status != 200:
                    raise BenchFailed(f"PATCH /api/streams/{stream} answered {response.status}: {text.strip()}")
                return json.loads(text)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise BenchFailed(f"PATCH /api/streams/{stream} failed: {exc!r}") from None

    def memory(self) -> dict[str, Any]:
        """The node process's resident memory (MB), threads and open file descriptors now."""
        return process_memory(self.pid)

    def stop(self) -> int | None:
        """End the node (idempotent); its exit code, negative for a signal."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("the node ignored SIGTERM for %.0f s; killing it", STOP_TIMEOUT_S)
                    process.kill()
                    process.wait(STOP_TIMEOUT_S)
            self.returncode = process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.returncode

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no node log)"
        return "\n".join(text.splitlines()[-lines:])


@asynccontextmanager
async def started_node(
    http: aiohttp.ClientSession,
    label: str,
    say: Callable[[str], None],
    *,
    device: str,
    settings: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[NodeProcess, dict[str, Any]]]:
    """A node in a scratch folder, ready (with its `/ready` answer); stopped on the way out
    whatever happened. A `BenchFailed` from inside also carries the end of the node's log, which
    is usually where the reason is."""
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as scratch:
        node = NodeProcess(Path(scratch), device=device, settings=settings)
        try:
            say("starting `livegen serve` in a subprocess")
            node.start()
            try:
                ready = await node.wait_ready(http, NODE_START_TIMEOUT_S)
            except NodeStartError as exc:  # its message already ends with the log
                raise BenchFailed(f"{label}: {exc}") from None
            try:
                yield node, ready
            except BenchFailed as exc:
                raise BenchFailed(f"{exc}\nthe node's log ends:\n{node.log_tail()}") from None
        finally:
            say(f"node stopped (exit code {node.stop()})")


def counter_deltas(before: dict[str, Any], after: dict[str, Any], keys: tuple[str, ...]) -> dict[str, int]:
    """after − before for each of `keys` that both answers count."""
    return {
        key: after[key] - before[key]
        for key in keys
        if isinstance(after.get(key), int) and isinstance(before.get(key), int)
    }


def counters_window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The node's stream counters over a window between two `stream_stats` answers, and its
    tallies by reason (`STREAM_TALLIES`, those it reports); reasons that did not grow are left
    out."""
    window: dict[str, Any] = counter_deltas(before, after, STREAM_COUNTERS)
    for tally in STREAM_TALLIES:
        if tally not in after:
            continue
        start, end = before.get(tally) or {}, after.get(tally) or {}
        window[tally] = {k: v - start.get(k, 0) for k, v in end.items() if v - start.get(k, 0)}
    return window


def process_memory(pid: int | None) -> dict[str, Any]:
    """Resident memory (MB), thread count and open file descriptors of process `pid`, from
    /proc (or psutil where there is no /proc and it is installed); None for what neither has."""
    reading: dict[str, Any] = {"rss_mb": None, "threads": None, "fds": None}
    if pid is None:
        return reading
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    reading["rss_mb"] = round(int(value.split()[0]) / 1024, 1)  # kB
                elif key == "Threads":
                    reading["threads"] = int(value)
        reading["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        try:
            import psutil
        except ImportError:
            return reading
        try:
            process = psutil.Process(pid)
            reading["rss_mb"] = round(process.memory_info().rss / 2**20, 1)
            reading["threads"] = process.num_threads()
            reading["fds"] = process.num_fds() if hasattr(process, "num_fds") else None
        except psutil.Error:
            pass
    return reading
