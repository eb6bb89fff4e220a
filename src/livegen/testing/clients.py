"""Loopback WHIP/WHEP clients on real aiortc peers, used by the tests and by `livegen bench`.

Like a WHIP client should (RFC 9725, load balancing and redirections), they follow `307`/`308`
answers to a POST by sending the same offer, with the same headers, to the new `Location`, and
resolve the session's `Location` against the URL that finally answered.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription


class SignallingError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


MAX_REDIRECTS = 5


class _Client:
    def __init__(self, url: str, http: aiohttp.ClientSession, token: str | None = None):
        self.url = url
        self.http = http
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.redirects: list[str] = []
        """URLs the POST was redirected to, in order; `url` is the last."""
        self.states: list[str] = [self.pc.connectionState]
        self.pc.on("connectionstatechange", lambda: self.states.append(self.pc.connectionState))

    async def _exchange(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp", **self.auth}
        for _ in range(MAX_REDIRECTS + 1):
            # aiohttp would follow a 307 itself, but it drops Authorization on the way to another
            # origin (as browsers and curl do); a WHIP client repeats its request as it was
            async with self.http.post(
                self.url, data=self.pc.localDescription.sdp, headers=headers, allow_redirects=False
            ) as response:
                body = await response.text()
                if response.status in (307, 308) and "Location" in response.headers:
                    self.url = urljoin(self.url, response.headers["Location"])
                    self.redirects.append(self.url)
                    continue
                if response.status != 201:
                    raise SignallingError(response.status, body)
                self.location = urljoin(self.url, response.headers["Location"])
                break
        else:
            raise SignallingError(307, f"more than {MAX_REDIRECTS} redirects, the last to {self.url}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.pc.connectionState != "connected":
                if self.pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"peer {self.pc.connectionState}")
                await asyncio.sleep(0.02)

    async def close(self) -> int | None:
        """DELETE the session (status returned) and close the peer."""
        status = None
        if self.location is not None:
            async with self.http.delete(self.location, headers=self.auth) as response:
                status = response.status
            self.location = None
        await self.pc.close()
        return status


class WhipPublisher(_Client):
    def __init__(
        self, base_url: str, stream: str, http: aiohttp.ClientSession, preset: str | None = None, token: str | None = None
    ):
        url = f"{base_url}/whip/{stream}" + (f"?preset={preset}" if preset else "")
        super().__init__(url, http, token)

    async def publish(self, *tracks: MediaStreamTrack) -> None:
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        await self._exchange()


class WhepViewer(_Client):
    def __init__(self, base_url: str, stream: str, http: aiohttp.ClientSession, token: str | None = None):
        super().__init__(f"{base_url}/whep/{stream}", http, token)
        loop = asyncio.get_running_loop()
        self._tracks: dict[str, asyncio.Future[MediaStreamTrack]] = {
            "video": loop.create_future(),
            "audio": loop.create_future(),
        }
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        future = self._tracks.get(track.kind)
        if future is not None and not future.done():
            future.set_result(track)

    async def watch(self, audio: bool = False) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self._exchange()

    async def video(self, timeout: float = 10.0) -> MediaStreamTrack:
        return await asyncio.wait_for(asyncio.shield(self._tracks["video"]), timeout)

    async def audio(self, timeout: float = 10.0) -> MediaStreamTrack:
        return await asyncio.wait_for(asyncio.shield(self._tracks["audio"]), timeout)
