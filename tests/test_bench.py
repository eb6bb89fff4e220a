"""`livegen bench` scenarios at toy size: measured, results written, the node subprocess (and
nginx, for relay) always stopped. Timings are recorded by the bench, never asserted here."""

from __future__ import annotations

import json
import math
import os

import pytest

from livegen.bench import e2e_report, pipeline_report, run_scenario
from livegen.bench.node import NodeProcess
from livegen.bench.report import refresh_readme
from livegen.cli import build_parser
from livegen.rtc.aiortc_adapter import use_host_addresses
from livegen.testing.nginx_rtmp import NginxRtmp
from tests.nginx_rtmp import require_nginx_rtmp


@pytest.fixture
def node_pids(monkeypatch) -> list[int]:
    """The pid of every node the bench starts."""
    pids: list[int] = []
    start = NodeProcess.start

    def recording_start(self: NodeProcess) -> None:
        start(self)
        pids.append(self.pid)

    monkeypatch.setattr(NodeProcess, "start", recording_start)
    yield pids
    use_host_addresses([])  # the bench sets aioice's policy for its whole process


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def bench(*argv: str) -> int:
    return run_scenario(build_parser().parse_args(["bench", "e2e", *argv]))


def test_e2e_measures_both_paths_and_stops_the_node(tmp_path, node_pids, capsys):
    (tmp_path / "README.md").write_text("# Results\n\nNotes kept by hand.\n")

    code = bench("--width", "640", "--height", "480", "--fps", "10", "--seconds", "3", "--warmup", "1",
                 "--output", str(tmp_path))

    assert code == 0
    result = json.loads((tmp_path / "e2e-passthrough-640x480.json").read_text())
    for path in ("baseline", "node"):
        numbers = result[path]
        assert numbers["frames_sent"] > 0 and numbers["frames_received"] > 0, path
        assert all(math.isfinite(numbers["latency_ms"][k]) for k in ("p50", "p95", "p99", "mean")), path
    assert result["node"]["node_stats"]["window"]["frames_out"] > 0  # the node processed them
    # like for like: the baseline sent the node's viewer codec with the node's encoder settings
    assert result["baseline"]["codec"] == result["node"]["egress_codec"] == "H264"
    assert result["like_for_like"] == {"codec": True, "encoder": True}
    assert result["baseline"]["encoder"]["preset"] == result["node"]["encoder"]["preset"] == "ultrafast"
    assert math.isfinite(result["added_latency_ms"]["p50"])
    assert str(tmp_path) not in json.dumps(result)  # committed files carry no machine paths

    readme = (tmp_path / "README.md").read_text()
    assert "Notes kept by hand." in readme and "](e2e-passthrough-640x480.json)" in readme
    refresh_readme(tmp_path, "e2e", "## e2e\nagain\n")
    again = (tmp_path / "README.md").read_text()
    assert again.count("livegen-bench:e2e:begin") == 1 and "again" in again and "Notes kept by hand." in again

    out = capsys.readouterr().out
    assert "latency p50 ms" in out and "baseline: sends H264 with libx264 ultrafast/zerolatency" in out
    assert "NOT like for like" not in out
    assert len(node_pids) == 1 and gone(node_pids[0]), "the node subprocess outlived the bench"


def test_e2e_stops_the_node_when_the_run_fails(tmp_path, node_pids, capsys):
    code = bench("--width", "320", "--height", "240", "--fps", "10", "--seconds", "1", "--warmup", "0",
                 "--preset", "no-such-preset", "--output", str(tmp_path))

    assert code == 1
    assert "422" in capsys.readouterr().err  # the node's answer names the unknown preset
    assert not list(tmp_path.glob("*.json"))
    assert len(node_pids) == 1 and gone(node_pids[0]), "the node subprocess outlived the failed bench"


