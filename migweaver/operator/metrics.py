"""The operator's Prometheus metrics (docs/design.md, "Observability"), served on `:31993/metrics`.

Two kinds of series:

- *State* (MIG instances, GPU memory): recomputed from the latest MigLayouts by a custom
  collector at every scrape, so the series of a GPU or an instance that disappeared
  disappear with it; there is no per-series bookkeeping to get wrong. What the rows
  contain is decided by the pure `migweaver.core.operator.metric_rows`.
- *Events* (pods placed, reconfigurations, durations): ordinary prometheus_client
  counters, gauges and histograms.

`nodeGPUMigInstance` and `hami_node_gpu_mig_instance_info` keep HAMi's names, label names
and constant label `zone="vGPU"`, so dashboards and alerts written for HAMi's scheduler
monitor keep working; docs/metrics.md lists every metric and the differences from HAMi.

Every instance has its own `CollectorRegistry` unless given one, so tests and several
operators in one process never collide.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from migweaver.core.operator.health_rows import (
    LAYOUT_PHASES,
    LayoutRow,
    ShareRow,
    WaitingRow,
    layout_rows,
    share_rows,
    waiting_rows,
)
from migweaver.core.operator.metric_rows import (
    InstanceRow,
    InvalidLayout,
    LayoutInput,
    MetricRows,
    metric_rows,
)
from migweaver.core.operator.state import ClusterState
from migweaver.k8s.serving import metrics_app, serving

__all__ = [
    "DEFAULT_PORT",
    "PLAN_DURATION_BUCKETS",
    "POD_WAIT_BUCKETS",
    "RECONFIGURATION_RESULTS",
    "ZONE",
    "OperatorMetrics",
]

DEFAULT_PORT: Final = 31993
"""HAMi's scheduler monitor port, kept so existing scrape configurations find the operator."""
ZONE: Final = "vGPU"
"""HAMi adds `zone="vGPU"` to every scheduler metric; the two HAMi-named metrics keep it."""

RECONFIGURATION_RESULTS: Final = ("applied", "failed", "conflict")
"""Results `reconfiguration()` counts by name; anything else is counted as `other`."""
_OTHER: Final = "other"

PLAN_DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
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
)
"""One planning pass: from a millisecond (a few GPUs) to tens of seconds (a large fleet)."""

POD_WAIT_BUCKETS: Final = (
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1200.0,
    1800.0,
)
"""Pod creation to ungating: batching window plus MIG reconfiguration, up to 30 minutes."""

_MIG_INSTANCE_LABELS: Final = ("deviceidx", "deviceuuid", "migname", "nodeid", "zone")
_MIG_INFO_LABELS: Final = (
    "node",
    "device_uuid",
    "device_index",
    "mig_uuid",
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "placement_start",
    "placement_size",
    "zone",
)
_MEMORY_LABELS: Final = ("node", "mode", "state")


def _text(value: int | None) -> str:
    """A label value for an optional number: the number, or "" (Prometheus: no label)."""
    return "" if value is None else str(value)


def _legacy_labels(row: InstanceRow) -> list[str]:
    return [str(row.gpu_index), row.gpu_uuid, row.mig_name, row.node, ZONE]


def _info_labels(row: InstanceRow) -> list[str]:
    return [
        row.node,
        row.gpu_uuid,
        str(row.gpu_index),
        row.mig_uuid or "",
        row.profile,
        _text(row.gpu_instance_id),
        _text(row.compute_instance_id),
        str(row.placement.start),
        str(row.placement.size),
        ZONE,
    ]


class _StateCollector(Collector):
    """Yields the MIG instance and GPU memory series from the latest rows at every scrape.

    The rows are replaced whole (one attribute assignment), so a scrape running in a
    worker thread sees either the old or the new set, never a mixture.
    """

    def __init__(self) -> None:
        self.rows = MetricRows()
        self.allocated: tuple[tuple[str, str, int], ...] = ()
        self.health = _Health()

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry detect collisions without computing any rows.
        return [*_families(MetricRows(), ()), *_health_families(_Health())]

    def collect(self) -> Iterable[Metric]:
        return [*_families(self.rows, self.allocated), *_health_families(self.health)]


@dataclass(frozen=True, slots=True)
class _Health:
    waiting: tuple[WaitingRow, ...] = ()
    layouts: tuple[LayoutRow, ...] = ()
    shares: tuple[ShareRow, ...] = ()


_HAMI_DEVICE_LABELS: Final = ("deviceidx", "deviceuuid", "nodeid", "zone")
_MIB: Final = 1024 * 1024


