"""`migweaver agent`: wiring of the node agent (backend, API client, probes, signals).

Besides the `NodeAgent` it runs the pod watch (in-use accounting), the kubelet device
plugin and the node's extended resources (`run_node` starts them in a safe order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.nvml import NvmlBackend
from migweaver.agent.backends.protocol import BackendError, GpuBackend
from migweaver.agent.cdi import CdiSpecWriter, cdi_gpus
from migweaver.agent.deviceplugin.allocator import Allocator
from migweaver.agent.deviceplugin.devices import DEFAULT_SPLIT_COUNT
from migweaver.agent.deviceplugin.gpus import AgentGpus
from migweaver.agent.deviceplugin.hami_core import HamiCoreHost
from migweaver.agent.deviceplugin.server import DEFAULT_PLUGIN_DIR, DevicePluginServer
from migweaver.agent.metrics import DEFAULT_PORT as METRICS_PORT
from migweaver.agent.metrics import AgentMetrics, CountingBackend
from migweaver.agent.node_agent import NodeAgent
from migweaver.agent.node_capacity import NodeCapacity
from migweaver.agent.pods import PodWatcher
from migweaver.agent.waiting import until_stopped
from migweaver.core.agent.binding import DeviceListStrategy
from migweaver.core.agent.node_resources import node_capacity
from migweaver.core.resources.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL
from migweaver.k8s.client import ApiError, ClusterObjects, CoreObjects, NodePods, connect
from migweaver.k8s.events import EventRecorder
from migweaver.k8s.serving import probe_app as _probe_app
from migweaver.k8s.serving import serving
from migweaver.logs import get_logger
from migweaver.shutdown import stop_on_signals

log = get_logger("migweaver.agent")


@dataclass(frozen=True, slots=True)
class AgentOptions:
    node_name: str
    backend: str = "nvml"
    fake_gpus: str = ""
    fake_mig_enabled: bool = False
    fake_state: str | None = None
    """A file the fake GPUs' state survives a restart in (as real GPUs outlive the agent)."""
    kubeconfig: str | None = None
    resync_s: int = 30
    # 0.0.0.0: the kubelet probes the pod IP.
    probe_address: str = "0.0.0.0"
    probe_port: int = 8081
    metrics_address: str = "0.0.0.0"
    """Address of `/metrics` (127.0.0.1 keeps it on the node)."""
    metrics_port: int = METRICS_PORT
    device_plugin: bool = True
    """Serve the kubelet device plugin for nvidia.com/gpu (off: another plugin does)."""
    plugin_dir: str = DEFAULT_PLUGIN_DIR
    """The kubelet's device-plugins directory (kubelet.sock and our socket live there)."""
    cdi_dir: str | None = None
    """Keep a CDI spec of every served GPU and MIG instance in this directory (the names
    the `cdi` device list strategy passes); None: no spec written by the agent."""
    device_list_strategy: DeviceListStrategy = "cdi"
    """How Allocate passes devices: CDI device names `nvidia.com/gpu=<UUID>` (default),
    NVIDIA's `volume-mounts`, or `envvar` (docs/security.md)."""
    device_split_count: int = DEFAULT_SPLIT_COUNT
    """Device ids per hami-core GPU: HAMi's deviceSplitCount (pods sharing one GPU)."""
    hami_core_dir: str | None = None
    """Host directory of HAMi-core's libvgpu.so (seen at the same path): Allocate mounts
    it into hami-core containers with ld.so.preload. None: limits by environment only."""
    hami_core_lib: str | None = None
    """A libvgpu.so in the agent's image to install into `hami_core_dir` at start."""


def make_backend(options: AgentOptions) -> GpuBackend:
    """The GPU backend the options name; ValueError / BackendError say what is wrong."""
    if options.backend == "fake":
        if not options.fake_gpus:
            raise ValueError("--backend fake needs --fake-gpus, e.g. A100-SXM4-80GB:2")
        # The node name seeds the GPU UUIDs, so fake GPUs of different nodes differ.
        return FakeBackend.from_spec(
            options.fake_gpus,
            seed=options.node_name,
            mig_enabled=options.fake_mig_enabled,
            state_file=options.fake_state,
        )
    if options.backend == "nvml":
        return NvmlBackend().open()
    raise ValueError(f"unknown backend {options.backend!r}: expected nvml or fake")


def hami_core_host(options: AgentOptions) -> HamiCoreHost | None:
    """HAMi-core on this node, installed from the image when `hami_core_lib` is given.

    A failed install or a missing library is logged, not fatal: MIG pods do not need it,
    and `Allocate` refuses hami-core containers while it is missing (never unlimited).
    """
    if options.hami_core_dir is None:
        return None
    host = HamiCoreHost(options.hami_core_dir)
    try:
        if options.hami_core_lib:
            host.install(options.hami_core_lib)
        elif host.library.is_file():
            host.ensure_preload()
    except OSError as exc:
        log.error(
            "cannot install HAMi-core",
            node=options.node_name,
            dir=options.hami_core_dir,
            error=str(exc),
        )
    problem = host.problem()
    if problem:
        log.warning(
            "HAMi-core is missing: hami-core containers are refused until it is there",
            node=options.node_name,
            detail=problem,
        )
    return host


def probe_app(agent: NodeAgent) -> web.Application:
    """`/healthz` answers while the process runs; `/readyz` once the first sync is done."""
    return _probe_app(lambda: True, agent.ready.is_set, dead="", unready="not synced yet")


