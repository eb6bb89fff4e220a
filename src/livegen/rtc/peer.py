"""`PeerSession`: one WebRTC peer connection (a publisher's or a viewer's) and the tasks
working for it.

A session negotiates its offer (answering with every local candidate gathered), takes trickled
candidates, ends itself when it fails, closes or never connects, and owns the tasks it starts:
`close()` cancels them with a time limit. Its owner (the stream hub) is told through `on_end`
and removes it; nothing here touches pixels.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

from livegen.errors import BadRequest, InvalidSdp, Unprocessable
from livegen.rtc.sdp import advertise_addresses
from livegen.rtc.trickle import IceFragment, ice_credentials

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0


class PeerSession:
    """One peer connection and the tasks working for it."""

    role = "peer"

    def __init__(
        self,
        stream: str,
        config: RTCConfiguration,
        on_end: Callable[[PeerSession], None],
        connect_timeout_s: float,
        advertised_addresses: Sequence[str] = (),
    ):
        self.id = secrets.token_urlsafe(12)
        self.etag = f'"{secrets.token_urlsafe(9)}"'
        self.stream = stream
        self.remote_ice: tuple[str | None, str | None] = (None, None)
        self._bundled = False
        self.pc = RTCPeerConnection(config)
        self.created_at = time.time()
        self.states: list[str] = [self.pc.connectionState]
        self._on_end = on_end
        self._connect_timeout_s = connect_timeout_s
        self._advertised = advertised_addresses
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def tag(self) -> str:
        return f"{self.role} {self.stream}/{self.id[:6]}"

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.tag} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer, answer it with every local candidate gathered; return the answer."""
        self.remote_ice = ice_credentials(offer_sdp)
        self._bundled = "a=group:BUNDLE" in offer_sdp
        self.prepare_offer()
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except OperationError as exc:
            raise Unprocessable(f"no codec in the offer that the node can use ({exc})") from None
        except Exception as exc:  # aiortc raises many kinds on hostile SDP; all are the client's
            raise InvalidSdp(f"offer rejected: {exc or type(exc).__name__}") from None
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            raise Unprocessable(f"cannot answer the offer: {exc or type(exc).__name__}") from None
        answer = advertise_addresses(self.pc.localDescription.sdp, self._advertised)
        self.answered(answer)
        self.spawn(self._connect_deadline(), "connect-deadline")
        return answer

    def prepare_offer(self) -> None:
        """Hook: set up transceivers before the offer is applied (codecs are chosen then)."""

    def answered(self, answer: str) -> None:
        """Hook: the answer is made; what was negotiated is known."""

    async def trickle(self, fragment: IceFragment) -> None:
        """Add the client's trickled candidates. ICE restarts (new credentials) are refused."""
        ufrag, pwd = self.remote_ice
        if (fragment.ufrag and fragment.ufrag != ufrag) or (fragment.pwd and fragment.pwd != pwd):
            raise Unprocessable(
                "ICE restart is not supported by this node: DELETE the session and start a new one"
            )
        for candidate in fragment.candidates:
            if self._bundled:  # one transport carries every bundled m-line
                candidate.sdpMid, candidate.sdpMLineIndex = None, 0
            try:
                await self.pc.addIceCandidate(candidate)
            except Exception as exc:
                raise BadRequest(f"candidate refused: {exc or type(exc).__name__}") from None

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self.pc.connectionState != "connected":
            log.info("[%s] not connected after %.0f s, ending", self.tag, self._connect_timeout_s)
            self.end()

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.states.append(state)
        log.info("[%s] connection %s", self.tag, state)
        if state in ("failed", "closed"):
            self.end()

    def end(self) -> None:
        """Ask the owner to remove this session (idempotent, safe from callbacks)."""
        if not self._closed:
            self._on_end(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        await self.pc.close()

    @property
    def closed(self) -> bool:
        return self._closed