def _health_families(health: _Health) -> list[Metric]:
    waiting = GaugeMetricFamily(
        "migweaver_waiting_pods",
        "GPU pods waiting behind the placement gate, by reason code.",
        labels=("reason",),
    )
    longest = GaugeMetricFamily(
        "migweaver_waiting_pod_longest_seconds",
        "The longest wait (from creation) among the GPU pods waiting for this reason.",
        labels=("reason",),
    )
    for row in health.waiting:
        waiting.add_metric([row.reason], float(row.pods))
        longest.add_metric([row.reason], max(0.0, row.longest_s))
    phase = GaugeMetricFamily(
        "migweaver_miglayout_phase",
        "The phase of each MigLayout (1 for its current phase; Unknown before a status).",
        labels=("node", "gpu", "layout", "phase"),
    )
    converged = GaugeMetricFamily(
        "migweaver_miglayout_converged",
        "1 when the agent reports the layout Ready for its current spec, else 0.",
        labels=("node", "gpu", "layout"),
    )
    for layout in health.layouts:
        where = [layout.node, str(layout.gpu), layout.layout]
        for name in LAYOUT_PHASES:
            phase.add_metric([*where, name], 1.0 if name == layout.phase else 0.0)
        converged.add_metric(where, 1.0 if layout.converged else 0.0)
    shared = GaugeMetricFamily(
        "GPUDeviceSharedNum",
        "Containers sharing a hami-core GPU (HAMi's scheduler-monitor metric).",
        labels=_HAMI_DEVICE_LABELS,
    )
    allocated = GaugeMetricFamily(
        "GPUDeviceMemoryAllocated",
        "Device memory given to containers on a hami-core GPU, in bytes (HAMi's name).",
        labels=_HAMI_DEVICE_LABELS,
    )
    limit = GaugeMetricFamily(
        "GPUDeviceMemoryLimit",
        "Device memory of a hami-core GPU, in bytes (HAMi's name).",
        labels=_HAMI_DEVICE_LABELS,
    )
    for share in health.shares:
        labels = [str(share.gpu_index), share.gpu_uuid, share.node, ZONE]
        shared.add_metric(labels, float(share.containers))
        allocated.add_metric(labels, float(share.memory_mib * _MIB))
        if share.total_mib is not None:
            limit.add_metric(labels, float(share.total_mib * _MIB))
    return [waiting, longest, phase, converged, shared, allocated, limit]


def _families(rows: MetricRows, allocated: tuple[tuple[str, str, int], ...]) -> list[Metric]:
    legacy = GaugeMetricFamily(
        "nodeGPUMigInstance",
        "MIG instance on a GPU: 1 in use, 0 free; migname is <profile>-<n> "
        "(HAMi's scheduler-monitor metric).",
        labels=_MIG_INSTANCE_LABELS,
    )
    info = GaugeMetricFamily(
        "hami_node_gpu_mig_instance_info",
        "MIG instance in use, with its identity and placement (always 1; HAMi's label names).",
        labels=_MIG_INFO_LABELS,
    )
    for row in rows.instances:
        legacy.add_metric(_legacy_labels(row), 1.0 if row.in_use else 0.0)
        if row.in_use:
            info.add_metric(_info_labels(row), 1.0)
    memory = GaugeMetricFamily(
        "migweaver_gpu_memory_mib",
        "GPU memory in MiB by node and mode (mig, hami-core): total of the GPUs, and "
        "allocated to pods.",
        labels=_MEMORY_LABELS,
    )
    for total in rows.memory_totals:
        memory.add_metric([total.node, total.mode, "total"], float(total.memory_mib))
    for node, mode, mib in allocated:
        memory.add_metric([node, mode, "allocated"], float(mib))
    return [legacy, info, memory]


