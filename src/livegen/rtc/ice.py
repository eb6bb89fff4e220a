"""Which local addresses aiortc's ICE agent (aioice) gathers host candidates on.

aioice always gathers on every interface but loopback. A node on a LAN wants that; a node (or a
test) that must stay on one interface, loopback included, sets `rtc.host_addresses`. aioice reads
its address list from a module function, so this policy is process-wide: the app factory applies
it once from the settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice

_AIOICE_DEFAULT = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on `addresses`; an empty list restores aioice's default."""
    if not addresses:
        aioice.ice.get_host_addresses = _AIOICE_DEFAULT
        return
    allowed = tuple(addresses)

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured_host_addresses
