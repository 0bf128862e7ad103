"""The small HTTP endpoints the cluster calls on us: probes and metrics.

The kubelet probes `/healthz` and `/readyz`, Prometheus scrapes `/metrics`; the agent and
the operator serve them with the same few lines of aiohttp, kept here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def probe_app(
    alive: Callable[[], bool], ready: Callable[[], bool], *, dead: str, unready: str
) -> web.Application:
    """`/healthz` answers 200 while `alive()`, `/readyz` while `ready()`; else 503 with
    the given text."""

    async def healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok")
        return web.Response(status=503, text=dead)

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready")
        return web.Response(status=503, text=unready)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """`/metrics` of `registry`, in the format the scraper asks for (Prometheus text or
    OpenMetrics), encoded off the event loop: a large fleet has many thousand series."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
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
