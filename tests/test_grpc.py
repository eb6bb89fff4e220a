"""The gRPC frame API (livegen.v1.FrameService): a real grpc.aio client against a real node on
127.0.0.1, its server on the node's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import av
import cv2
import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from PIL import Image

from livegen import cli
from livegen.api import create_app
from livegen.api.keys import GENERATOR, WORKER
from livegen.config import EffectSpec, PresetSpec, Settings
from livegen.diffusion import tiny
from livegen.effects import build_chain
from livegen.effects.base import Frame
from livegen.grpcapi import livegen_pb2 as pb
from livegen.grpcapi import livegen_pb2_grpc as pb_grpc
from livegen.api.rpc.server import FRAME_API
from tests.conftest import (
    LiveNode,
    media_threads,
    node_settings,
    start_node,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
RGB24, I420, JPEG = pb.PIXEL_FORMAT_RGB24, pb.PIXEL_FORMAT_I420, pb.PIXEL_FORMAT_JPEG
W, H = 64, 48
OPERATOR, PUBLISHER, VIEWER = "operator-secret", "publish-secret", "viewer-secret"


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """The frame API on a free port; a test's indirect parameter adds sections."""
    extra: dict[str, Any] = dict(getattr(request, "param", {}))
    return node_settings(grpc={"enabled": True, "port": 0, **extra.pop("grpc", {})}, **extra)


@pytest.fixture
async def stub(live_node: LiveNode) -> AsyncIterator[pb_grpc.FrameServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{live_node.app[FRAME_API].port}") as channel:
        yield pb_grpc.FrameServiceStub(channel)


# ---- pictures and expectations --------------------------------------------------------------
def picture(index: int) -> np.ndarray:
    """Smooth colour gradients (JPEG and 4:2:0 keep them well), different for each index."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    red = 40 + 180 * x / (W - 1)
    green = 220 - 160 * y / (H - 1)
    blue = np.full_like(x, 30 + 20 * index)
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """What the `grayscale` preset makes of `rgb`, by the effect's own code."""
    chain = build_chain(PresetSpec(name="gray", effects=[EffectSpec(name="grayscale")]))
    frame = Frame(0, rgb=rgb.copy())
    chain.run(frame)
    return frame.rgb


def jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def unjpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


def i420(rgb: np.ndarray) -> bytes:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()


def i420_to_rgb(data: bytes, width: int = W, height: int = H) -> np.ndarray:
    planes = np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width)
    return av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24")


def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


def frame(fmt: int, data: bytes, frame_id: int, width: int = W, height: int = H) -> pb.ProcessRequest:
    return pb.ProcessRequest(
        frame=pb.Frame(format=fmt, width=width, height=height, data=data, frame_id=frame_id, pts=frame_id * 3000)
    )


def config(preset: str = "grayscale", output_format: int = 0, **chain: Any) -> pb.ProcessRequest:
    return pb.ProcessRequest(config=pb.StreamConfig(chain=pb.Chain(preset=preset, **chain), output_format=output_format))


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def process(
    stub: pb_grpc.FrameServiceStub, messages: Iterable[pb.ProcessRequest], token: str | None = None
) -> list[pb.ProcessResponse]:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    return [response async for response in stub.ProcessStream(iter(list(messages)), metadata=metadata)]


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# ---- ProcessStream --------------------------------------------------------------------------
async def test_rgb_frames_come_back_gray_in_order_with_their_ids_and_timing(live_node, stub):
    pictures = [picture(i) for i in range(10)]  # more than grpc.depth (4): the lane stays full
    responses = await process(stub, [config(), *(frame(RGB24, p.tobytes(), 100 + i) for i, p in enumerate(pictures))])

    assert [r.frame.frame_id for r in responses] == [100 + i for i in range(10)]
    assert [r.frame.pts for r in responses] == [(100 + i) * 3000 for i in range(10)]
    for response, sent in zip(responses, pictures, strict=True):
        out = response.frame
        assert (out.format, out.width, out.height) == (RGB24, W, H)
        rgb = np.frombuffer(out.data, np.uint8).reshape(H, W, 3)
        assert diff(rgb, grayscale(sent)).max() <= 1  # RGB in, RGB out: no 4:2:0 round trip
        opencv_luma = cv2.cvtColor(sent, cv2.COLOR_RGB2GRAY)  # Rec. 601, the same weights
        assert diff(rgb[..., 0], opencv_luma).max() <= 1 and diff(rgb[..., 0], rgb[..., 2]).max() == 0
        assert diff(rgb, sent).max() > 50  # it really changed
        assert response.timing.processing_ms > 0 and response.timing.waited_ms >= 0
        assert "grayscale" in response.timing.stages_ms
    assert live_node.app[WORKER].lanes == ()  # the call's lane is gone with it


