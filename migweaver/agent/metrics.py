"""The node agent's Prometheus metrics, on its own port (`:9394/metrics`, as HAMi's device
plugin monitor), listed in docs/metrics.md.

State (instances by profile and state, catalog mismatches, device plugin registration,
NVML errors and Allocate outcomes, which their owners count) is read at every scrape by a
custom collector; what the instance and mismatch rows contain is decided by the pure
`migweaver.core.agent.metric_rows`. Reconcile passes are counted as they end
(`observe_pass`).

Every label value comes from NVML or the agent's own vocabulary (node name, GPU index,
profile names, phases, NVML call names and codes); nothing a pod controls.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from migweaver.agent.backends.protocol import BackendError, GpuBackend
from migweaver.agent.reconciler import GpuObservation, ReconcileResult
from migweaver.core.agent.metric_rows import instance_states, mode_switches
from migweaver.k8s.serving import metrics_app, serving

__all__ = [
    "DEFAULT_PORT",
    "PASS_DURATION_BUCKETS",
    "REGISTRATION_STATES",
    "AgentMetrics",
    "CountingBackend",
]

DEFAULT_PORT: Final = 9394
"""The port of HAMi's device plugin monitor, so a scrape configuration for it finds us."""

REGISTRATION_STATES: Final = (
    "not_serving",
    "waiting_for_kubelet",
    "registration_failed",
    "registered",
    "disabled",
)
"""The device plugin's registration states; exactly one has the value 1."""