def test_fanout_counts_frames_at_every_viewer_in_both_modes(tmp_path, node_pids, capsys):
    code = run_scenario(build_parser().parse_args([
        "bench", "fanout", "--width", "640", "--height", "360", "--fps", "10", "--viewers", "1,3",
        "--seconds", "3", "--warmup", "0.5", "--output", str(tmp_path),
    ]))

    assert code == 0
    result = json.loads((tmp_path / "fanout-passthrough-640x360.json").read_text())
    assert list(result["modes"]) == ["encode_once", "per_viewer"]
    for mode, numbers in result["modes"].items():
        assert [step["viewers"] for step in numbers["steps"]] == [1, 3], mode
        for step in numbers["steps"]:
            assert len(step["frames_per_viewer"]) == step["viewers"], mode
            assert all(frames > 0 for frames in step["frames_per_viewer"]), (mode, step["frames_per_viewer"])
            assert math.isfinite(step["latency_ms"]["p50"]), mode
            assert step["cpu"]["node_process_pct"] is not None, mode
        assert numbers["steps"][-1]["node_stats"]["window"]["frames_out"] > 0, mode
        assert numbers["counting_viewers_send_reports"], mode  # the hook still reaches aiortc's RTCP state
        ran = numbers["encoder"]
        assert (ran["encoder"], ran["preset"], ran["tune"], ran["profile"]) == (
            "libx264", "ultrafast", "zerolatency", "Baseline"), mode
    # like for like: per_viewer ran an encoder per viewer with encode_once's settings
    assert result["like_for_like"] is True
    assert result["modes"]["per_viewer"]["viewer_encoders"] == 3
    assert result["modes"]["encode_once"]["viewer_encoders"] == 0
    once = result["modes"]["encode_once"]["steps"][-1]["node_stats"]["window"]["output"]
    assert once["frames_encoded"] > 0  # encode_once encoded the stream itself
    assert set(result["cpu_ratio_once_to_per_viewer"]) == {"1", "3"}
    assert str(tmp_path) not in json.dumps(result)
    assert "](fanout-passthrough-640x360.json)" in (tmp_path / "README.md").read_text()
    out = capsys.readouterr().out
    assert "per 10 extra viewers" in out and "encoders: both libx264 ultrafast/zerolatency" in out
    assert len(node_pids) == 2 and all(gone(pid) for pid in node_pids), "a node subprocess outlived the bench"


def test_relay_measures_outputs_a_recording_and_latency_through_nginx(tmp_path, node_pids, monkeypatch, capsys):
    require_nginx_rtmp()
    nginx_pids: list[int] = []
    start = NginxRtmp.start

    def recording_start(self: NginxRtmp, *args, **kwargs) -> None:
        start(self, *args, **kwargs)
        nginx_pids.append(self.pid)

    monkeypatch.setattr(NginxRtmp, "start", recording_start)

    code = run_scenario(build_parser().parse_args([
        "bench", "relay", "--width", "640", "--height", "360", "--fps", "10", "--outputs", "0,1,2",
        "--seconds", "2", "--warmup", "0.5", "--output", str(tmp_path),
    ]))

    assert code == 0
    result = json.loads((tmp_path / "relay-passthrough-640x360.json").read_text())
    steps = result["steps"]
    assert [(s["outputs"], s["recording"]) for s in steps] == [(0, False), (1, False), (2, False), (2, True)]
    assert steps[0]["output_stats"] == [] and steps[0]["player"] is None
    for step in steps[1:]:
        assert [o["name"] for o in step["output_stats"]] == [f"bench-{n + 1}" for n in range(step["outputs"])]
        assert all(o["state"] == "live" and o["bytes_in_window"] > 0 for o in step["output_stats"]), step
        assert step["player"]["frames_received"] > 0 and math.isfinite(step["player"]["latency_ms"]["p50"])
        assert step["node"]["window"]["frames_out"] > 0 and step["cpu"]["node_process_pct"] is not None
    recording = steps[-1]["recording_stats"]
    assert recording["state"] == "live" and recording["bytes_in_window"] > 0 and recording["files"] == 1
    assert all(s["recording_stats"] is None for s in steps[:-1])
    assert set(result["cpu_per_output_by_step_pct"]) == {"0-1", "1-2"}
    assert result["cpu_per_output_pct"] is not None and result["cpu_recording_pct"] is not None
    assert result["player"]["frames_undecodable"] == 0  # every played frame carried its stamp
    assert str(tmp_path) not in json.dumps(result)
    assert "](relay-passthrough-640x360.json)" in (tmp_path / "README.md").read_text()
    assert "per RTMP output" in capsys.readouterr().out
    assert len(node_pids) == 1 and gone(node_pids[0]), "the node subprocess outlived the bench"
    assert len(nginx_pids) == 1 and gone(nginx_pids[0]), "nginx outlived the bench"


