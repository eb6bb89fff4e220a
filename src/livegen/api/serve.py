"""Running the node's app until it is told to stop, then draining it (what `livegen serve` runs).

On the first SIGTERM (Kubernetes, `docker stop`) or SIGINT (Ctrl-C) the node stops admitting
publishers — WHIP answers 503 with `Retry-After`, `/ready` 503, so a load balancer takes the node
out — and lets its live streams go on until they end or `server.drain_s` passes; then it closes
every session and returns. The listener stays open while draining: viewers, trickle and the
publishers' own `DELETE` still reach the node. A second signal cuts the drain short.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from livegen.api.keys import HUB, SETTINGS

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve `app` on `host:port` until a stop signal, drain, then clean the app up."""
    hub, drain_s = app[HUB], app[SETTINGS].server.drain_s
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    drain: asyncio.Task[bool] | None = None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stopping.is_set():
            log.info("%s: taking no new publishers; live streams may go on for %.0f s", name, drain_s)
            stopping.set()
            return
        log.info("%s again: closing the live streams now", name)
        for other in STOP_SIGNALS:  # a third signal gets the default action
            loop.remove_signal_handler(other)
        if drain is not None:
            drain.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        await stopping.wait()
        drain = asyncio.ensure_future(hub.drain(drain_s))
        drain.set_name("drain")
        await asyncio.wait([drain])  # a cancelled drain (second signal) is no error here
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await runner.cleanup()
    log.info("stopped")


def run(app: web.Application, host: str, port: int) -> None:
    """`serve()` on an event loop of its own."""
    asyncio.run(serve(app, host, port))
