"""`FrameService` (livegen.v1): frames through an effect chain, and frames from a prompt.

Each call runs on a job lane of the node's device worker (`engine.lane`): every frame is
processed, in order, below the live streams, and at most `grpc.depth` frames of a call are on
the worker at once — the call waits for its oldest result before it hands over another, so a
fast client is slowed to the worker's pace instead of queueing. The event loop only moves
references: pictures are decoded and encoded on the service's conversion threads, chains are
built there too, and results are awaited as futures.

The chain of a ProcessStream is asked for as a stream's PATCH asks for one (`StreamPatch`,
`PresetLibrary.requested`), so the same things are refused with the same field names. Tokens
are the HTTP API's (`api.auth`, action `process`). Errors end a call with a status code:
INVALID_ARGUMENT for what the client sent, UNAUTHENTICATED / PERMISSION_DENIED for its token,
RESOURCE_EXHAUSTED past `grpc.max_streams` calls, FAILED_PRECONDITION when GenerateStream has no
model or device, UNAVAILABLE while the node stops, INTERNAL when an effect fails on a frame,
DEADLINE_EXCEEDED for a call idle for `grpc.idle_timeout_s` — its client sent nothing and read
nothing while the node owed it nothing — so that a client that hangs gives its place back.
Calls, frames and their times are counted in `/metrics` (`api.rpc.metrics`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import av
import grpc

from livegen.api.auth import NODE, authorize_token, parse_bearer
from livegen.api.bodies import check_model
from livegen.api.rpc import frames
from livegen.api.rpc.calls import CallFailed, IdleWatch, chain_request, drain, forget, status_code, timing
from livegen.api.rpc.metrics import RpcMetrics
from livegen.api.rpc.scenes import SceneFrames
from livegen.api.streams import StreamPatch
from livegen.config import Settings
from livegen.diffusion.denoiser import StreamDenoiser
from livegen.diffusion.generator import DiffusionGenerator
from livegen.effects.chain import EffectChain
from livegen.engine.lane import JobLane, LaneClosed, LaneResult
from livegen.engine.presets import PresetLibrary
from livegen.engine.worker import DeviceWorker
from livegen.errors import (
    AtCapacity,
    BadRequest,
    LivegenError,
)
from livegen.grpcapi import livegen_pb2 as pb
from livegen.grpcapi import livegen_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_GENERATED_FRAMES = 10_000
MAX_PROMPT_CHARS = 1000
DEFAULT_GENERATED_SIDE = 512
PROMPT_WAIT_S = 60.0
"""Longest a GenerateStream waits for its prompt's embeddings (the text encoder's first run)."""
PROMPT_POLL_S = 0.25
"""Each wait on a conversion thread is this short, so a stopping node never waits on one."""
MAX_SEED = 2**31 - 1


class FrameServicer(pb_grpc.FrameServiceServicer):
    """Answers the calls of one node (see the module docstring); owns no thread: the server
    lends it the conversion pool and stops both."""

    def __init__(
        self,
        settings: Settings,
        worker: DeviceWorker,
        presets: PresetLibrary,
        generator: DiffusionGenerator,
        pool: Executor,
        metrics: RpcMetrics | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or RpcMetrics()
        self.worker = worker
        self.presets = presets
        self.generator = generator
        self.pool = pool
        """The conversion threads: decoding, encoding, chain building, waiting on prompts."""
        self.limits = frames.Limits(settings.grpc.max_width, settings.grpc.max_height)
        self.calls: set[str] = set()
        """Names of the calls running now (each holds one of `grpc.max_streams`)."""
        self._ids = itertools.count(1)

    def active(self) -> dict[str, int]:
        """Calls running now, by method (for the metrics)."""
        process = sum(1 for name in self.calls if name.startswith("grpc-process-"))
        return {"ProcessStream": process, "GenerateStream": len(self.calls) - process}

    # ---- admission --------------------------------------------------------------------------
    @contextmanager
    def _admitted(self, context: grpc.aio.ServicerContext, kind: str) -> Iterator[str]:
        """The call's token checked and a place taken for it (given back on the way out)."""
        metadata = dict(context.invocation_metadata() or ())
        token = parse_bearer(str(metadata.get("authorization", "")))
        authorize_token(token, self.settings.auth, "process", NODE)
        limit = self.settings.grpc.max_streams
        if len(self.calls) >= limit:
            raise AtCapacity(f"all {limit} frame API calls are taken (grpc.max_streams); retry later")
        if not self.worker.running:
            raise CallFailed(grpc.StatusCode.UNAVAILABLE, "the device worker is not running")
        name = f"grpc-{kind}-{next(self._ids)}"
        self.calls.add(name)
        try:
            yield name
        finally:
            self.calls.discard(name)

    @asynccontextmanager
    async def _call(self, context: grpc.aio.ServicerContext, method: str, kind: str) -> AsyncIterator[IdleWatch]:
        """One call's frame: its idle watch, its end counted by status code, an idle call
        ended with DEADLINE_EXCEEDED."""
        idle_s = self.settings.grpc.idle_timeout_s
        watch = IdleWatch(idle_s, f"grpc-{kind}")
        try:
            yield watch
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not watch.expired or task is None:
                watch.code = "CANCELLED"
                raise
            task.uncancel()  # the watch's own cancel: the call ends with a status instead
            log.info("a %s call was idle for %g s: ended (grpc.idle_timeout_s)", method, idle_s)
            await self._abort(
                context, watch, grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call was idle for {idle_s:g} s: nothing sent and nothing read (grpc.idle_timeout_s)",
            )
        except GeneratorExit:  # grpc closed the call: the client went away, or the watch cancelled a write
            watch.code = "DEADLINE_EXCEEDED" if watch.expired else "CANCELLED"
            raise
        except Exception:
            watch.code = watch.code or "UNKNOWN"
            raise
        finally:
            watch.close()
            self.metrics.ended(method, watch.code or "OK")

    async def _abort(self, context: grpc.aio.ServicerContext, watch: IdleWatch, code: grpc.StatusCode, detail: str) -> None:
        watch.code = code.name
        await context.abort(code, detail)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception, watch: IdleWatch) -> None:
        if isinstance(exc, CallFailed):
            code, detail = exc.code, exc.detail
        else:
            assert isinstance(exc, LivegenError)
            code, detail = status_code(exc), exc.detail
            # the fields a 422 names, where its text does not say them already (an unknown preset)
            fields = [e["field"] for e in exc.extra.get("errors", ()) if e.get("field") and f"{e['field']}:" not in detail]
            if fields:
                detail = f"{', '.join(fields)}: {detail}"
        await self._abort(context, watch, code, detail)

    # ---- ProcessStream ----------------------------------------------------------------------
    async def ProcessStream(
        self, request_iterator: AsyncIterator[pb.ProcessRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessResponse]:
        requests = aiter(request_iterator)
        async with self._call(context, "ProcessStream", "process") as watch:
            try:
                async with aclosing(self._process_call(context, requests, watch)) as responses:
                    async for response in responses:
                        yield response
                        watch.touch()
            except (LivegenError, CallFailed) as exc:
                await drain(requests)
                await self._fail(context, exc, watch)

    async def _process_call(
        self, context: grpc.aio.ServicerContext, requests: AsyncIterator[pb.ProcessRequest], watch: IdleWatch
    ) -> AsyncIterator[pb.ProcessResponse]:
        with self._admitted(context, "process") as name:
            first = await anext(requests, None)
            watch.touch()
            if first is None or first.WhichOneof("message") != "config":
                raise BadRequest("config: the first message must be a StreamConfig naming the chain")
            config = first.config
            frames.check_format(config.output_format, "config.output_format", unspecified_ok=True)
            quality = frames.check_quality(config.jpeg_quality, "config.jpeg_quality")
            chain = await self._build_chain(config.chain)
            lane = self.worker.open_lane(name, chain, self.settings.grpc.depth)
            log.info("[%s] processing frames with preset %s", name, chain.preset)
            try:
                async with aclosing(self._process(lane, requests, config.output_format, quality, watch)) as responses:
                    async for response in responses:
                        yield response
            finally:
                self.worker.close_lane(lane)  # closes the chain on the worker thread

    async def _build_chain(self, message: pb.Chain) -> EffectChain:
        patch = check_model(StreamPatch, chain_request(message))
        spec = self.presets.requested(patch.preset, patch.effects, patch.params)
        # building may load models or files: on a conversion thread
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.presets.build, spec)

    async def _process(
        self, lane: JobLane, requests: AsyncIterator[pb.ProcessRequest], output_format: int, quality: int,
        watch: IdleWatch,
    ) -> AsyncIterator[pb.ProcessResponse]:
        """Frames read, decoded and handed to the lane by a task of their own while results are
        sent back here as they come: a client that waits for each frame before it sends the
        next one is answered at once. A bad frame ends the call after the frames before it."""
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(lane.depth)  # a place is given back once its result is sent
        submitted: asyncio.Queue[tuple[pb.Frame, asyncio.Future[LaneResult]] | Exception | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for message in requests:
                    watch.touch()
                    if message.WhichOneof("message") != "frame":
                        raise BadRequest("config: only the first message may be a StreamConfig")
                    wire = message.frame
                    field = f"frame {wire.frame_id}"
                    picture = await loop.run_in_executor(
                        self.pool, frames.decode, wire, self.limits, output_format, field
                    )
                    await room.acquire()
                    submitted.put_nowait((wire, self._submit(lane, picture)))
            except Exception as exc:  # handed to the sending side, which ends the call with it
                submitted.put_nowait(exc)
            else:
                submitted.put_nowait(None)

        reader = asyncio.create_task(read(), name=f"{lane.name} reader")
        try:
            while (item := await submitted.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                with watch.node_work():
                    response = await self._processed(*item, output_format, quality)
                room.release()
                yield response
        finally:
            reader.cancel()
            await asyncio.wait([reader])
            left = []
            while not submitted.empty():
                item = submitted.get_nowait()
                if isinstance(item, tuple):
                    left.append(item)
            forget(left)

    def _submit(self, lane: JobLane, picture: av.VideoFrame) -> asyncio.Future[LaneResult]:
        try:
            future = lane.submit(picture)
        except LaneClosed:
            raise CallFailed(grpc.StatusCode.UNAVAILABLE, "the node is stopping") from None
        # shielded: a call that ends while its frame is on the worker must not cancel the
        # lane's future under the worker (the lane sets every future it took)
        return asyncio.shield(asyncio.wrap_future(future))

    async def _processed(
        self, wire: pb.Frame, result: asyncio.Future[LaneResult], output_format: int, quality: int
    ) -> pb.ProcessResponse:
        done = await self._result(result, f"frame {wire.frame_id}")
        self.metrics.frame("ProcessStream", (done.waited_ms + done.processing_ms) / 1000.0)
        response = pb.ProcessResponse(timing=timing(done))
        response.frame.frame_id, response.frame.pts = wire.frame_id, wire.pts
        fmt = output_format or wire.format
        await asyncio.get_running_loop().run_in_executor(
            self.pool, frames.encode, done.frame, fmt, quality, response.frame
        )
        return response

    async def _result(self, result: asyncio.Future[LaneResult], what: str) -> LaneResult:
        try:
            return await result
        except LaneClosed:
            raise CallFailed(grpc.StatusCode.UNAVAILABLE, "the node is stopping") from None
        except Exception as exc:  # an effect failed on this frame: the node's fault, not the client's
            log.warning("%s: the effect chain failed: %s: %s", what, type(exc).__name__, exc)
            raise CallFailed(grpc.StatusCode.INTERNAL, f"{what}: the effect chain failed ({type(exc).__name__})") from None

    # ---- GenerateStream ---------------------------------------------------------------------
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        async with self._call(context, "GenerateStream", "generate") as watch:
            try:
                with self._admitted(context, "generate") as name:
                    async with aclosing(self._generate(name, request, watch)) as responses:
                        async for response in responses:
                            yield response
                            watch.touch()
            except (LivegenError, CallFailed) as exc:
                await self._fail(context, exc, watch)

    def _unavailable(self) -> CallFailed | None:
        reason = self.generator.unavailable()
        if reason is None:
            return None
        return CallFailed(grpc.StatusCode.FAILED_PRECONDITION, f"no scene can be generated: {reason}")

    async def _generate(self, name: str, request: pb.GenerateRequest, watch: IdleWatch) -> AsyncIterator[pb.GenerateResponse]:
        if (failed := self._unavailable()) is not None:
            raise failed
        prompt = request.prompt.strip()
        if not prompt:
            raise BadRequest("prompt: must not be empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(f"prompt: at most {MAX_PROMPT_CHARS} characters")
        width, height = request.width or DEFAULT_GENERATED_SIDE, request.height or DEFAULT_GENERATED_SIDE
        fmt = request.format or frames.RGB24
        frames.check_format(fmt, "format")
        frames.check_size(width, height, self.limits, "width, height", even=fmt == frames.I420)
        quality = frames.check_quality(request.jpeg_quality, "jpeg_quality")
        count = request.frames or 1
        if count > MAX_GENERATED_FRAMES:
            raise BadRequest(f"frames: at most {MAX_GENERATED_FRAMES}")
        if request.seed + count - 1 > MAX_SEED:
            raise BadRequest(f"seed: seed + frames - 1 must be at most {MAX_SEED}")
        scene: dict[str, Any] = {"mode": "scene", "seed": request.seed}
        scene["size"] = request.size or max(64, min(DEFAULT_GENERATED_SIDE, max(width, height)))
        if request.steps:
            scene["steps"] = request.steps
        params = self.generator.check(scene)  # 422 naming generated.<field>
        denoiser = self.generator.open_denoiser(prompt, params)  # starts encoding the prompt
        if denoiser is None:
            raise self._unavailable() or CallFailed(grpc.StatusCode.FAILED_PRECONDITION, "no scene generator")
        effect = SceneFrames(self.generator, denoiser, params)
        # the lane owns the effect, which owns the denoiser: closing the lane closes both on the worker
        lane = self.worker.open_lane(name, EffectChain("generate", (effect,)), self.settings.grpc.depth)
        pending: deque[tuple[int, asyncio.Future[LaneResult]]] = deque()
        try:
            with watch.node_work():
                await self._wait_for_prompt(denoiser)
            log.info("[%s] generating %d frames of %dx%d", name, count, width, height)
            for index in range(count):
                blank = av.VideoFrame(width, height, "rgb24")  # the scene paints all of it
                blank.pts = index
                if len(pending) >= lane.depth:
                    with watch.node_work():
                        response = await self._generated(*pending.popleft(), params.seed, fmt, quality)
                    yield response
                pending.append((index, self._submit(lane, blank)))
            while pending:
                with watch.node_work():
                    response = await self._generated(*pending.popleft(), params.seed, fmt, quality)
                yield response
        finally:
            self.worker.close_lane(lane)
            forget(pending)

    async def _wait_for_prompt(self, denoiser: StreamDenoiser) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMPT_WAIT_S
        conditioning = denoiser.conditioning
        while await loop.run_in_executor(self.pool, conditioning.wait, PROMPT_POLL_S) is None:
            if conditioning.error is not None:
                raise CallFailed(grpc.StatusCode.FAILED_PRECONDITION, conditioning.error)
            if (failed := self._unavailable()) is not None:
                raise failed
            if loop.time() > deadline:
                raise CallFailed(grpc.StatusCode.UNAVAILABLE, f"the prompt was not encoded within {PROMPT_WAIT_S:g} s")

    async def _generated(
        self, index: int, result: asyncio.Future[LaneResult], seed: int, fmt: int, quality: int
    ) -> pb.GenerateResponse:
        try:
            done = await self._result(result, f"frame {index}")
        except CallFailed as failed:  # the models went away under the call: say so, as before it
            if failed.code == grpc.StatusCode.INTERNAL and (unavailable := self._unavailable()) is not None:
                raise unavailable from None
            raise
        self.metrics.frame("GenerateStream", (done.waited_ms + done.processing_ms) / 1000.0)
        response = pb.GenerateResponse(timing=timing(done), seed=seed + index)
        response.frame.frame_id, response.frame.pts = index, index
        await asyncio.get_running_loop().run_in_executor(
            self.pool, frames.encode, done.frame, fmt, quality, response.frame
        )
        return response