PASS_DURATION_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""One reconcile pass: milliseconds to observe, up to a minute or two to repartition."""


class CountingBackend:
    """A `GpuBackend` that counts the NVML errors of the backend it wraps, by call and code."""

    def __init__(self, backend: GpuBackend) -> None:
        self.backend = backend
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.backend, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except BackendError as exc:
                with self._lock:
                    self.errors[(exc.call, exc.error.name)] += 1
                raise

        return counted

    def counts(self) -> dict[tuple[str, str], int]:
        """(NVML call, error code) -> failures so far; a copy, safe against the GPU thread."""
        with self._lock:
            return dict(self.errors)


K = TypeVar("K")
V = TypeVar("V")


def _copied(read: Callable[[], Mapping[K, V]]) -> dict[K, V]:
    """A copy of a mapping the event loop writes while a scrape (a worker thread) reads it:
    a copy that races a new key is simply taken again."""
    for _ in range(10):
        try:
            return dict(read())
        except RuntimeError:
            continue
    return {}


class PluginView(Protocol):
    """What the collector reads of the device plugin (`DevicePluginServer` fits)."""

    @property
    def state(self) -> str: ...
    @property
    def allocate_results(self) -> Mapping[str, int]: ...


class _StateCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.state_families()


class AgentMetrics:
    """Every metric of one node's agent, and the endpoint that serves them.

    `observations` returns the latest observation of each GPU (the agent's
    `state.observations`); `backend` is the `CountingBackend` whose errors are exported;
    `plugin` the device plugin server (None: the plugin is off). Methods never raise on odd
    values: a metric must not take the agent down.
    """

    def __init__(
        self,
        node: str,
        *,
        observations: Callable[[], Mapping[int, GpuObservation]] = dict,
        backend: CountingBackend | None = None,
        plugin: PluginView | None = None,
        registry: CollectorRegistry | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.node = node
        self.registry = registry if registry is not None else CollectorRegistry()
        self._observations = observations
        self._backend = backend
        self.plugin = plugin
        self._wall = wall or time.time
        self.registry.register(_StateCollector(self))
        self._passes = Counter(
            "migweaver_agent_reconcile_passes",
            "Reconcile passes over one GPU, by the phase they ended in.",
            labelnames=("node", "gpu", "phase"),
            registry=self.registry,
        )
        self._pass_duration = Histogram(
            "migweaver_agent_reconcile_duration_seconds",
            "Time one reconcile pass over one GPU took (NVML reads and changes).",
            labelnames=("node",),
            buckets=PASS_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._change_duration = Histogram(
            "migweaver_agent_layout_change_duration_seconds",
            "Time a reconcile pass that changed the GPU (created, destroyed, switched MIG "
            "mode) took.",
            labelnames=("node",),
            buckets=PASS_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._mode_switches = Counter(
            "migweaver_agent_mig_mode_switches",
            "MIG mode switches the agent requested, by the mode asked for.",
            labelnames=("node", "gpu", "mig_mode"),
            registry=self.registry,
        )
        self._last_report = Gauge(
            "migweaver_agent_last_report_timestamp_seconds",
            "When the agent last reconciled and reported a layout (Unix time; 0: never).",
            labelnames=("node",),
            registry=self.registry,
        )
        # Exist from the start at 0, so `rate()` and the alerts see 0, not nothing.
        self._last_report.labels(node=node).set(0)
        self._pass_duration.labels(node=node)
        self._change_duration.labels(node=node)
        self._port: int | None = None

    def bind(self, backend: CountingBackend, agent: Any) -> None:
        """Export `backend`'s NVML errors and `agent.state.observations` from now on."""
        self._backend = backend
        self._observations = lambda: agent.state.observations

    def _latest(self) -> dict[int, GpuObservation]:
        return _copied(self._observations)

    @property
    def port(self) -> int | None:
        """The bound port of `/metrics` while `serve` runs; None otherwise."""
        return self._port

    # ------------------------------------------------------------------ events

    def observe_pass(self, result: ReconcileResult, seconds: float) -> None:
        """One reconcile pass over GPU `result.gpu` ended (a pass skipped during a backoff
        is not counted: nothing was done)."""
        if result.skipped:
            return
        gpu = str(result.gpu)
        self._passes.labels(node=self.node, gpu=gpu, phase=result.phase).inc()
        if math.isfinite(seconds) and seconds >= 0:
            self._pass_duration.labels(node=self.node).observe(seconds)
            if result.steps:
                self._change_duration.labels(node=self.node).observe(seconds)
        for enabled in mode_switches(result.steps):
            mode = "enabled" if enabled else "disabled"
            self._mode_switches.labels(node=self.node, gpu=gpu, mig_mode=mode).inc()

    def reported(self) -> None:
        """The agent has just reconciled and reported its layouts."""
        self._last_report.labels(node=self.node).set(self._wall())

    # ------------------------------------------------------------------ state

    def state_families(self) -> list[Metric]:
        """The series read at scrape time (see the module docstring)."""
        node = self.node
        instances = GaugeMetricFamily(
            "migweaver_agent_mig_instances",
            "MIG instances on each GPU by profile and state: in_use (a process runs on it), "
            "reserved (a pod holds it, no process yet), free.",
            labels=("node", "gpu", "gpu_uuid", "profile", "state"),
        )
        mismatches = GaugeMetricFamily(
            "migweaver_agent_catalog_mismatches",
            "Differences between NVML's MIG profiles and migweaver's catalog of the GPU "
            "model, per GPU (the MigLayout's CatalogMismatch condition lists them).",
            labels=("node", "gpu", "model"),
        )
        for index, observation in sorted(self._latest().items()):
            device = observation.device
            for row in instance_states(observation.instances):
                instances.add_metric(
                    [node, str(index), device.uuid, row.profile, row.state], float(row.count)
                )
            # The differences the MigLayout's CatalogMismatch condition lists, counted.
            found = len(observation.catalog_mismatches)
            mismatches.add_metric([node, str(index), device.name], float(found))
        errors = CounterMetricFamily(
            "migweaver_agent_nvml_errors",
            "NVML calls that failed, by NVML function and error code.",
            labels=("node", "call", "error"),
        )
        if self._backend is not None:
            for (call, code), count in sorted(self._backend.counts().items()):
                errors.add_metric([node, call, code], float(count))
        registration = GaugeMetricFamily(
            "migweaver_agent_device_plugin_state",
            "Where the kubelet device plugin's registration stands (1 for the current state).",
            labels=("node", "state"),
        )
        current = "disabled" if self.plugin is None else self.plugin.state
        for state in REGISTRATION_STATES:
            registration.add_metric([node, state], 1.0 if state == current else 0.0)
        allocations = CounterMetricFamily(
            "migweaver_agent_allocate",
            "Allocate calls of the kubelet by outcome: granted, or the gRPC status returned.",
            labels=("node", "result"),
        )
        plugin = self.plugin
        results = _copied(lambda: plugin.allocate_results) if plugin is not None else {}
        for result in sorted({"granted", *results}):
            allocations.add_metric([node, result], float(results.get(result, 0)))
        return [instances, mismatches, errors, registration, allocations]

    # ------------------------------------------------------------------ output

    def render(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)

    def serve(self, address: str, port: int) -> contextlib.AbstractAsyncContextManager[int]:
        """Serve `/metrics` on address:port while the block runs; yields the bound port."""
        return self._serve(address, port)

    @contextlib.asynccontextmanager
    async def _serve(self, address: str, port: int) -> AsyncIterator[int]:
        async with serving(metrics_app(self.registry), address, port) as bound:
            self._port = bound
            try:
                yield bound
            finally:
                self._port = None
