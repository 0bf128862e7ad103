"""The operator's probe endpoints over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp

from migweaver.operator.probes import probe_app, serving


async def test_healthz_and_readyz() -> None:
    alive = [True]
    ready = asyncio.Event()
    app = probe_app(lambda: alive[0], ready)
    async with serving(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{port}"

        async def status(path: str) -> int:
            async with session.get(base + path) as response:
                return response.status

        assert await status("/healthz") == 200
        assert await status("/readyz") == 503
        ready.set()
        assert await status("/readyz") == 200
        alive[0] = False
        assert await status("/healthz") == 503
