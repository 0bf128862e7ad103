"""`migweaver agent`: wiring of the node agent (backend, API client, probes, signals)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.nvml import NvmlBackend
from migweaver.agent.backends.protocol import BackendError, GpuBackend
from migweaver.agent.node_agent import NodeAgent
from migweaver.core.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL
from migweaver.k8s.client import ClusterObjects, CoreObjects, connect
from migweaver.k8s.events import EventRecorder

log = logging.getLogger("migweaver.agent")


@dataclass(frozen=True, slots=True)
class AgentOptions:
    node_name: str
    backend: str = "nvml"
    fake_gpus: str = ""
    fake_mig_enabled: bool = False
    kubeconfig: str | None = None
    resync_s: int = 30
    # 0.0.0.0: the kubelet probes the pod IP.
    probe_address: str = "0.0.0.0"
    probe_port: int = 8081


def make_backend(options: AgentOptions) -> GpuBackend:
    """The GPU backend the options name; ValueError / BackendError say what is wrong."""
    if options.backend == "fake":
        if not options.fake_gpus:
            raise ValueError("--backend fake needs --fake-gpus, e.g. A100-SXM4-80GB:2")
        # The node name seeds the GPU UUIDs, so fake GPUs of different nodes differ.
        return FakeBackend.from_spec(
            options.fake_gpus, seed=options.node_name, mig_enabled=options.fake_mig_enabled
        )
    if options.backend == "nvml":
        return NvmlBackend().open()
    raise ValueError(f"unknown backend {options.backend!r}: expected nvml or fake")


def probe_app(agent: NodeAgent) -> web.Application:
    """`/healthz` answers while the process runs; `/readyz` once the first sync is done."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if agent.ready.is_set():
            return web.Response(text="ready")
        return web.Response(status=503, text="not synced yet")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, address: str, port: int) -> AsyncIterator[int]:
    """Serve `app` for the duration of the block; yields the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    await site.start()
    try:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        yield int(sockets[0].getsockname()[1]) if sockets else port
    finally:
        await runner.cleanup()


async def run_agent(options: AgentOptions, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); exit code 0 on a clean stop, 1 on bad setup."""
    try:
        backend = make_backend(options)
    except (ValueError, BackendError) as exc:
        log.error("cannot start the agent: %s", exc)
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    api = await connect(options.kubeconfig)
    async with api:
        core = CoreObjects(api)
        agent = NodeAgent(
            options.node_name,
            backend,
            ClusterObjects(api, MIGLAYOUT_PLURAL),
            ClusterObjects(api, NODECONFIG_PLURAL),
            core,
            EventRecorder(core, "migweaver-agent"),
            resync_s=options.resync_s,
        )
        async with serving(probe_app(agent), options.probe_address, options.probe_port) as port:
            log.info(
                "agent started on node %s with %s backend; probes on :%d",
                options.node_name,
                options.backend,
                port,
            )
            await agent.run(stop)
    log.info("agent stopped")
    return 0