def test_pipeline_times_every_stage_of_each_preset(tmp_path, capsys):
    code = run_scenario(build_parser().parse_args([
        "bench", "pipeline", "--width", "320", "--height", "180", "--fps", "15", "--seconds", "1.5",
        "--warmup", "0.5", "--presets", "passthrough,edges,grayscale+edges", "--output", str(tmp_path),
    ]))

    assert code == 0
    result = json.loads((tmp_path / "pipeline-presets-320x180.json").read_text())
    edges = result["presets"]["edges"]
    assert edges["frames_out"] > 0 and edges["fps_out"] > 0
    assert set(edges["stages_ms"]) == {"edges", "convert_in", "convert_out"}
    assert all(math.isfinite(edges["processing_ms"][k]) for k in ("p50", "p95", "p99"))
    assert edges["processing_ms"]["p50"] >= edges["stages_ms"]["edges"]["p50"]
    assert result["presets"]["grayscale+edges"]["effects"] == ["grayscale", "edges"]
    assert result["presets"]["passthrough"]["stages_ms"] == {}  # nothing to convert or run
    assert "pipeline" in (tmp_path / "README.md").read_text()
    assert str(tmp_path) not in json.dumps(result)
    assert "edges" in capsys.readouterr().out  # the table went to the screen


def test_pipeline_says_when_every_frame_showed_the_fallback(tmp_path, capsys):
    config = tmp_path / "settings.yaml"
    config.write_text("diffusion:\n  enabled: false\n")  # the same fallback on any machine
    code = run_scenario(build_parser().parse_args([
        "bench", "pipeline", "--width", "160", "--height", "96", "--fps", "10", "--seconds", "1",
        "--warmup", "0.3", "--presets", "generated,grayscale", "--config", str(config), "--output", str(tmp_path),
    ]))

    assert code == 0
    result = json.loads((tmp_path / "pipeline-presets-160x96.json").read_text())
    generated, grayscale = result["presets"]["generated"], result["presets"]["grayscale"]
    assert generated["frames_out"] > 0 and generated["frame_shares"]["fallback"] == 1.0
    assert generated["fallback"] == {"shows": "blur", "cause": "diffusion disabled"}
    assert not generated["clean"]
    # grayscale asks nothing of the diffusion stage (on a busy machine it may still be degraded)
    assert grayscale["fallback"] is None and "fallback" not in grayscale["frame_shares"]
    assert result["diffusion"]["used_by"] == ["generated"] and not result["diffusion"]["available"]
    said = "all frames blur fallback (diffusion disabled)"
    assert said in capsys.readouterr().out
    assert said in (tmp_path / "README.md").read_text()
    rows = dict(pipeline_report.summary_rows(result))
    assert rows["generated 160×96@10"].startswith(f"{generated['fps_out']:.1f} fps — {said}")
    assert "fallback" not in rows["grayscale 160×96@10"]


