"""`migweaver operator`: wiring of kopf, the work loop, the watches, the webhook, metrics
and probes.

Pods and MigLayouts are watched by the work loop's own informers (`pods`, `miglayouts`),
on every replica (they only feed the stores); NodeConfigs and Nodes by kopf handlers
registered on an explicit `kopf.OperatorRegistry` (`nodeconfigs`, `nodes`); the ConfigMap
by `configmap`. Kopf logs in with the same credentials as the kubernetes_asyncio client.
A Lease elects the leader (`leader.LeaderElector`): the work loop (`rounds.Operator`)
makes rounds only on the replica that holds it; kopf runs standalone on every replica (its
handlers only notify the work loop; `--standalone` runs without election).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from migweaver.core.planning.plan import PlannerOptions
from migweaver.k8s.client import connect
from migweaver.k8s.cluster import connection_settings
from migweaver.k8s.leases import Leases
from migweaver.logs import get_logger
from migweaver.operator import configmap, nodeconfigs, nodes
from migweaver.operator.access import operator_api
from migweaver.operator.leader import LeaderElector
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.miglayouts import watch_layouts
from migweaver.operator.pods import watch_pods
from migweaver.operator.probes import probe_app, serving
from migweaver.operator.rounds import Operator
from migweaver.operator.settings import OperatorOptions, kopf_settings
from migweaver.operator.triggers import Triggers
from migweaver.shutdown import stop_on_signals

log = get_logger("migweaver.operator")


def own_identity() -> str:
    """This replica's identity in the Lease: the pod's name (`POD_NAME`) or the host, made
    unique per process."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}/{os.getpid()}/{secrets.token_hex(3)}"


def build_registry(
    operator: Operator, triggers: Triggers, *, webhook: bool
) -> kopf.OperatorRegistry:
    """Every handler of the operator, on a registry of its own."""
    registry = kopf.OperatorRegistry()
    nodeconfigs.register(registry, triggers)
    nodes.register(registry, triggers)
    if webhook:
        from migweaver.operator import webhook as admission

        admission.register(registry, defaults=operator.request_defaults)
    return registry


def _register_login(
    registry: kopf.OperatorRegistry, api: Any, loop: asyncio.AbstractEventLoop
) -> None:
    @kopf.on.login(registry=registry, id="migweaver-login")
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # The client (and its token refresh) lives on the work loop: ask it there.
        future = asyncio.run_coroutine_threadsafe(connection_settings(api), loop)
        found = await asyncio.wrap_future(future)
        return kopf.ConnectionInfo(
            server=found.server,
            ca_path=found.ca_path,
            insecure=found.insecure,
            token=found.token,
            scheme="Bearer" if found.token else None,
            certificate_path=found.certificate_path,
            private_key_path=found.private_key_path,
        )