def _duration(seconds: float) -> float | None:
    """A duration to observe: negative (clock skew) counts as 0, NaN and infinity not at all."""
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class OperatorMetrics:
    """Every metric the operator exports, and the HTTP endpoint that serves them.

    Methods never raise on odd values: a metric must not take the operator down.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._pending = Gauge(
            "migweaver_pending_pods",
            "GPU pods waiting for a placement (gated by migweaver).",
            registry=self.registry,
        )
        self._without_node = Gauge(
            "migweaver_miglayouts_without_node",
            "MigLayouts whose Node object does not exist: nothing is planned on them, and the "
            "garbage collector removes them with their owner Node.",
            registry=self.registry,
        )
        self._plan = Histogram(
            "migweaver_plan_duration_seconds",
            "Time one planning pass took.",
            buckets=PLAN_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._placed = Counter(
            "migweaver_pods_placed",
            "Pods given their GPU devices and released to the scheduler.",
            registry=self.registry,
        )
        self._reconfigurations = Counter(
            "migweaver_reconfigurations",
            "MigLayout spec changes written by the operator, by result "
            "(applied, failed, conflict, other).",
            labelnames=("result",),
            registry=self.registry,
        )
        for result in (*RECONFIGURATION_RESULTS, _OTHER):
            # Every result exists from the start, so rate() and alerts see 0, not nothing.
            self._reconfigurations.labels(result=result)
        self._pod_wait = Histogram(
            "migweaver_pod_wait_seconds",
            "Time from a pod's creation to the removal of its scheduling gate.",
            buckets=POD_WAIT_BUCKETS,
            registry=self.registry,
        )
        self._reload_failures = Counter(
            "migweaver_config_reload_failures",
            "Geometry configuration reloads refused because the new configuration was "
            "invalid (the last valid one stays in force).",
            registry=self.registry,
        )
        self._leader = Gauge(
            "migweaver_operator_leader",
            "1 while this operator replica is the active one (leads), else 0.",
            registry=self.registry,
        )
        self._port: int | None = None

    @property
    def port(self) -> int | None:
        """The port `/metrics` is bound to while `serve` runs (the one picked for port 0);
        None otherwise."""
        return self._port

    # ------------------------------------------------------------------------- events

    def set_pending(self, count: int) -> None:
        """The number of GPU pods waiting for a placement now."""
        self._pending.set(max(0, count))

    def set_without_node(self, count: int) -> None:
        """The number of MigLayouts whose Node object does not exist now."""
        self._without_node.set(max(0, count))

    def observe_plan(self, seconds: float) -> None:
        """One planning pass took this long."""
        value = _duration(seconds)
        if value is not None:
            self._plan.observe(value)

    def pods_placed(self, count: int = 1) -> None:
        """`count` more pods were placed and released (0 or less: nothing happens)."""
        if count > 0:
            self._placed.inc(count)

    def reconfiguration(self, result: str) -> None:
        """One MigLayout spec write ended with `result` (applied, failed or conflict)."""
        label = result if result in RECONFIGURATION_RESULTS else _OTHER
        self._reconfigurations.labels(result=label).inc()

    def observe_pod_wait(self, seconds: float) -> None:
        """A pod was ungated this long after its creation."""
        value = _duration(seconds)
        if value is not None:
            self._pod_wait.observe(value)

    def set_leader(self, leading: bool) -> None:
        """Whether this replica is the active one now."""
        self._leader.set(1 if leading else 0)

    def config_reload_failed(self) -> None:
        """A geometry configuration reload was refused."""
        self._reload_failures.inc()

    # -------------------------------------------------------------------------- state

    def update_layouts(self, layouts: Iterable[LayoutInput]) -> tuple[InvalidLayout, ...]:
        """Replace the MIG instance series and the `total` GPU memory series.

        `layouts` are every MigLayout, as the API returns them or already parsed (the
        operator passes the ones its round parsed). Returns the layouts left
        out (unparseable, or a second layout for the same GPU) so the caller can log them.
        """
        rows = metric_rows(layouts)
        self._state.rows = rows
        return rows.invalid

    def update_health(self, state: ClusterState, now: float) -> None:
        """Replace the waiting-pod, MigLayout-phase and hami-core share series from one
        round's state (`now`: wall-clock seconds)."""
        self._state.health = _Health(
            waiting_rows(state, now), layout_rows(state), share_rows(state)
        )

    def update_allocated(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Replace the `allocated` GPU memory series: (node, mode, MiB) rows, summed per
        (node, mode)."""
        sums: dict[tuple[str, str], int] = {}
        for node, mode, mib in rows:
            sums[(node, mode)] = sums.get((node, mode), 0) + mib
        self._state.allocated = tuple(
            (node, mode, mib) for (node, mode), mib in sorted(sums.items())
        )

    # ------------------------------------------------------------------------- output

    def render(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)

    def serve(self, address: str, port: int) -> contextlib.AbstractAsyncContextManager[int]:
        """Serve `/metrics` on address:port while the block runs; yields the bound port.

        Port 0 picks a free port. The server stops when the block ends.
        """
        return self._serve(address, port)

    @contextlib.asynccontextmanager
    async def _serve(self, address: str, port: int) -> AsyncIterator[int]:
        async with serving(metrics_app(self.registry), address, port) as bound:
            self._port = bound
            try:
                yield bound
            finally:
                self._port = None