async def test_jpeg_and_i420_frames_round_trip_through_the_chain(stub):
    pictures = [picture(i) for i in range(3)]
    sent = [jpeg(p) for p in pictures]
    responses = await process(stub, [config(), *(frame(JPEG, data, i, 0, 0) for i, data in enumerate(sent))])
    assert [r.frame.frame_id for r in responses] == [0, 1, 2]
    for response, data in zip(responses, sent, strict=True):
        assert (response.frame.format, response.frame.width, response.frame.height) == (JPEG, W, H)
        rgb = unjpeg(response.frame.data)
        assert diff(rgb, grayscale(unjpeg(data))).mean() < 1.5  # what the node decoded, grayed, re-encoded
        assert diff(rgb[..., 0], rgb[..., 2]).max() <= 3

    # JPEG in, RGB24 out when the config asks: exactly the effect on the decoded picture
    responses = await process(stub, [config(output_format=RGB24), frame(JPEG, sent[0], 7)])
    rgb = np.frombuffer(responses[0].frame.data, np.uint8).reshape(H, W, 3)
    assert responses[0].frame.format == RGB24 and diff(rgb, grayscale(unjpeg(sent[0]))).max() <= 1

    responses = await process(stub, [config(), *(frame(I420, i420(p), i) for i, p in enumerate(pictures))])
    for response, sent_rgb in zip(responses, pictures, strict=True):
        out = response.frame
        assert (out.format, out.width, out.height, len(out.data)) == (I420, W, H, W * H * 3 // 2)
        planes = np.frombuffer(out.data, np.uint8)
        expected = grayscale(i420_to_rgb(i420(sent_rgb)))  # the node reads I420 as FFmpeg does
        assert diff(i420_to_rgb(out.data), expected).max() <= 3
        assert diff(planes[W * H :], np.full(W * H // 2, 128)).max() <= 1  # no colour left


async def test_a_custom_chain_with_params_runs_and_a_bad_one_names_the_field(stub):
    half = config(preset="", effects=[pb.Effect(name="grayscale", params=struct({"amount": 0.5}))])
    sent = picture(0)
    rgb = np.frombuffer((await process(stub, [half, frame(RGB24, sent.tobytes(), 1)]))[0].frame.data, np.uint8)
    gray = grayscale(sent).astype(float)
    assert diff(rgb.reshape(H, W, 3), (sent + gray) / 2).max() <= 1  # halfway to gray

    bad_chains = {
        "preset: unknown preset": config(preset="no-such-preset"),
        "grayscale.amount": config(preset="", effects=[pb.Effect(name="grayscale", params=struct({"amount": 3}))]),
        "unknown effect 'sparkles'": config(preset="", effects=[pb.Effect(name="sparkles")]),
        "params.blur": config(params={"blur": struct({"amount": 1})}),
        "either preset or effects": config(effects=[pb.Effect(name="grayscale")]),
    }
    for named, message in bad_chains.items():
        error = await refused(process(stub, [message, frame(RGB24, sent.tobytes(), 1)]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and named in error.details(), error.details()


async def test_bad_frames_are_invalid_argument_and_the_node_carries_on(live_node, stub):
    good = picture(0).tobytes()
    png = io.BytesIO()
    Image.fromarray(picture(0)).save(png, "PNG")
    cases = {
        "frame 1.data: 100 bytes": [config(), frame(RGB24, good[:100], 1)],
        "frame 2: width and height must be at least 1": [config(), frame(RGB24, b"", 2, 0, 0)],
        "frame 3: 4000x4000 is larger": [config(), frame(RGB24, b"\0" * 30, 3, 4000, 4000)],
        "frame 4: I420 needs an even": [config(), frame(I420, b"\0" * (63 * 47 * 3 // 2), 4, 63, 47)],
        "frame 5.data: not a decodable JPEG": [config(), frame(JPEG, b"\xff\xd8\xff\xe0garbage", 5)],
        "frame 6.data: not a JPEG file (PNG)": [config(), frame(JPEG, png.getvalue(), 6)],
        "frame 7.format": [config(), frame(0, good, 7)],
        "frame 8: I420 needs an even": [config(output_format=I420), frame(RGB24, b"\0" * 63 * 47 * 3, 8, 63, 47)],
        "only the first message": [config(), frame(RGB24, good, 9), config()],
        "the first message must be a StreamConfig": [frame(RGB24, good, 10)],
        "config.output_format": [config(output_format=9)],
    }
    for named, messages in cases.items():
        error = await refused(process(stub, messages))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and named in error.details(), (named, error.details())
    # the frames before a bad one come back; then the call ends
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for response in stub.ProcessStream(iter([config(), frame(RGB24, good, 1), frame(RGB24, good[:9], 2)])):
            received.append(response.frame.frame_id)
    assert received == [1] and "frame 2.data" in caught.value.details()
    truncated = jpeg(picture(1))[:300]
    error = await refused(process(stub, [config(), frame(JPEG, truncated, 11)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # random bytes in every field the client controls: refused, never a crash
    rng = np.random.default_rng(0)
    for case in range(20):
        fmt, width, height = int(rng.integers(0, 4)), int(rng.integers(0, 80)), int(rng.integers(0, 80))
        data = rng.integers(0, 256, int(rng.integers(0, 20_000)), dtype=np.uint8).tobytes()
        call = process(stub, [config(), frame(fmt, data, case, width, height)])
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()

    assert len(await process(stub, [config(), frame(RGB24, good, 1)])) == 1
    async with live_node.http.get(f"{live_node.url}/health") as response:
        assert response.status == 200
    assert live_node.app[WORKER].lanes == () and live_node.app[FRAME_API].servicer.calls == set()


@pytest.mark.parametrize(
    "settings",
    [{"auth": {"operator_token": OPERATOR, "publish_tokens": {"cam": PUBLISHER}, "viewer_tokens": {"*": VIEWER}}}],
    indirect=True,
)
async def test_tokens_are_the_http_apis(stub):
    messages = [config(), frame(RGB24, picture(0).tobytes(), 1)]
    for token, code in [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("not-a-token", grpc.StatusCode.UNAUTHENTICATED),
        (VIEWER, grpc.StatusCode.PERMISSION_DENIED),  # known, but a viewer may not send frames
    ]:
        error = await refused(process(stub, messages, token))
        assert error.code() == code, (token, error.details())
        assert VIEWER not in error.details()
    assert len(await process(stub, messages, PUBLISHER)) == 1
    assert len(await process(stub, messages, OPERATOR)) == 1
    error = await refused(_drain(stub.GenerateStream(pb.GenerateRequest(prompt="a castle"))))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # before anything else is looked at


@pytest.mark.parametrize("settings", [{"grpc": {"max_streams": 1}}], indirect=True)
async def test_calls_past_max_streams_are_resource_exhausted(live_node, stub):
    requests: asyncio.Queue[pb.ProcessRequest | None] = asyncio.Queue()

    async def feed() -> AsyncIterator[pb.ProcessRequest]:
        while (message := await requests.get()) is not None:
            yield message

    first = stub.ProcessStream(feed())
    await requests.put(config())
    await requests.put(frame(RGB24, picture(0).tobytes(), 1))
    assert (await first.read()).frame.frame_id == 1  # admitted and running

    error = await refused(process(stub, [config(), frame(RGB24, picture(0).tobytes(), 2)]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "grpc.max_streams" in error.details()
    error = await refused(_drain(stub.GenerateStream(pb.GenerateRequest(prompt="a castle"))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # a client that goes away mid-stream gives its place (and its lane) back
    await requests.put(frame(RGB24, picture(1).tobytes(), 2))
    first.cancel()
    servicer = live_node.app[FRAME_API].servicer
    await wait_until(lambda: not servicer.calls and not live_node.app[WORKER].lanes, timeout=5)
    assert len(await process(stub, [config(), frame(RGB24, picture(0).tobytes(), 3)])) == 1


@pytest.mark.parametrize("settings", [{"grpc": {"idle_timeout_s": 1.0}}], indirect=True)
async def test_idle_calls_end_and_give_their_place_back_and_metrics_count_calls(live_node, stub):
    servicer = live_node.app[FRAME_API].servicer

    def queue_call() -> tuple[asyncio.Queue[pb.ProcessRequest], Any]:
        requests: asyncio.Queue[pb.ProcessRequest] = asyncio.Queue()

        async def feed() -> AsyncIterator[pb.ProcessRequest]:
            while True:
                yield await requests.get()

        return requests, stub.ProcessStream(feed())

    # a client that opens a call and never sends its config
    _, silent = queue_call()
    assert await asyncio.wait_for(silent.code(), 5) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "grpc.idle_timeout_s" in await silent.details()
    # a client that sends a frame, takes its answer, then hangs: its lane is closed too
    requests, hanging = queue_call()
    for message in (config(), frame(RGB24, picture(0).tobytes(), 1)):
        requests.put_nowait(message)
    assert (await hanging.read()).frame.frame_id == 1
    assert await asyncio.wait_for(hanging.code(), 5) == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: not servicer.calls and not live_node.app[WORKER].lanes, timeout=5)
    # a slow client that keeps sending is not idle: every frame comes back
    requests, slow = queue_call()
    requests.put_nowait(config())
    for index in range(5):
        await asyncio.sleep(0.3)
        requests.put_nowait(frame(RGB24, picture(index).tobytes(), index))
        assert (await slow.read()).frame.frame_id == index
    slow.cancel()
    await wait_until(lambda: not servicer.calls, timeout=5)

    # the call gives its place back before its end is counted: the count follows at once
    cancelled = 'livegen_grpc_calls_total{code="CANCELLED",method="ProcessStream"} 1.0'
    scraped: list[str] = []

    async def counted() -> bool:
        async with live_node.http.get(f"{live_node.url}/metrics") as answer:
            scraped.append(await answer.text())
        return cancelled in scraped[-1]

    with contextlib.suppress(TimeoutError):
        await wait_until(counted, timeout=5)
    text = scraped[-1]
    assert cancelled in text, text
    assert 'livegen_grpc_calls_total{code="DEADLINE_EXCEEDED",method="ProcessStream"} 2.0' in text, text
    assert 'livegen_grpc_frames_total{method="ProcessStream"} 6.0' in text
    assert 'livegen_grpc_calls_active{method="ProcessStream"} 0.0' in text
    assert 'livegen_grpc_frame_seconds_count{method="ProcessStream"} 6.0' in text


async def test_stopping_the_node_ends_running_calls_and_closes_their_lanes(live_node, stub):
    requests: asyncio.Queue[pb.ProcessRequest] = asyncio.Queue()

    async def feed() -> AsyncIterator[pb.ProcessRequest]:
        while True:
            yield await requests.get()

    call = stub.ProcessStream(feed())
    for message in (config(), frame(RGB24, picture(0).tobytes(), 1)):
        requests.put_nowait(message)
    assert (await call.read()).frame.frame_id == 1
    assert len(live_node.app[WORKER].lanes) == 1

    await asyncio.wait_for(live_node.app[FRAME_API].stop(), timeout=5)  # what the app's cleanup does
    assert await call.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    await wait_until(lambda: not live_node.app[WORKER].lanes, timeout=5)
    assert live_node.app[FRAME_API].servicer.calls == set()


# ---- GenerateStream -------------------------------------------------------------------------
async def _drain(call: Any) -> list[Any]:
    return [response async for response in call]


async def test_generate_without_a_model_or_device_is_failed_precondition(stub):
    # the test node has no GPU and does not allow diffusion on the CPU
    error = await refused(_drain(stub.GenerateStream(pb.GenerateRequest(prompt="a castle", frames=2))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "allow_cpu" in error.details()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_folder(tmp_path_factory.mktemp("grpc-diffusion") / "tiny", seed=0)


@pytest.fixture
def tiny_settings(tiny_model: Path) -> Settings:
    return node_settings(
        grpc={"enabled": True, "port": 0},
        diffusion={"model": str(tiny_model), "taesd": None, "allow_cpu": True},
    )


async def test_generate_stream_makes_frames_of_the_size_asked_deterministic_by_seed(tiny_settings):
    runner, _ = await start_node(tiny_settings)
    try:
        generator = runner.app[GENERATOR]
        await wait_until(lambda: not generator.loading, timeout=60)
        assert generator.unavailable() is None, generator.unavailable()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.app[FRAME_API].port}") as channel:
            stub = pb_grpc.FrameServiceStub(channel)
            ask = dict(prompt="a castle on a hill", width=96, height=64, seed=7, size=64, steps=2)
            first = await _drain(stub.GenerateStream(pb.GenerateRequest(frames=3, **ask)))
            assert [r.frame.frame_id for r in first] == [0, 1, 2] and [r.seed for r in first] == [7, 8, 9]
            pictures = []
            for response in first:
                out = response.frame
                assert (out.format, out.width, out.height, len(out.data)) == (RGB24, 96, 64, 96 * 64 * 3)
                assert response.timing.processing_ms > 0 and "generated" in response.timing.stages_ms
                pictures.append(np.frombuffer(out.data, np.uint8).reshape(64, 96, 3))
            assert all(p.std() > 1 for p in pictures)  # a picture, not a blank
            assert diff(pictures[0], pictures[1]).mean() > 1  # each frame its own seed

            again = await _drain(stub.GenerateStream(pb.GenerateRequest(frames=3, **ask)))
            assert [r.frame.data for r in again] == [r.frame.data for r in first]
            second_alone = await _drain(stub.GenerateStream(pb.GenerateRequest(frames=1, **{**ask, "seed": 8})))
            assert second_alone[0].frame.data == first[1].frame.data

            as_jpeg = await _drain(stub.GenerateStream(pb.GenerateRequest(frames=1, format=JPEG, **ask)))
            assert diff(unjpeg(as_jpeg[0].frame.data), pictures[0]).mean() < 4

            error = await refused(_drain(stub.GenerateStream(pb.GenerateRequest(**{**ask, "steps": 9}))))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "steps" in error.details()
            error = await refused(_drain(stub.GenerateStream(pb.GenerateRequest(**{**ask, "prompt": "  "}))))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt" in error.details()
        assert runner.app[WORKER].lanes == ()
    finally:
        await runner.cleanup()
    await wait_until(lambda: not media_threads(), timeout=5)


# ---- wiring ---------------------------------------------------------------------------------
def test_the_frame_api_is_off_unless_enabled():
    assert FRAME_API not in create_app(node_settings())
    assert Settings().grpc.enabled is False


def test_serving_grpc_beyond_loopback_without_tokens_needs_insecure(monkeypatch, capsys):
    def refused_first(settings: Settings) -> None:
        raise AssertionError("the node was built: the gRPC address was not refused")

    monkeypatch.setattr("livegen.api.create_app", refused_first)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LIVEGEN_GRPC__ENABLED", "true")
    monkeypatch.setenv("LIVEGEN_GRPC__HOST", "0.0.0.0")
    assert cli.main(["serve"]) == 2
    assert "gRPC frame API on 0.0.0.0" in capsys.readouterr().err
    monkeypatch.setenv("LIVEGEN_AUTH__OPERATOR_TOKEN", OPERATOR)  # with a token it goes on to build
    with pytest.raises(AssertionError, match="not refused"):
        cli.main(["serve"])


def test_the_checked_in_generated_code_is_current(tmp_path: Path):
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)],
        check=True, env={**os.environ, "PYTHON": sys.executable}, timeout=60,
    )
    for name in ("livegen_pb2.py", "livegen_pb2.pyi", "livegen_pb2_grpc.py"):
        committed = (ROOT / "src" / "livegen" / "grpcapi" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run scripts/gen-proto.sh"
