"""`WebhookSender`: a job's terminal state POSTed as JSON to its `webhook_url`, signed, retried.

Each event is a row of the store's `deliveries` table, written in the same transaction as the
job's terminal state, so a node that stops before delivering resumes at its next start. Its body
(`{"id": <event id>, "type": "job.succeeded", "created": …, "job": {…}}`) is fixed when the event
is made and sent as is on every try: receivers dedupe on the event id (delivery is at least once).

Headers: `Content-Type: application/json`, `Livegen-Event-Id`, `Livegen-Event-Type`, and
`Livegen-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with
`jobs.webhook_secret` (never logged). A receiver recomputes the HMAC over the timestamp and the
raw body, compares in constant time, and refuses old timestamps (`verify_signature`).

Retries: a 5xx, a 408, a time-out or a connection error is retried with exponential backoff and
full jitter (`flow.backoff.Backoff`, `jobs.webhook_backoff_base_s` .. `webhook_backoff_cap_s`);
a 429 after its `Retry-After` (seconds or an HTTP date) when it gives one. Any other answer
(2xx: delivered; 3xx, other 4xx: refused, `failed`) is final. A delivery still not through
`jobs.webhook_give_up_s` after its event was made is `failed`.

Addresses: unless `jobs.webhook_allow_private` is on, a webhook reaches public addresses only
(no loopback, private, link-local — a cloud's metadata service — or reserved ones): a job
whose `webhook_url` names or resolves to none is refused when it is submitted, and every
connection goes through `PublicResolver`, so a name that later resolves elsewhere (DNS
rebinding) is still never connected to; such a delivery is `failed`, not retried.

One asyncio task owns the deliveries; it sends up to `MAX_IN_FLIGHT` at once so that one slow
receiver does not hold up the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import logging
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from livegen.config import JobSettings
from livegen.flow.backoff import Backoff
from livegen.jobs.records import Delivery
from livegen.jobs.store import JobStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Livegen-Signature"
EVENT_ID_HEADER = "Livegen-Event-Id"
EVENT_TYPE_HEADER = "Livegen-Event-Type"
MAX_IN_FLIGHT = 8
IDLE_POLL_S = 1.0
ERROR_TEXT_CHARS = 200


def sign(secret: str, timestamp: int, body: str | bytes) -> str:
    """The `Livegen-Signature` header value for `body` sent at `timestamp`."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: the header's HMAC matches `body` and its timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def retry_after_s(value: str | None, now: float) -> float | None:
    """A `Retry-After` header in seconds from `now` (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def url_host(url: str) -> str:
    """The host of a webhook URL, for logs (its path and query may hold the receiver's secrets)."""
    return urlsplit(url).hostname or "?"


class NotPublic(OSError):
    """A webhook host that is, or resolves only to, addresses webhooks may not reach."""


def is_public(address: str) -> bool:
    """Whether a webhook may connect to `address`: a globally routable unicast address (an
    IPv4-mapped IPv6 address is judged as the IPv4 one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> str | None:
    """`host` if it is an IP address (aiohttp connects to those without resolving)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return host.strip("[]")


class PublicResolver(AbstractResolver):
    """Resolves names as the system does, and keeps only public addresses (`is_public`)."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [entry for entry in found if is_public(entry["host"])]
        if not public:
            raise NotPublic(f"{host} resolves to no public address (jobs.webhook_allow_private is off)")
        return public

    async def close(self) -> None:
        await self._resolver.close()


async def check_reachable(
    url: str, allow_private: bool, resolver: AbstractResolver | None = None, *, resolve: bool = True
) -> None:
    """Raise `NotPublic` when webhooks may not reach `url`'s host. A name that does not resolve
    now passes: it may later, and every connection is checked again. `resolve` False checks an
    address literal only (a sender's connector resolves names through `PublicResolver`)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    literal = literal_address(host)
    if literal is not None:
        if not is_public(literal):
            raise NotPublic(f"{literal} is not a public address (jobs.webhook_allow_private is off)")
        return
    if not resolve:
        return
    own = resolver is None
    resolver = resolver or PublicResolver()
    try:
        await asyncio.wait_for(resolver.resolve(host, 0, socket.AF_UNSPEC), 5.0)
    except NotPublic:
        raise
    except (OSError, TimeoutError):
        return
    finally:
        if own:
            await resolver.close()


class WebhookSender:
    def __init__(
        self,
        store: JobStore,
        settings: JobSettings,
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ):
        self.store = store
        self.settings = settings
        self._rng = rng
        self._clock = clock
        self._on_outcome = on_outcome
        """Called with "delivered", "retried" or "failed" after each try (metrics)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        if self._task is not None:
            return
        connector = None if self.settings.webhook_allow_private else aiohttp.TCPConnector(resolver=PublicResolver())
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        )
        self._task = asyncio.create_task(self._run(), name="livegen-webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """End the task; deliveries in flight are abandoned and tried again at the next start."""
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._in_flight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._in_flight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                free = MAX_IN_FLIGHT - len(self._in_flight)
                if free > 0:
                    for delivery in await self.store.due_deliveries(free, exclude=list(self._in_flight)):
                        task = asyncio.create_task(self._try(delivery), name=f"livegen-webhook-{delivery.event_id}")
                        self._in_flight[delivery.event_id] = task
                        task.add_done_callback(lambda _, event_id=delivery.event_id: self._done(event_id))
                wait = IDLE_POLL_S
                next_try = await self.store.next_delivery()
                if next_try is not None:
                    wait = min(wait, max(0.01, next_try - self._clock()))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook deliveries: reading the store failed")
                wait = IDLE_POLL_S
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _done(self, event_id: str) -> None:
        self._in_flight.pop(event_id, None)
        self._wake.set()

    async def _try(self, delivery: Delivery) -> None:
        try:
            await self._deliver(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or the store failing: the delivery stays pending, tried again
            log.exception("webhook %s for job %s: the try failed", delivery.event_id, delivery.job_id)

    async def _deliver(self, delivery: Delivery) -> None:
        secret = self.settings.webhook_secret
        host = url_host(delivery.url)
        if secret is None:
            await self._record(delivery, "failed", None, "jobs.webhook_secret is not set: webhooks cannot be signed")
            return
        assert self._session is not None
        timestamp = int(self._clock())
        body = delivery.body.encode()
        event_type = str(json.loads(delivery.body).get("type", ""))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "livegen-webhooks",
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: event_type,
            SIGNATURE_HEADER: sign(secret.get_secret_value(), timestamp, body),
        }
        status: int | None = None
        retry_after: float | None = None
        try:
            # aiohttp connects to an address literal without resolving it: checked here; a name
            # is checked by the connector's resolver, and refused below (ClientConnectorError)
            await check_reachable(delivery.url, self.settings.webhook_allow_private, resolve=False)
        except NotPublic as exc:
            log.warning("webhook %s for job %s: %s; not sent", delivery.event_id, delivery.job_id, exc)
            await self._record(delivery, "failed", None, f"{exc}; not sent")
            return
        try:
            async with self._session.post(delivery.url, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
                retry_after = retry_after_s(answer.headers.get("Retry-After"), self._clock())
                await answer.content.read(64 * 1024)  # the receiver's answer is not used; read a little to reuse the connection
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, NotPublic):  # the name resolved elsewhere since the check
                await self._record(delivery, "failed", None, f"{exc.os_error}; not sent")
                return
            await self._retry(delivery, None, _error_text(exc), None, host)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._retry(delivery, None, _error_text(exc), None, host)
            return
        if 200 <= status < 300:
            log.info("webhook %s for job %s delivered to %s (%d)", delivery.event_id, delivery.job_id, host, status)
            await self._record(delivery, "delivered", status, None)
        elif status >= 500 or status in (408, 429):
            await self._retry(delivery, status, f"HTTP {status}", retry_after if status == 429 else None, host)
        else:
            log.warning("webhook %s for job %s refused by %s with %d: not retried", delivery.event_id, delivery.job_id, host, status)
            await self._record(delivery, "failed", status, f"HTTP {status}: refused, not retried")

    async def _retry(self, delivery: Delivery, status: int | None, error: str, retry_after: float | None, host: str) -> None:
        now = self._clock()
        backoff = Backoff(self.settings.webhook_backoff_base_s, self.settings.webhook_backoff_cap_s, self._rng)
        backoff.attempt = delivery.attempts  # the tries before this one
        delay = backoff.next_delay() if retry_after is None else retry_after
        if now + delay > delivery.created + self.settings.webhook_give_up_s:
            log.warning("webhook %s for job %s to %s: %s; giving up after %d tries", delivery.event_id,
                        delivery.job_id, host, error, delivery.attempts + 1)
            await self._record(delivery, "failed", status, f"{error}; gave up (jobs.webhook_give_up_s)")
            return
        log.info("webhook %s for job %s to %s: %s; next try in %.2f s", delivery.event_id, delivery.job_id, host, error, delay)
        await self._record(delivery, "pending", status, error, now + delay)

    async def _record(self, delivery: Delivery, state: str, status: int | None, error: str | None, next_try: float | None = None) -> None:
        await self.store.delivery_tried(
            delivery.event_id, state=state, last_status=status, last_error=error,
            next_try=next_try if next_try is not None else delivery.next_try,
        )
        self._on_outcome("retried" if state == "pending" else state)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_CHARS] if str(exc) else type(exc).__name__