def test_reports_never_show_a_fallen_back_or_degraded_run_as_clean():
    def preset(**fields):
        return {"effects": ["segmentation", "background"], "fps_out": 30.0, "frames_out": 300, "dropped": {},
                "processing_ms": {"p50": 11.0, "p95": 14.0, "p99": 15.0}, "stages_ms": {}, **fields}

    result = {"options": {"width": 1280, "height": 720, "fps": 30}, "presets": {
        # recorded before per-frame shares: read from the note counts
        "generated": preset(degraded={"background_fallback": 300}),
        "blur": preset(degraded={"mask_reused": 36}, frame_shares={"degraded": 0.12, "over_budget": 0.03}),
        "clean": preset(degraded={}, frame_shares={}),
    }}
    rows = dict(pipeline_report.summary_rows(result))
    assert rows["generated 1280×720@30"].startswith("30.0 fps — all frames fell back (background_fallback);")
    assert rows["blur 1280×720@30"].startswith("30.0 fps — degraded 12 % (mask_reused), over budget 3 %;")
    assert rows["clean 1280×720@30"].startswith("30.0 fps; processing")

    node_stats = {"window": {"frames_out": 100, "over_budget": 0, "dropped": {"slot_replaced": 2},
                             "degraded": {"background_fallback": 40}}}
    e2e = {"options": {"preset": "generated", "width": 640, "height": 480, "fps": 30},
           "added_latency_ms": {"p50": 7.0, "p95": 18.0},
           "baseline": {"codec": "VP8"}, "node": {"codec": "VP8 in, H264 out", "delivered_fps": 29.9,
                                                    "node_stats": node_stats}}
    [(_, text)] = e2e_report.summary_rows(e2e)
    assert "over a VP8 loopback" in text and "fell back 40 % (background_fallback)" in text
    assert "dropped slot_replaced 2" in text and "not like for like (baseline VP8, node H264)" in text


def test_pipeline_names_an_unknown_preset(tmp_path, capsys):
    code = run_scenario(build_parser().parse_args(
        ["bench", "pipeline", "--presets", "nosuch", "--output", str(tmp_path)]))
    assert code == 2
    assert "nosuch" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))


def test_compare_and_the_readme_table_come_from_recorded_results(tmp_path, capsys):
    args = ["bench", "pipeline", "--width", "160", "--height", "96", "--fps", "10", "--seconds", "1",
            "--warmup", "0.2", "--presets", "grayscale", "--output", str(tmp_path)]
    assert run_scenario(build_parser().parse_args(args)) == 0
    old = tmp_path / "old.json"
    (tmp_path / "pipeline-presets-160x96.json").rename(old)
    assert run_scenario(build_parser().parse_args([*args, "--compare", str(old)])) == 0
    out = capsys.readouterr().out
    assert "compared with the run of" in out and "presets.grayscale.processing_ms.p95" in out

    from livegen.bench.report import refresh_summary

    readme = tmp_path / "PROJECT.md"
    readme.write_text("# x\n<!-- livegen-bench:summary:begin -->\nstale\n<!-- livegen-bench:summary:end -->\nkept\n")
    assert refresh_summary(readme, tmp_path) == readme
    text = readme.read_text()
    assert "stale" not in text and "kept" in text
    assert "| pipeline | grayscale 160×96@10 |" in text and "pipeline-presets-160x96.json" in text


def test_the_cpu_window_says_what_else_ran_on_the_machine():
    import subprocess
    import sys
    import time

    from livegen.bench.cpu import CpuWindow

    window = CpuWindow({"bench_process": None})
    # another process burns a core: neither this one nor a named one, so "other processes"
    other = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    window.start()
    try:
        other.wait(timeout=30)
    finally:
        other.kill()
    spent = time.process_time()
    while time.process_time() - spent < 0.3:  # and this process some of its own
        pass
    cpu = window.stop()
    assert cpu["bench_process_pct"] > 10
    assert cpu["other_processes_pct"] > 40, cpu  # most of a core: the other process
    assert 0 <= cpu["machine_steal_pct"] <= 100 and cpu["machine_busy_pct"] > 0
