"""`ClusterRegistry`: this node's membership of a cluster of nodes that share one Redis.

Keys (all under `cluster.key_prefix`, "livegen" by default):
- `<prefix>:node:<id>`: the node's record, JSON {id, url, capacity, streams, at}, written with a
  TTL of `ttl_s` at every heartbeat. A node whose key has expired is dead to the others.
- `<prefix>:nodes`: a set of node ids, to find the records; ids whose record is gone are pruned
  by whoever reads it.
- `<prefix>:stream:<name>`: the claim on a stream name, its value the holding node's id, with
  the same TTL, refreshed by the holder's heartbeat.

Claims are taken by a Lua script (atomic in Redis): the name is ours when it is free, already
ours, or held by a node whose record has expired; otherwise the live holder keeps it and the
publish is refused (409). A stream that ends is released at once (compare-and-delete, so a node
never frees a name another node took); a node that dies stops refreshing, so within `ttl_s` it
drops out of routing and its names become free.

The heartbeat task (owned here, started and stopped with the app) writes the record, refreshes
the claims of the streams the node holds (and takes back any that expired while Redis was away),
and releases claims of streams that ended; a stream's end or a new claim wakes it early, so the
record's stream count stays current for routing. Redis calls are bounded by `timeout_s`; when one
fails the node decides on its own (serves locally, answers no redirects) until a heartbeat gets
through again. Failures are counted and logged at most once per interval.

Written for a standalone Redis (or one shard): the scripts read node records by computed keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from livegen.cluster import scripts
from livegen.config import ClusterSettings, Settings
from livegen.errors import StreamBusy
from livegen.flow.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")
CLOSE_TIMEOUT_S = 2.0

class ClusterUnavailable(Exception):
    """Redis could not be asked (unreachable, too slow, or failing since the last heartbeat)."""


@dataclass(frozen=True)
class ClusterNode:
    """A live node as its last heartbeat described it."""

    id: str
    url: str
    """Base URL clients reach it at (its `cluster.public_url`)."""
    capacity: int
    streams: int
    accepting: bool = True
    """False while the node drains for shutdown: it takes no new publishers."""

    @property
    def has_room(self) -> bool:
        return self.accepting and self.streams < self.capacity

    @property
    def load(self) -> float:
        return self.streams / self.capacity

    @classmethod
    def parse(cls, record: str) -> ClusterNode | None:
        """The node a record describes; None for one that is not a node record."""
        try:
            data = json.loads(record)
            return cls(
                str(data["id"]), str(data["url"]), max(1, int(data["capacity"])), int(data["streams"]),
                bool(data.get("accepting", True)),
            )
        except (ValueError, TypeError, KeyError):
            log.warning("cluster: ignoring a malformed node record in Redis")
            return None


@dataclass(frozen=True)
class ClusterStream:
    name: str
    node: str
    url: str
    """The holding node's base URL."""


