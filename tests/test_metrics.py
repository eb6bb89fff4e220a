"""Prometheus metrics, NVML GPU series, sampled quality, the alert rules and the Grafana dashboard."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from skimage.metrics import structural_similarity

from livegen.api.metrics import METRICS
from livegen.observability import quality as quality_module
from livegen.observability.gpu import GpuCollector, NvmlGpus
from livegen.observability.metrics import LATENCY_BUCKETS_MS, ByteRate, LatencyHistogram, QualityReading
from livegen.observability.quality import QualitySampler, flicker_index, person_ssim, ssim_map
from livegen.testing.clients import WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, start_node, wait_until

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "livegen-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "livegen-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "livegen-dashboard.json"
METRIC_NAME = re.compile(r"\blivegen_[a-z0-9_]+")


# ---- helpers ----------------------------------------------------------------------------------
async def scrape(node, **headers: str) -> str:
    async with node.http.get(f"{node.url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


def samples(text: str, name: str, /, **labels: str) -> list:
    """Samples called `name` (full sample name, e.g. a `_bucket`) whose labels include `labels`."""
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


def value(text: str, name: str, /, **labels: str) -> float:
    found = samples(text, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0].value


def sample_names(text: str) -> set[str]:
    """Every sample name the exposition declares, including families without samples yet."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, [""])
    }


