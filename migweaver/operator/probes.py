"""`/healthz` and `/readyz` of the operator.

`/healthz` answers 200 while the work loop and kopf run (a dead loop means a restart is
due); `/readyz` once kopf is ready (its startup done) and, on the active replica, its first
round is done. A standby replica is ready too: it serves the webhook and takes over when
the active one goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web


def probe_app(alive: Callable[[], bool], ready: asyncio.Event) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok")
        return web.Response(status=503, text="the operator's work loop stopped")

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            return web.Response(text="ready")
        return web.Response(status=503, text="not started yet")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, address: str, port: int) -> AsyncIterator[int]:
    """Serve `app` while the block runs; yields the bound port (0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, port)
        await site.start()
        bound = port
        for sockname in runner.addresses:
            bound = int(sockname[1])
            break
        yield bound
    finally:
        await runner.cleanup()