async def run_node(
    agent: NodeAgent,
    watcher: PodWatcher,
    capacity: NodeCapacity,
    plugin: DevicePluginServer | None,
    stop: asyncio.Event,
    *,
    resync_s: float = 30.0,
) -> None:
    """Run the agent's parts until `stop`, in the order safety needs.

    1. the pod watch, and only after its first list
    2. the `NodeAgent` (it must know which instances pods hold before it reconciles:
       fail closed), and only after its first sync
    3. the device plugin (it lists devices from the agent's observations) and the node's
       extended resources.

    On a clean stop (`stop` set, nothing failed) the extended resources are removed from
    the node: the agent no longer vouches for them. A part that fails ends the others
    and the exception propagates (the DaemonSet restarts the agent).
    """
    capacity_changed = asyncio.Event()

    def on_agent_pass() -> None:
        desired = node_capacity(d.memory_mib for d in agent.managed_devices())
        if desired != capacity.desired:
            capacity_changed.set()

    async def capacity_loop() -> None:
        while not stop.is_set():
            capacity_changed.clear()
            try:
                await capacity.ensure(d.memory_mib for d in agent.managed_devices())
            except ApiError as exc:
                log.warning(
                    "cannot write the node's extended resources", node=agent.node, error=str(exc)
                )
            await until_stopped(capacity_changed.wait(), stop, resync_s)

    async def registered() -> None:
        # A kubelet that restarted without its device checkpoint zeroed extended resources.
        capacity_changed.set()

    agent.listeners.append(on_agent_pass)
    if plugin is not None:
        plugin.set_on_registered(registered)
    async with asyncio.TaskGroup() as group:
        group.create_task(watcher.run(stop))
        if not await until_stopped(watcher.ready.wait(), stop):
            return
        group.create_task(agent.run(stop))
        if not await until_stopped(agent.ready.wait(), stop):
            return
        if plugin is not None:
            group.create_task(plugin.run(stop))
        group.create_task(capacity_loop())
    try:
        await capacity.remove()
    except ApiError as exc:
        log.warning(
            "could not remove the node's extended resources", node=agent.node, error=str(exc)
        )


async def run_agent(
    options: AgentOptions,
    stop: asyncio.Event | None = None,
    *,
    backend: GpuBackend | None = None,
    metrics: AgentMetrics | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); exit code 0 on a clean stop, 1 on bad setup.

    `backend` replaces the one the options name (tests inject faults into a fake one);
    `metrics` receives the agent's metrics (one is made when None).
    """
    if backend is None:
        try:
            backend = make_backend(options)
        except (ValueError, BackendError) as exc:
            log.error("cannot start the agent", node=options.node_name, error=str(exc))
            return 1
    stop = stop or asyncio.Event()
    counting = CountingBackend(backend)
    metrics = metrics or AgentMetrics(options.node_name)
    with stop_on_signals(stop):
        # Metrics first: an agent that cannot reach the API still shows that it reports
        # nothing (its last report stays at 0).
        async with metrics.serve(options.metrics_address, options.metrics_port) as port:
            log.info("agent metrics served", node=options.node_name, port=port)
            return await _run(options, counting, metrics, stop)


async def _run(
    options: AgentOptions, backend: CountingBackend, metrics: AgentMetrics, stop: asyncio.Event
) -> int:
    api = await connect(options.kubeconfig)
    async with api:
        core = CoreObjects(api)
        events = EventRecorder(core, "migweaver-agent")
        pods = NodePods(api, options.node_name)

        def refresh(gpu_uuids: frozenset[str]) -> Awaitable[None]:
            return agent.refresh(gpu_uuids)

        watcher = PodWatcher(options.node_name, pods, on_change=refresh, resync_s=options.resync_s)
        agent = NodeAgent(
            options.node_name,
            cast(GpuBackend, backend),
            ClusterObjects(api, MIGLAYOUT_PLURAL),
            ClusterObjects(api, NODECONFIG_PLURAL),
            core,
            events,
            held_by_pods=lambda: watcher.held,
            resync_s=options.resync_s,
        )
        if options.cdi_dir is not None:
            writer = CdiSpecWriter(
                options.cdi_dir,
                lambda: cdi_gpus(agent.managed_devices(), agent.state.observations),
            )
            agent.listeners.append(writer.refresh)
        metrics.bind(backend, agent)
        agent.pass_observers.append(metrics.observe_pass)
        agent.listeners.append(metrics.reported)
        plugin = None
        if options.device_plugin:
            gpus = AgentGpus(agent, options.device_split_count)
            allocator = Allocator(
                options.node_name,
                pods,
                gpus,
                events,
                strategy=options.device_list_strategy,
                hami_core=hami_core_host(options),
            )
            plugin = DevicePluginServer(
                gpus,
                allocator,
                plugin_dir=options.plugin_dir,
            )
            metrics.plugin = plugin
        capacity = NodeCapacity(options.node_name, core)
        async with serving(probe_app(agent), options.probe_address, options.probe_port) as port:
            log.info(
                "agent started",
                node=options.node_name,
                backend=options.backend,
                probe_port=port,
            )
            await run_node(agent, watcher, capacity, plugin, stop, resync_s=options.resync_s)
    log.info("agent stopped", node=options.node_name)
    return 0
