"""The node's ICE policy: which local addresses and UDP ports aiortc's ICE agent (aioice) uses,
and which extra addresses the node advertises to clients.

aioice gathers host candidates on every interface but loopback, each on a random port. A node on
a LAN wants that; a node behind a firewall wants a fixed UDP port range; a node behind a 1:1 NAT
wants to advertise its public address; a test wants loopback only. aioice reads its address list
from a module function and aiortc creates its `Connection` class by name, so this policy is
process-wide: the app factory applies it once from the settings.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import aioice.ice
import aiortc.rtcicetransport
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority

_AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses
_AIOICE_CONNECTION = aioice.ice.Connection


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on `addresses`; an empty list restores aioice's default."""
    if not addresses:
        aioice.ice.get_host_addresses = _AIOICE_HOST_ADDRESSES
        return
    allowed = tuple(addresses)

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured_host_addresses


class PortRangeConnection(_AIOICE_CONNECTION):
    """An aioice connection whose host sockets are bound within `port_range` (inclusive)."""

    port_range: tuple[int, int] = (0, 0)

    async def _bind(self, address: str) -> aioice.ice.StunProtocol | None:
        loop = asyncio.get_running_loop()
        low, high = self.port_range
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        for port in ports[start:] + ports[:start]:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), local_addr=(address, port)
                )
            except OSError:
                continue  # taken: try the next one
            return protocol
        return None

    async def get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5) -> list[Candidate]:
        protocols = []
        for address in addresses:
            protocol = await self._bind(address)
            if protocol is None:
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            protocols.append(protocol)
        self._protocols += protocols
        candidates = [p.local_candidate for p in protocols]
        if self.stun_server:
            queries = [
                asyncio.ensure_future(aioice.ice.server_reflexive_candidate(p, self.stun_server))
                for p in protocols
                if ":" not in p.local_candidate.host
            ]
            if queries:
                done, pending = await asyncio.wait(queries, timeout=timeout)
                for task in pending:
                    task.cancel()
                candidates += [t.result()[0] for t in done if t.exception() is None]
        # a TURN relay (if configured) comes from aioice itself, which binds its own socket
        return candidates + await super().get_component_candidates(component, [], timeout)


def use_port_range(port_range: tuple[int, int] | None) -> None:
    """Bind ICE host sockets within this inclusive UDP port range; None restores random ports."""
    if port_range is None:
        aiortc.rtcicetransport.Connection = _AIOICE_CONNECTION
        return
    connection = type("ConfiguredPortRangeConnection", (PortRangeConnection,), {"port_range": port_range})
    aiortc.rtcicetransport.Connection = connection


def advertise_addresses(sdp: str, addresses: Sequence[str]) -> str:
    """Add, for every host candidate in `sdp`, one per advertised address on the same port: what
    a client behind the internet reaches when the node sits behind a 1:1 NAT."""
    if not addresses:
        return sdp
    out: list[str] = []
    for line in sdp.split("\r\n"):
        out.append(line)
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line[len("a=candidate:") :].split()
            if len(parts) < 8:
                continue
            for index, address in enumerate(addresses, start=1):
                extra = parts.copy()
                extra[0] = f"{parts[0]}a{index}"  # a foundation of its own
                extra[3] = str(max(int(parts[3]) - index, 1))  # just below the real one
                extra[4] = address
                out.append("a=candidate:" + " ".join(extra))
    return "\r\n".join(out)
