"""`livegen bench soak | neighbour | overload | all`: their flags and checks, how their results
read (goals that are missed read as missed), `bench all` refusing a dirty checkout and going on
past a failed case, a refused PATCH failing the run, and one short real neighbour run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from livegen.bench import neighbour, overload, soak, suite
from livegen.bench.driver import BenchFailed, run_scenario
from livegen.bench.machine import checkout_changes, checkout_revision
from livegen.bench.node import NodeProcess
from livegen.bench.options import NeighbourOptions, OverloadOptions, SoakOptions
from livegen.bench.report import load_results, summary_section, write_result
from livegen.cli import build_parser
from livegen.config import EngineSettings
from livegen.rtc.aiortc_adapter import use_host_addresses


def parse(*argv: str):
    return build_parser().parse_args(["bench", *argv])


# ---- flags --------------------------------------------------------------------------------------
def test_defaults_are_the_committed_cases_and_the_command_reproduces_them():
    soak_opts = SoakOptions.from_args(parse("soak"))
    assert (soak_opts.minutes, soak_opts.seconds, soak_opts.rows, soak_opts.preset) == (10, 60, 10, "blur")
    assert (soak_opts.width, soak_opts.height, soak_opts.fps) == (1280, 720, 30)

    opts = NeighbourOptions.from_args(parse("neighbour"))
    assert opts.preset == "blur" and opts.chain_length == EngineSettings().max_chain
    assert "--chain-length" in opts.command()
    again = NeighbourOptions.from_args(parse(*opts.command().split()[2:]))
    assert again == opts

    load = OverloadOptions.from_args(parse("overload", "--streams", "4", "--interval", "2"))
    assert (load.streams, load.interval, load.preset) == (4, 2, "edges")
    assert OverloadOptions.from_args(parse(*load.command().split()[2:])) == load


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["neighbour", "--chain-length", "0"], "--chain-length"),
        (["overload", "--streams", "0"], "--streams"),
        (["overload", "--seconds", "10", "--interval", "20"], "--interval"),
        (["soak", "--minutes", "0.5"], "--minutes"),  # shorter than one 60 s row
        (["soak", "--width", "641"], "--width"),
    ],
)
def test_a_bad_flag_is_named_before_anything_starts(argv, named, tmp_path, capsys):
    assert run_scenario(parse(*argv, "--output", str(tmp_path))) == 2
    assert named in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


# ---- goals ------------------------------------------------------------------------------------------
def soak_row(n: int, rss: float, viewer_p95: float | None, node_p95: float) -> dict[str, Any]:
    return {
        "row": n, "seconds": 60.0, "rss_mb": rss, "threads": 20, "fds": 30,
        "viewer": {"delivered_fps": 30.0, "latency_ms": {"p50": 50.0, "p95": viewer_p95}, "frames_received": 1800},
        "node": {"fps_out_window": 29.9, "node_latency_ms": {"p50": 20.0, "p95": node_p95},
                 "window": {"dropped": {"slot_replaced": 2}, "degraded": {}}},
        "cpu": {"node_process_pct": 50.0},
    }


def test_soak_goals_compare_the_last_row_with_the_first():
    steady = [soak_row(1, 400.0, 80.0, 30.0), soak_row(2, 405.0, 84.0, 31.0), soak_row(3, 410.0, 85.0, 30.0)]
    rss, latency = soak.verdicts(steady)
    assert rss["met"] is True and rss["growth_pct"] == 2.5
    assert latency["met"] is True and latency["basis"] == "viewer" and latency["limit_ms"] == 88.0

    leaking = [soak_row(1, 400.0, 80.0, 30.0), soak_row(2, 430.0, 95.0, 30.0)]
    rss, latency = soak.verdicts(leaking)
    assert rss["met"] is False and rss["growth_pct"] == 7.5
    assert latency["met"] is False

    # a preset that blurs the stamp away: the node's own p95 decides
    blurred = [soak_row(1, 400.0, None, 30.0), soak_row(2, 400.0, None, 40.0)]
    latency = soak.verdicts(blurred)[1]
    assert latency["basis"] == "in-node" and (latency["p95_first_ms"], latency["p95_last_ms"]) == (30.0, 40.0)
    assert latency["met"] is False

    assert [v["met"] for v in soak.verdicts(steady[:1])] == [None, None]  # one row decides nothing


def phase(fps_out: float, p95: float) -> dict[str, Any]:
    node = {"fps_out_window": fps_out, "node_latency_ms": {"p50": p95 / 2, "p95": p95},
            "window": {"dropped": {"shed": 3}, "degraded": {"half_resolution": 7}}, "load": {"level": 1}}
    return {"sent_fps": 30.0, "viewer": {"delivered_fps": fps_out, "latency_ms": {"p50": None, "p95": None}},
            "node": node, "readings": []}


def test_neighbour_goals_hold_the_bystander_within_ten_percent_of_alone():
    alone = {"bystander": phase(30.0, 40.0), "cpu": {"node_process_pct": 60.0}}
    fair = {"bystander": phase(28.0, 43.0), "noisy": phase(12.0, 300.0), "cpu": {"node_process_pct": 150.0}}
    unfair = {"bystander": phase(20.0, 90.0), "noisy": phase(25.0, 100.0), "cpu": {"node_process_pct": 150.0}}
    assert [v["met"] for v in neighbour.verdicts(alone, fair)] == [True, True]
    assert [v["met"] for v in neighbour.verdicts(alone, unfair)] == [False, False]
    assert neighbour.verdicts(alone, unfair)[0]["ratio"] == 0.667


def test_overload_goal_fails_when_one_stream_is_over_budget():
    streams = {"load-1": phase(20.0, 80.0), "load-2": phase(15.0, 130.0)}
    [goal] = overload.verdicts(streams, 100.0)
    assert goal["met"] is False and goal["worst_p95_ms"] == 130.0 and goal["p95_ms"]["load-1"] == 80.0
    assert overload.verdicts({"load-1": phase(20.0, 80.0)}, 100.0)[0]["met"] is True


def head(scenario: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": scenario, "schema": 1, "date_utc": "2026-12-01T10:00:00Z", "command": f"livegen bench {scenario}",
            "options": {"width": 1280, "height": 720, "fps": 30.0, "seconds": 30.0, "warmup": 5.0, **options},
            "machine": {"cpu": "Test CPU", "cores": 2, "torch_device": "cpu"}}


def test_reports_show_the_runs_and_their_missed_goals(tmp_path):
    rows = [soak_row(1, 400.0, 80.0, 30.0), soak_row(2, 440.0, 82.0, 31.0)]
    write_result({**head("soak", {"preset": "blur", "minutes": 2.0, "seconds": 60.0}), "rows": rows,
                  "verdicts": soak.verdicts(rows)}, tmp_path)
    alone = {"bystander": phase(30.0, 40.0), "cpu": {"node_process_pct": 60.0}}
    beside = {"bystander": phase(20.0, 90.0), "noisy": phase(25.0, 100.0), "cpu": {"node_process_pct": 150.0}}
    write_result({**head("neighbour", {"preset": "blur", "chain_length": 8}), "noisy_chain": {"effect": "edges",
                  "length": 8}, "alone": alone, "beside": beside, "verdicts": neighbour.verdicts(alone, beside)},
                 tmp_path)
    streams = {"load-1": phase(20.0, 80.0), "load-2": phase(15.0, 130.0)}
    write_result({**head("overload", {"preset": "edges", "streams": 2, "interval": 5.0}), "cpu": {},
                  "streams": streams, "verdicts": overload.verdicts(streams, 100.0)}, tmp_path)

    soak_section = soak.SCENARIO.section(load_results(tmp_path, "soak"))
    assert "400.0 → 440.0" in soak_section and "+10.0 %" in soak_section and "| NO |" in soak_section
    neighbour_section = neighbour.SCENARIO.section(load_results(tmp_path, "neighbour"))
    assert "8 × edges" in neighbour_section and "30.0 / 20.0" in neighbour_section
    assert "| NO | NO |" in neighbour_section  # both goals missed
    overload_section = overload.SCENARIO.section(load_results(tmp_path, "overload"))
    assert "load-2" in overload_section and "level=1" in overload_section and "| NO |" in overload_section

    table = summary_section(tmp_path)
    assert "| soak | blur 1280×720@30, 2 min |" in table and "(goal < 5 %: NO)" in table
    assert "| neighbour | blur 1280×720@30 beside 8 × edges |" in table
    assert "| overload | 2 × edges 1280×720@30 |" in table and "worst in-node p95 130 ms" in table
    for scenario in (soak, neighbour, overload):  # the table after a run reads the same documents
        [(_, result)] = load_results(tmp_path, scenario.SCENARIO.name)
        assert "goal" in scenario.SCENARIO.table(result)


# ---- the node's answers -----------------------------------------------------------------------------
async def test_a_refused_patch_fails_the_run_with_the_nodes_answer(tmp_path):
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"title": "chain too long", "errors": ["effects: at most 8"]}, status=422)

    app = web.Application()
    app.router.add_patch("/api/streams/{stream}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    node = NodeProcess(tmp_path)
    node.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            with pytest.raises(BenchFailed, match="422.*chain too long"):
                await node.patch_stream(http, "noisy", {"effects": [{"name": "edges"}] * 9})
    finally:
        await runner.cleanup()


# ---- bench all -----------------------------------------------------------------------------------------
def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "bench" / "results").mkdir(parents=True)
    (root / "src.py").write_text("x = 1\n")
    (root / "README.md").write_text("# readme\n")
    (root / "bench" / "results" / "e2e-x.json").write_text("{}\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "one")
    return root


def test_the_bench_own_outputs_and_untracked_files_leave_a_checkout_clean(checkout):
    (checkout / "README.md").write_text("# readme\nnew table\n")
    (checkout / "bench" / "results" / "e2e-x.json").write_text('{"new": 1}\n')
    (checkout / "notes.txt").write_text("untracked\n")
    assert checkout_changes(checkout) == []
    assert suite.refusal(checkout, allow_dirty=False) is None
    assert not checkout_revision(checkout).endswith("-dirty")

    (checkout / "src.py").write_text("x = 2\n")
    assert checkout_changes(checkout) == ["src.py"]
    assert checkout_revision(checkout).endswith("-dirty")
    assert "src.py" in suite.refusal(checkout, allow_dirty=False)
    assert suite.refusal(checkout, allow_dirty=True) is None
    assert "not a git checkout" in suite.refusal(checkout.parent, allow_dirty=False)


def test_bench_all_refuses_a_dirty_checkout(checkout, monkeypatch, tmp_path, capsys):
    (checkout / "src.py").write_text("x = 2\n")
    monkeypatch.setattr(suite, "checkout_root", lambda: checkout)
    ran: list[list[str]] = []

    code = suite.run(parse("all", "--output", str(tmp_path / "out")), runner=lambda argv: ran.append(argv) or 0)

    assert code == 2 and ran == []
    out = capsys.readouterr().out
    assert "refusing to start" in out and "src.py" in out and "--allow-dirty" in out


def test_bench_all_runs_every_case_goes_on_past_a_failure_and_regenerates_the_reports(
    checkout, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(suite, "checkout_root", lambda: checkout)
    output = tmp_path / "out"
    ran: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        ran.append(argv)
        return 1 if argv[4] == "relay" else 0

    code = suite.run(parse("all", "--output", str(output), "--skip", "soak,diffusion"), runner=runner)

    assert code == 1
    cases = [argv[4:] for argv in ran]
    assert [c[0] for c in cases] == ["e2e", "e2e", "fanout", "relay", "pipeline", "neighbour", "overload", "process"]
    assert cases[0][:3] == ["e2e", "--preset", "passthrough"] and cases[1][:3] == ["e2e", "--preset", "edges"]
    assert "generated" in cases[4][cases[4].index("--presets") + 1]  # as the committed pipeline result
    run_ids = {argv[argv.index("--run-id") + 1] for argv in ran}
    assert len(run_ids) == 1 and run_ids.pop().endswith(checkout_revision(checkout))
    assert all(argv[argv.index("--output") + 1] == str(output) for argv in ran)
    out = capsys.readouterr().out
    assert "relay" in out and "FAILED" in out and "total time" in out
    assert (output / "README.md").is_file()  # `bench report` ran at the end

    assert suite.run(parse("all", "--only", "nosuch"), runner=runner) == 2
    assert suite.run(parse("all", "--only", "soak", "--skip", "soak"), runner=runner) == 2
    ran.clear()
    assert suite.run(parse("all", "--output", str(output), "--only", "soak,e2e-edges"), runner=runner) == 0
    assert [argv[4:7] for argv in ran] == [["e2e", "--preset", "edges"], ["soak", "--minutes", "10"]]


# ---- one short real run ----------------------------------------------------------------------------
def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_neighbour_measures_the_bystander_alone_and_beside_the_longest_chain(tmp_path, monkeypatch, capsys):
    pids: list[int] = []
    start = NodeProcess.start

    def recording_start(self: NodeProcess) -> None:
        start(self)
        pids.append(self.pid)

    monkeypatch.setattr(NodeProcess, "start", recording_start)
    try:
        code = run_scenario(parse("neighbour", "--width", "320", "--height", "240", "--fps", "10", "--seconds", "2",
                                  "--warmup", "0.5", "--output", str(tmp_path)))
    finally:
        use_host_addresses([])  # the bench sets aioice's policy for its whole process

    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "neighbour-blur-320x240.json").read_text())
    max_chain = EngineSettings().max_chain
    assert result["noisy_chain"] == {"effect": "edges", "length": max_chain, "running": max_chain}
    assert result["engine"]["max_chain"] == max_chain and "budget_ms" in result["engine"]
    for phase_name, streams in (("alone", ["bystander"]), ("beside", ["bystander", "noisy"])):
        for name in streams:
            figures = result[phase_name][name]
            assert figures["viewer"]["frames_received"] > 0, (phase_name, name)
            assert figures["node"]["window"]["frames_out"] > 0, (phase_name, name)
            assert figures["readings"] and "node_latency_ms" in figures["readings"][-1], (phase_name, name)
    assert "noisy" not in result["alone"]
    assert [v["met"] in (True, False) for v in result["verdicts"]] == [True, True]
    assert str(tmp_path) not in json.dumps(result)
    assert "](neighbour-blur-320x240.json)" in (tmp_path / "README.md").read_text()
    assert "goal: bystander fps" in capsys.readouterr().out
    assert len(pids) == 1 and gone(pids[0]), "the node subprocess outlived the bench"


# ---- replayed publishers -------------------------------------------------------------------------
def test_a_replayed_camera_loops_one_keyframe_interval_and_restarts_it_on_request():
    import av

    from livegen.bench.peers import ReplayedCamera
    from livegen.config import OutputSettings
    from livegen.media.encoder import RTP_VIDEO_CLOCK
    from livegen.testing.tracks import SyntheticVideoTrack

    camera = SyntheticVideoTrack(160, 96, fps=30)
    replayed = ReplayedCamera(camera, "H264", OutputSettings(), frames=6)
    tick = av.VideoFrame(2, 2, "yuv420p")
    decoder = av.CodecContext.create("h264", "r")
    sent = []
    for index in range(9):
        tick.pts, tick.time_base = index * 3000, RTP_VIDEO_CLOCK
        packets = replayed.encode(tick, keyframe=index == 8)
        assert packets and all(p.pts == index * 3000 for p in packets)
        sent.append(b"".join(bytes(p) for p in packets))
        for packet in packets:
            pictures = decoder.decode(packet)
            assert all((picture.width, picture.height) == (160, 96) for picture in pictures)
    # the loop is the camera's six pictures, the first a keyframe; then again from it
    assert sent[6] == sent[0] and sent[7] == sent[1] and sent[8] == sent[0] and sent[1] != sent[0]
    assert len(set(sent[:6])) == 6
