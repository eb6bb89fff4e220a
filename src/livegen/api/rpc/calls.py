"""The parts of a frame API call that are not the service itself: its status codes, its idle
watch, the chain message as a PATCH body, and what is read or dropped when a call ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import json_format

from livegen.engine.lane import LaneResult
from livegen.errors import (
    AtCapacity,
    BadRequest,
    Forbidden,
    LivegenError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
)
from livegen.grpcapi import livegen_pb2 as pb

DRAIN_S = 1.0
DRAIN_MESSAGES = 64


class CallFailed(Exception):
    """Ends a call with `code` (what the error tree has no HTTP status for)."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


_CODES: tuple[tuple[type[LivegenError], grpc.StatusCode], ...] = (
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (AtCapacity, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Unprocessable, grpc.StatusCode.INVALID_ARGUMENT),
    (PayloadTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
)


class IdleWatch:
    """Cancels a call's task once the call has been idle for `idle_s`: no message from the
    client and no answer taken by it, while the node owes it nothing (`node_work`)."""

    def __init__(self, idle_s: float, name: str):
        self.idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self._call = asyncio.current_task()
        self._node_work = 0
        self.last = self._loop.time()
        self.expired = False
        self.code: str | None = None
        """The status code the call ended with, once it is known (for the metrics)."""
        self._task = asyncio.create_task(self._watch(), name=f"{name} idle watch")

    def touch(self) -> None:
        """The client sent a message, or took one."""
        self.last = self._loop.time()

    @contextmanager
    def node_work(self) -> Iterator[None]:
        """While the call waits on the node (a frame on the worker, a prompt being encoded)
        it is not idle, however long that takes."""
        self._node_work += 1
        try:
            yield
        finally:
            self._node_work -= 1
            self.touch()

    async def _watch(self) -> None:
        while True:
            left = self.last + self.idle_s - self._loop.time()
            if self._node_work == 0 and left <= 0:
                break
            await asyncio.sleep(min(1.0, self.idle_s) if self._node_work else left)
        self.expired = True
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        self._task.cancel()


def status_code(exc: LivegenError) -> grpc.StatusCode:
    """The gRPC status of an error of the node's error tree (its HTTP status, in gRPC's words)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def plain(value: Any) -> Any:
    """A `Struct`'s value as the HTTP API's JSON would have it: Struct numbers are all doubles,
    so whole numbers become ints again (a seed, an [r, g, b] colour)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def chain_request(chain: pb.Chain) -> dict[str, Any]:
    """The chain message as the body of a stream's PATCH (empty fields left out)."""
    raw: dict[str, Any] = {}
    if chain.preset:
        raw["preset"] = chain.preset
    if chain.effects:
        raw["effects"] = [
            {"name": effect.name, "params": plain(json_format.MessageToDict(effect.params))} for effect in chain.effects
        ]
    if chain.params:
        raw["params"] = {name: plain(json_format.MessageToDict(params)) for name, params in chain.params.items()}
    return raw


def timing(result: LaneResult) -> pb.Timing:
    return pb.Timing(processing_ms=result.processing_ms, waited_ms=result.waited_ms, stages_ms=result.timings_ms)


async def drain(requests: AsyncIterator[pb.ProcessRequest]) -> None:
    """Read what the client still sends, up to its half-close (at most `DRAIN_S` and
    `DRAIN_MESSAGES`), before a call ends with an error. grpcio's asyncio client reports
    INTERNAL ("Internal error from Core") instead of the server's status when one of its writes
    meets a call that has already ended (grpc/grpc#36066): a client that streamed a few frames
    behind a bad config would never learn what was wrong with it."""

    async def discard() -> None:
        count = 0
        async for _ in requests:
            count += 1
            if count >= DRAIN_MESSAGES:
                return

    try:
        async with asyncio.timeout(DRAIN_S):
            await discard()
    except Exception:  # a timeout, or the client went away: the status goes out either way
        pass


def forget(pending: Iterable[tuple[Any, asyncio.Future[LaneResult]]]) -> None:
    """Results nobody will read (the call ended early): their errors are expected, not logged."""
    for _, result in pending:
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