class ListeningWebhook:
    """kopf's webhook server, resolving `listening` once it serves (kopf starts it in a
    task of its own): until then the replica is not ready, so the Service sends it no
    admission request that would be refused or, with `failurePolicy: Ignore`, let a GPU
    pod through ungated."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.listening: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def __aenter__(self) -> ListeningWebhook:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.inner(fn):
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self.listening.set_result(None)
            yield client_config


class KopfThread:
    """Kopf in a thread with its own event loop.

    When kopf stops it cancels every task created on its loop since it started, and in
    the main thread it takes SIGINT/SIGTERM for itself: neither may touch the work loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.stop = threading.Event()
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.error: BaseException | None = None
        self._done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="migweaver-kopf", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(kopf.operator(**self._kwargs, stop_flag=self.stop, ready_flag=self.ready))
        except BaseException as exc:  # reported to the work loop, not lost in the thread
            self.error = exc
        finally:
            self._loop.call_soon_threadsafe(self._done.set)

    def start(self) -> None:
        self._thread.start()

    async def wait(self) -> None:
        """Until kopf has stopped (by itself or after `stop`)."""
        await self._done.wait()

    async def close(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        await asyncio.to_thread(self._thread.join, timeout_s)


async def run_operator(
    options: OperatorOptions,
    stop: asyncio.Event | None = None,
    *,
    metrics: OperatorMetrics | None = None,
    planner_options: PlannerOptions | None = None,
    ready: asyncio.Event | None = None,
    wall: Callable[[], float] = time.time,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); 0 on a clean stop, 1 on bad setup.

    `ready` is set with `/readyz`: kopf started and, with the webhook, its server listens.
    `wall` is the clock of timestamps and waits (tests move it forward to age pods).
    """
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        try:
            return await _run(
                options,
                stop,
                metrics or OperatorMetrics(),
                planner_options,
                ready or asyncio.Event(),
                wall,
            )
        except (ValueError, FileNotFoundError) as exc:
            log.error("cannot start the operator", error=str(exc))
            return 1


@contextlib.asynccontextmanager
async def _servers(
    options: OperatorOptions, metrics: OperatorMetrics, alive: Any, ready: asyncio.Event
) -> AsyncIterator[None]:
    async with (
        metrics.serve(options.metrics_address, options.metrics_port) as metrics_port,
        serving(probe_app(alive, ready), options.probe_address, options.probe_port) as probes,
    ):
        log.info("operator serving", metrics_port=metrics_port, probe_port=probes)
        yield


async def _run(
    options: OperatorOptions,
    stop: asyncio.Event,
    metrics: OperatorMetrics,
    planner_options: PlannerOptions | None,
    ready: asyncio.Event,
    wall: Callable[[], float],
) -> int:
    settings = kopf_settings(options)
    identity = own_identity()
    api = await connect(options.kubeconfig)
    async with api:
        elector = LeaderElector(
            Leases(api, options.namespace),
            options.lease,
            identity,
            duration_s=options.lease_duration_s,
            renew_s=options.lease_renew_s,
        )

        async def leading() -> bool:
            return elector.leading()

        operator = Operator(
            operator_api(api, options.namespace),
            options,
            metrics,
            planner_options=planner_options,
            leading=None if options.standalone else leading,
            wall=wall,
        )
        loop = asyncio.get_running_loop()
        registry = build_registry(operator, Triggers(operator, loop), webhook=options.webhook)
        _register_login(registry, api, loop)
        webhook_server = None
        if options.webhook:
            from migweaver.operator import webhook as admission

            admission.configure_server(
                settings,
                address=options.webhook_address,
                port=options.webhook_port,
                tls_dir=options.webhook_tls_dir,
                self_signed=options.webhook_self_signed,
            )
            webhook_server = ListeningWebhook(settings.admission.server)
            settings.admission.server = webhook_server
        kopf_thread = KopfThread(
            registry=registry,
            settings=settings,
            identity=identity,
            standalone=True,
            clusterwide=True,
        )
        tasks: list[asyncio.Task[None]] = []

        def alive() -> bool:
            return kopf_thread.error is None and all(not t.done() for t in tasks)

        async with _servers(options, metrics, alive, ready):
            kopf_thread.start()
            tasks.append(asyncio.create_task(operator.run(stop), name="migweaver-rounds"))
            tasks.append(
                asyncio.create_task(configmap.watch_config(operator, stop), name="migweaver-config")
            )
            tasks.append(asyncio.create_task(watch_pods(operator), name="migweaver-pods"))
            tasks.append(asyncio.create_task(watch_layouts(operator), name="migweaver-layouts"))
            tasks.append(asyncio.create_task(kopf_thread.wait(), name="migweaver-kopf"))
            # The Lease is released only after the last round ended (see below).
            election_stop = asyncio.Event()
            election = asyncio.create_task(
                elector.run(election_stop) if not options.standalone else _until(election_stop),
                name="migweaver-leader-election",
            )
            tasks.append(election)
            tasks.append(
                asyncio.create_task(_when_ready(kopf_thread, webhook_server, ready), name="ready")
            )
            log.info(
                "operator started",
                identity=identity,
                lease=None if options.standalone else f"{options.namespace}/{elector.name}",
            )
            try:
                await _until_stop_or_failure(stop, tasks[:6])
            finally:
                stop.set()
                for task in tasks[1:]:
                    if task is not election:
                        task.cancel()
                await asyncio.gather(tasks[0], return_exceptions=True)
                election_stop.set()
                await kopf_thread.close()
                results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [
            r
            for r in (*results, kopf_thread.error)
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]
        for failure in failures:
            log.error("the operator failed", error=repr(failure))
        if failures:
            raise failures[0]
    log.info("operator stopped")
    return 0


async def _when_ready(
    kopf_thread: KopfThread, webhook: ListeningWebhook | None, ready: asyncio.Event
) -> None:
    # Shielded: cancelling this wait must not cancel the futures kopf's thread resolves.
    await asyncio.shield(asyncio.wrap_future(kopf_thread.ready))
    if webhook is not None:
        await asyncio.shield(asyncio.wrap_future(webhook.listening))
    ready.set()


async def _until(event: asyncio.Event) -> None:
    await event.wait()


async def _until_stop_or_failure(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