def default_public_url(settings: Settings) -> str:
    """`cluster.public_url`, or http://<server.host>:<server.port> (IPv6 in brackets)."""
    if settings.cluster.public_url is not None:
        return settings.cluster.public_url
    host, port = settings.server.host, settings.server.port
    if host in ("0.0.0.0", "::", ""):
        log.warning(
            "cluster.public_url is not set and the node listens on every address: other nodes will "
            "redirect clients to http://%s:%d, which they cannot reach; set cluster.public_url", host, port
        )
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ClusterRegistry:
    def __init__(
        self,
        settings: ClusterSettings,
        public_url: str,
        capacity: int,
        local_streams: Callable[[], Iterable[str]],
        client: Any = None,
        accepting: Callable[[], bool] = lambda: True,
    ):
        """`local_streams` names the streams this node holds now (the hub's); `accepting` says
        whether it takes new publishers (not while draining for shutdown); `client` is a
        redis.asyncio client, made from `settings.redis_url` at `start()` when not given."""
        self.settings = settings
        self.node_id = settings.node_id or f"{socket.gethostname()[:50]}-{secrets.token_hex(3)}"
        self.public_url = public_url.rstrip("/")
        self.capacity = capacity
        self._local_streams = local_streams
        self._accepting = accepting
        self._client = client
        self._prefix = settings.key_prefix
        self._ttl_ms = max(1, round(settings.ttl_s * 1000))
        self._pending: Counter[str] = Counter()
        """Names being published right now (claimed, not yet among the local streams)."""
        self._held: set[str] = set()
        """Names this node claimed in Redis and has not released."""
        self._contested: set[str] = set()
        """Local streams whose name another live node holds (warned about once)."""
        self._lock = asyncio.Lock()
        """Serialises claims with the heartbeat, so it never frees a name a publish just took."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = RateLimitedLog(log)
        self._scripts: dict[str, Any] = {}
        self.reachable = False
        """Whether the last Redis call succeeded; while False only the heartbeat asks Redis."""
        self.redirects: Counter[str] = Counter()
        """307 answers sent, by endpoint ("whip", "whep"); counted by the API."""
        self.last_heartbeat: float | None = None
        """Wall-clock time of the last heartbeat Redis accepted."""

    # ---- keys ---------------------------------------------------------------------------------
    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    @property
    def _node_prefix(self) -> str:
        return f"{self._prefix}:node:"

    @property
    def _nodes_key(self) -> str:
        return f"{self._prefix}:nodes"

    def _claim_key(self, stream: str) -> str:
        return f"{self._prefix}:stream:{stream}"

    @property
    def errors(self) -> int:
        """Redis calls that failed or timed out since start."""
        return self._failures.total

    # ---- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, announce the node (a failure is logged: the node then serves on its own and
        keeps trying) and start the heartbeat."""
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            timeout = self.settings.timeout_s
            self._client = Redis.from_url(
                self.settings.redis_url, decode_responses=True, socket_timeout=timeout,
                socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),  # the heartbeat retries
            )
        for name, source in (
            ("claim", scripts.CLAIM), ("release", scripts.RELEASE), ("heartbeat", scripts.HEARTBEAT),
            ("owner", scripts.OWNER), ("nodes", scripts.NODES), ("withdraw", scripts.WITHDRAW),
        ):
            self._scripts[name] = self._client.register_script(source)
        await self.beat()
        log.info(
            "cluster node %s at %s (%s)", self.node_id, self.public_url,
            "registered" if self.reachable else "Redis unreachable: serving locally until it answers",
        )
        self._task = asyncio.create_task(self._heartbeats(), name=f"cluster heartbeat {self.node_id}")

    async def close(self) -> None:
        """Stop the heartbeat and leave the cluster: the record and this node's claims are
        deleted, so routing forgets the node now rather than after `ttl_s`."""
        if self._client is None:
            return
        # the lock first: a heartbeat in flight finishes before the withdraw is sent (canceled
        # mid-call, its script could still reach Redis after the withdraw, on a new connection,
        # and bring the record back for ttl_s); so does a claim in flight
        async with self._lock:
            task, self._task = self._task, None
            if task is not None:  # waiting for its next beat, or for the lock: no call in flight
                task.cancel()
                await asyncio.wait([task], timeout=CLOSE_TIMEOUT_S)
            keys = [self._node_key(self.node_id), self._nodes_key, *map(self._claim_key, sorted(self._held))]
            try:
                await self._ask(
                    "leaving the cluster", lambda: self._scripts["withdraw"](keys=keys, args=[self.node_id]), force=True
                )
            except ClusterUnavailable:
                pass  # the record and claims expire within ttl_s
            self._held.clear()
        await self._client.aclose()

    def stream_ended(self, name: str) -> None:
        """The hub's listener: wake the heartbeat, which releases the name's claim."""
        self._wake.set()

    def drain_started(self) -> None:
        """The hub's listener: say at once that this node takes no new publishers."""
        self._wake.set()

    async def _heartbeats(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.heartbeat_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.beat()
            except Exception:  # a bug here must not end the heartbeat: the node would drop out
                log.exception("cluster heartbeat failed")

    def _local(self) -> set[str]:
        return set(self._local_streams()) | set(self._pending)

    async def beat(self) -> None:
        """One heartbeat: record, refresh and take back our claims, release ended ones."""
        async with self._lock:
            local = self._local()
            stale = sorted(self._held - local)
            record = json.dumps({
                "id": self.node_id, "url": self.public_url, "capacity": self.capacity,
                "streams": len(local), "accepting": self._accepting(), "at": round(time.time(), 3),
            })
            names = sorted(local)
            keys = [self._node_key(self.node_id), self._nodes_key, *map(self._claim_key, names + stale)]
            args = [self.node_id, record, self._ttl_ms, len(names), self._node_prefix]
            was_reachable = self.reachable
            try:
                lost = await self._ask(
                    "heartbeat", lambda: self._scripts["heartbeat"](keys=keys, args=args), force=True
                )
            except ClusterUnavailable:
                return
            self.last_heartbeat = time.time()
            if not was_reachable and self._task is not None:
                log.info("cluster: Redis answers again; node %s registered", self.node_id)
            lost_names = {key.rsplit(":", 1)[1] for key in lost}
            for name in sorted(lost_names - self._contested):
                # taken while this node could not reach Redis: both nodes now serve the name
                log.warning("cluster: stream %r is served here but claimed by another live node", name)
            self._contested = lost_names
            self._held = (self._held | set(names)) - set(stale) - lost_names

    async def _ask(self, what: str, call: Callable[[], Awaitable[T]], force: bool = False) -> T:
        """`call()` on Redis within `timeout_s`. `ClusterUnavailable` when it fails, or at once
        (unless `force`) when Redis has been failing since the last heartbeat."""
        if self._client is None or not (self.reachable or force):
            raise ClusterUnavailable(what)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                result = await call()
        except Exception as exc:  # RedisError, OSError, TimeoutError: all mean "no answer"
            self.reachable = False
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._failures.failure("cluster: %s failed, serving locally: %s", what, reason, exc_info=False)
            raise ClusterUnavailable(what) from exc
        self.reachable = True
        return result

    # ---- what the API asks --------------------------------------------------------------------
    async def owner_of(self, stream: str) -> ClusterNode | None:
        """The live node holding `stream` (maybe this one); None when none does or Redis cannot
        be asked."""
        keys, args = [self._claim_key(stream)], [self._node_prefix]
        try:
            record = await self._ask("looking up a stream", lambda: self._scripts["owner"](keys=keys, args=args))
        except ClusterUnavailable:
            return None
        return ClusterNode.parse(record) if record else None

    async def claim(self, stream: str) -> None:
        """Make this node the holder of `stream`; `StreamBusy` (409) when another live node holds
        it, `ClusterUnavailable` when Redis cannot be asked."""
        keys, args = [self._claim_key(stream)], [self.node_id, self._ttl_ms, self._node_prefix]
        async with self._lock:
            holder = await self._ask("claiming a stream", lambda: self._scripts["claim"](keys=keys, args=args))
            if holder != self.node_id:
                raise StreamBusy(f"stream {stream!r} is already published on node {holder}")
            self._held.add(stream)
        self._wake.set()  # the record's stream count changed

    async def release(self, stream: str) -> None:
        """Give up this node's claim on `stream` unless it holds the stream (compare-and-delete:
        a name another node took stays theirs). When Redis cannot be asked, the heartbeat
        releases it later."""
        async with self._lock:
            if stream in self._local() or stream not in self._held:
                return
            try:
                await self._ask(
                    "releasing a stream",
                    lambda: self._scripts["release"](keys=[self._claim_key(stream)], args=[self.node_id]),
                )
            except ClusterUnavailable:
                return
            self._held.discard(stream)
        self._wake.set()  # the record's stream count changed

    @asynccontextmanager
    async def publishing(self, stream: str) -> AsyncIterator[None]:
        """Claim `stream` for a publish in progress (`StreamBusy` when another live node holds
        it). While inside, the heartbeat keeps the claim; after, it stays while the node holds
        the stream and is released when the publish failed. Without Redis the publish goes on
        locally and the heartbeat claims the name once Redis answers."""
        self._pending[stream] += 1
        try:
            try:
                await self.claim(stream)
            except ClusterUnavailable:
                pass
            yield
        finally:
            self._pending[stream] -= 1
            if self._pending[stream] <= 0:
                del self._pending[stream]
            await self.release(stream)

    async def nodes(self) -> list[ClusterNode] | None:
        """Every live node, this one included; None when Redis cannot be asked."""
        keys, args = [self._nodes_key], [self._node_prefix]
        try:
            records = await self._ask("listing nodes", lambda: self._scripts["nodes"](keys=keys, args=args))
        except ClusterUnavailable:
            return None
        return sorted((n for n in map(ClusterNode.parse, records) if n is not None), key=lambda n: n.id)

    async def least_loaded_with_room(self) -> ClusterNode | None:
        """The other live node with a free stream slot and the smallest share of its slots in
        use (fewest streams, then id, on a tie); None when there is none or Redis cannot be asked."""
        others = [n for n in await self.nodes() or () if n.id != self.node_id and n.has_room]
        return min(others, key=lambda n: (n.load, n.streams, n.id), default=None)

    async def streams(self) -> list[ClusterStream] | None:
        """Every stream claimed by a live node, by name; None when Redis cannot be asked."""

        async def read() -> list[ClusterStream]:
            client = self._client
            keys = [key async for key in client.scan_iter(match=self._claim_key("*"), count=1000)]
            holders = await client.mget(keys) if keys else []
            ids = sorted({h for h in holders if h})
            records = await client.mget([self._node_key(i) for i in ids]) if ids else []
            nodes = [ClusterNode.parse(r) for r in records if r]
            urls = {n.id: n.url for n in nodes if n is not None}
            found = [
                ClusterStream(key.rsplit(":", 1)[1], holder, urls[holder])
                for key, holder in zip(keys, holders, strict=True)
                if holder in urls
            ]
            return sorted(found, key=lambda s: s.name)

        try:
            return await self._ask("listing streams", read)
        except ClusterUnavailable:
            return None

    async def describe(self) -> dict[str, Any]:
        """The node's cluster state for operators (`GET /api/node`); no Redis URL (it may hold
        a password)."""
        nodes = await self.nodes()
        return {
            "node_id": self.node_id,
            "public_url": self.public_url,
            "redis": "reachable" if self.reachable else "unreachable",
            "last_heartbeat": self.last_heartbeat,
            "errors": self.errors,
            "nodes": None if nodes is None else [
                {"id": n.id, "url": n.url, "streams": n.streams, "capacity": n.capacity} for n in nodes
            ],
        }