class FakeNvml:
    """The part of pynvml the collector uses, for one GPU without NVENC."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False):
        self.fail_init = fail_init
        self.shutdowns = 0

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"  # older bindings answer bytes

    def nvmlDeviceGetUUID(self, handle):
        return "GPU-1234"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 54

    def nvmlDeviceGetPowerUsage(self, handle):
        return 123_456  # milliwatts

    def nvmlDeviceGetEncoderUtilization(self, handle):
        raise self.NVMLError("Not Supported")


def fake_gpu_exposition() -> str:
    gpus = NvmlGpus.open(FakeNvml())
    assert gpus is not None
    registry = CollectorRegistry()
    registry.register(GpuCollector(gpus))
    return generate_latest(registry).decode()


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/install-promtool.sh must run before the tests")
        pytest.skip("promtool is not installed (run scripts/install-promtool.sh; Debian package `prometheus`)")
    return found


def run_promtool(*args: str | Path) -> str:
    done = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


# ---- the node's /metrics ----------------------------------------------------------------------
async def test_metrics_follow_a_stream_and_forget_it_when_it_ends(live_node):
    metrics = live_node.app[METRICS]
    text = await scrape(live_node)
    assert value(text, "livegen_streams") == 0
    assert not [s for f in text_string_to_metric_families(text) for s in f.samples if "stream" in s.labels]

    async with live_node.http.post(
        f"{live_node.url}/whip/cam", data="v=0", headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 415
    async with live_node.http.post(
        f"{live_node.url}/whep/nobody", data="v=0\r\n", headers={"Content-Type": "application/sdp"}
    ) as response:
        assert response.status == 409  # not published (yet)

    publisher = WhipPublisher(live_node.url, "cam", live_node.http, preset="edges")
    await publisher.publish(SyntheticVideoTrack(320, 240, fps=30))
    await publisher.wait_connected()
    viewer = WhepViewer(live_node.url, "cam", live_node.http)
    await viewer.watch()
    await viewer.wait_connected()
    track = await viewer.video()
    async with asyncio.timeout(20):
        for _ in range(20):
            await track.recv()
    # the worker's quality hook is wired separately; here only the exposition of a reading
    metrics.quality.readings = lambda: {"cam": QualityReading(person_ssim=0.93, flicker=0.012)}

    text = await scrape(live_node)
    cam = {"stream": "cam"}
    assert value(text, "livegen_streams") == 1
    assert value(text, "livegen_stream_viewers", **cam) == 1
    assert value(text, "livegen_stream_input_fps", **cam) > 0
    assert value(text, "livegen_stream_output_fps", **cam) > 0
    processed = value(text, "livegen_stream_frames_processed_total", **cam)
    assert processed >= 20 and value(text, "livegen_stream_frames_received_total", **cam) >= processed
    assert {s.labels["slot"] for s in samples(text, "livegen_stream_slot_depth", **cam)} == {"engine", "encoder"}
    assert {s.value for s in samples(text, "livegen_stream_slot_depth", **cam)} <= {0.0, 1.0}

    count = value(text, "livegen_stream_processing_seconds_count", **cam)
    assert abs(count - processed) <= 2  # read a moment apart while frames flow
    for stage in ("decode", "edges", "convert_in", "convert_out", "encode"):
        labels = {**cam, "stage": stage}
        buckets = samples(text, "livegen_stream_stage_seconds_bucket", **labels)
        assert [b.labels["le"] for b in buckets] == [f"{ms / 1000:g}" for ms in LATENCY_BUCKETS_MS] + ["+Inf"]
        counts = [b.value for b in buckets]
        assert counts == sorted(counts), f"{stage}: buckets not cumulative"
        assert counts[-1] == value(text, "livegen_stream_stage_seconds_count", **labels) > 0, stage
        assert value(text, "livegen_stream_stage_seconds_sum", **labels) > 0

    (sent,) = samples(text, "livegen_stream_output_bytes_total", **cam)
    assert sent.value > 1000
    assert value(text, "livegen_stream_output_bits_per_second", stream="cam", codec=sent.labels["codec"]) > 0
    assert value(text, "livegen_quality_person_ssim", **cam) == pytest.approx(0.93)
    assert value(text, "livegen_quality_flicker", **cam) == pytest.approx(0.012)

    assert value(text, "livegen_signalling_errors_total", endpoint="whip", status="415") == 1
    assert value(text, "livegen_signalling_errors_total", endpoint="whep", status="409") == 1
    assert len(samples(text, "livegen_signalling_errors_total")) == 2  # the 201s and 200s are not errors
    gpu_series = [s for f in text_string_to_metric_families(text) for s in f.samples if "_gpu_" in s.name]
    if metrics.gpus is None:  # no NVIDIA driver here: no GPU series, and no error for it
        assert gpu_series == []
    else:
        assert value(text, "livegen_gpu_memory_total_bytes", gpu="0") > 0

    assert await viewer.close() == 200
    assert await publisher.close() == 200
    await wait_until(lambda: not live_node.hub.streams)
    text = await scrape(live_node)
    assert value(text, "livegen_streams") == 0
    assert not [s for f in text_string_to_metric_families(text) for s in f.samples if "stream" in s.labels]
    assert value(text, "livegen_signalling_errors_total", endpoint="whip", status="415") == 1


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(live_node):
    async with live_node.http.get(
        f"{live_node.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")


async def test_metrics_need_a_token_once_the_node_has_tokens():
    runner, url = await start_node(node_settings(auth={"operator_token": "op-secret"}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(f"{url}/metrics", headers={"Authorization": "Bearer op-secret"}) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    assert not runner.app[METRICS].quality.running, "the quality thread outlived the app"


# ---- accumulators -----------------------------------------------------------------------------
def test_latency_histogram_buckets_are_cumulative_with_le_bounds():
    histogram = LatencyHistogram((1.0, 10.0, 100.0))
    for ms in (0.5, 1.0, 1.5, 10.0, 99.0, 250.0):
        histogram.observe(ms)
    counts = histogram.read()
    assert counts.cumulative == (2, 4, 5, 6)  # a value on a bound counts in that bound's bucket
    assert counts.count == 6
    assert counts.sum_s == pytest.approx(0.362)


def test_byte_rate_is_the_recent_bitrate_and_forgets_a_stopped_stream():
    now = [100.0]
    rate = ByteRate(clock=lambda: now[0])
    for _ in range(60):  # 30 packets a second of 1000 bytes for 2 s
        now[0] += 1 / 30
        rate.add(1000)
    assert rate.bits_per_second() == pytest.approx(30 * 1000 * 8, rel=0.05)
    now[0] += 5
    assert rate.bits_per_second() == 0 and rate.total == 60_000


# ---- GPU ----------------------------------------------------------------------------------------
def test_without_nvidia_nvml_yields_nothing_and_raises_nothing():
    assert NvmlGpus.open(FakeNvml(fail_init=True)) is None
    gpus = NvmlGpus.open()  # the real bindings
    if gpus is not None:
        gpus.close()
        pytest.skip("this machine has a working NVIDIA driver")


def test_gpu_series_are_in_base_units_and_skip_what_the_board_lacks():
    nvml = FakeNvml()
    gpus = NvmlGpus.open(nvml)
    registry = CollectorRegistry()
    registry.register(GpuCollector(gpus))
    text = generate_latest(registry).decode()
    assert value(text, "livegen_gpu_info", gpu="0", name="NVIDIA H100 80GB HBM3", uuid="GPU-1234") == 1
    assert value(text, "livegen_gpu_utilization_ratio", gpu="0") == pytest.approx(0.37)
    assert value(text, "livegen_gpu_memory_used_bytes", gpu="0") == 3 * 2**30
    assert value(text, "livegen_gpu_memory_total_bytes", gpu="0") == 80 * 2**30
    assert value(text, "livegen_gpu_temperature_celsius", gpu="0") == 54
    assert value(text, "livegen_gpu_power_watts", gpu="0") == pytest.approx(123.456)
    assert samples(text, "livegen_gpu_encoder_utilization_ratio") == []  # NotSupported: absent, not 0
    gpus.close()
    gpus.close()
    assert nvml.shutdowns == 1


# ---- quality ------------------------------------------------------------------------------------
def textured(seed: int, size=(120, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def test_ssim_map_is_scikit_images_gaussian_ssim():
    a = cv2.cvtColor(textured(1), cv2.COLOR_RGB2GRAY)
    b = np.clip(a.astype(np.int16) + np.random.default_rng(2).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    _, expected = structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    assert np.abs(ssim_map(a, b) - expected).max() < 1e-3


def test_person_ssim_ignores_the_replaced_background():
    source = textured(3)
    mask = np.zeros(source.shape[:2], np.float32)
    mask[30:100, 50:110] = 1.0
    output = textured(4)  # a whole new background ...
    output[30:100, 50:110] = source[30:100, 50:110]  # ... around the person as it was
    assert person_ssim(source, output, mask) > 0.97
    smeared = output.copy()
    smeared[30:100, 50:110] = cv2.GaussianBlur(source, (31, 31), 10)[30:100, 50:110]
    assert person_ssim(source, smeared, mask) < 0.5
    assert person_ssim(source, output, np.zeros_like(mask)) is None


def test_flicker_counts_output_change_only_where_the_input_is_still():
    still = textured(5)
    steady = still // 2
    brighter = steady.copy()
    brighter[:60] += 40  # the top half of the output jumps by 40 levels on an unchanged input
    assert flicker_index((still, still), (steady, steady)) == pytest.approx(0.0, abs=1e-6)
    assert flicker_index((still, still), (steady, brighter)) == pytest.approx(20 / 255, rel=0.05)
    moved = still.copy()
    moved[:60] = still[:60] ^ 0x80  # the input changes there (by 128 levels), so the output may too
    assert flicker_index((still, moved), (steady, brighter)) == pytest.approx(0.0, abs=0.005)
    assert flicker_index((still, textured(7)), (steady, brighter)) is None  # nothing still to judge


def poll(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sampler_measures_consecutive_pairs_off_thread_and_stops():
    sampler = QualitySampler(every=10)
    source = textured(8)
    mask = np.ones(source.shape[:2], np.float32)
    sampler.offer("a", 0, source, source, mask)  # not started: ignored
    sampler.offer("a", 1, source, source // 2, mask)
    sampler.start()
    try:
        for index in range(12):
            flickering = source // 2 if index % 2 else source
            sampler.offer("a", index, source, flickering, mask)
            if index % 10 == 1:  # let each pair be measured before the next replaces it
                poll(lambda pairs=index // 10 + 1: sampler.measured == pairs)
        time.sleep(0.05)
        assert sampler.measured == 2  # frames 0-1 and 10-11; the rest never left offer()
        reading = sampler.readings()["a"]
        assert reading.flicker is not None and reading.flicker > 0.1
        assert reading.person_ssim is not None and reading.person_ssim < 0.9
    finally:
        sampler.stop()
    assert not sampler.running
    sampler.offer("a", 20, source, source, mask)  # after stop: a no-op
    sampler.offer("a", 21, source, source, mask)
    time.sleep(0.05)
    assert sampler.measured == 2


def test_sampler_forgets_a_stream_it_has_not_seen_lately():
    now = [0.0]
    sampler = QualitySampler(every=2, clock=lambda: now[0])
    source = textured(9)
    sampler.start()
    try:
        sampler.offer("gone", 0, source, source)
        sampler.offer("gone", 1, source, source)
        poll(lambda: "gone" in sampler.readings())
        assert sampler.readings()["gone"] == QualityReading(person_ssim=None, flicker=pytest.approx(0.0))
        now[0] = quality_module.STALE_S + 1
        assert sampler.readings() == {}
    finally:
        sampler.stop()


# ---- alert rules and dashboard -----------------------------------------------------------------
def test_alert_rules_pass_promtool_check_and_fire_on_synthetic_series():
    assert "SUCCESS: 7 rules found" in run_promtool("check", "rules", RULES)
    assert "SUCCESS" in run_promtool("test", "rules", RULE_TESTS)


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses PromQL in recording rules; Grafana's variables get stand-in values
    rules = [
        {"record": f"livegen:dashboard_query_{i}", "expr": query}
        for i, query in enumerate(
            q.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$stream", ".*")
            for q in dashboard_queries()
            if not q.startswith("label_values(")
        )
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", path)


async def test_dashboard_and_alerts_use_only_metrics_the_node_exposes(live_node):
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])
    exposed = sample_names(await scrape(live_node)) | sample_names(fake_gpu_exposition())
    for source, text in (("dashboard", DASHBOARD.read_text()), ("alert rules", RULES.read_text())):
        used = set(METRIC_NAME.findall(text))
        assert used, source
        assert used <= exposed, f"{source} uses metrics the node does not expose: {sorted(used - exposed)}"
    panels = {p["title"] for p in dashboard["panels"]}
    assert {"Processing time per frame: p50 / p95 / p99", "GPU memory", "Flicker on still input"} <= panels
