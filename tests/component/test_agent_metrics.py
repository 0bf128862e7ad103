"""The agent's /metrics: instances by state, NVML errors by call, passes, device plugin state."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.protocol import BackendError, NvmlError
from migweaver.agent.metrics import AgentMetrics, CountingBackend
from migweaver.agent.reconciler import Reconciler
from migweaver.core.mig.catalog import GpuModel, get_model
from migweaver.core.mig.profiles import Placement, ProfileTable
from migweaver.core.resources.models import LayoutInstance, MigLayoutSpec, PlacementModel

A100 = "A100-SXM4-80GB"


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def spec(backend: FakeBackend, *starts: int) -> MigLayoutSpec:
    return MigLayoutSpec(
        node_name="n1",
        gpu_index=0,
        gpu_uuid=backend.uuid(0),
        instances=[
            LayoutInstance(profile="1g.10gb", placement=PlacementModel(start=s, size=1))
            for s in starts
        ],
    )


def test_instances_by_profile_and_state() -> None:
    backend = FakeBackend([A100], mig_enabled=True, seed="n1")
    reconciler = Reconciler(backend)
    result = reconciler.reconcile(0, spec(backend, 0, 1, 2))
    assert result.ready
    uuids = backend.mig_uuids(0)
    backend.start_process(0, uuids[Placement(2, 1)])
    held = {uuids[Placement(1, 1)]: "ns/waiting"}
    observation = reconciler.observe(0, held)
    metrics = AgentMetrics("n1", observations=lambda: {0: observation})
    where = {"node": "n1", "gpu": "0", "gpu_uuid": backend.uuid(0), "profile": "1g.10gb"}
    name = "migweaver_agent_mig_instances"
    assert value(metrics, name, **where, state="free") == 1
    assert value(metrics, name, **where, state="reserved") == 1
    assert value(metrics, name, **where, state="in_use") == 1
    mismatches = "migweaver_agent_catalog_mismatches"
    model = observation.device.name
    assert value(metrics, mismatches, node="n1", gpu="0", model=model) == 0


def drifted_a100() -> GpuModel:
    """An A100 whose driver reports its smallest profile 512 MiB smaller than the catalog."""
    real = get_model(A100)
    assert real is not None
    first, *rest = real.table.profiles
    smaller = replace(first, memory_mib=first.memory_mib - 512)
    return replace(real, table=ProfileTable(real.table.memory_slots, (smaller, *rest)))


def test_a_driver_that_differs_from_the_catalog_is_counted() -> None:
    backend = FakeBackend([drifted_a100()], mig_enabled=True, seed="n1")
    observation = Reconciler(backend).observe(0)
    metrics = AgentMetrics("n1", observations=lambda: {0: observation})
    model = observation.device.name
    assert (
        value(metrics, "migweaver_agent_catalog_mismatches", node="n1", gpu="0", model=model) == 1
    )


def test_nvml_errors_are_counted_by_call_and_code() -> None:
    fake = FakeBackend([A100], mig_enabled=True, seed="n1")
    counting = CountingBackend(fake)
    fake.fail_call("list_gpu_instances", NvmlError.GPU_IS_LOST, times=2)
    for _ in range(2):
        with pytest.raises(BackendError):
            counting.list_gpu_instances(0)
    counting.list_gpu_instances(0)  # succeeds: not counted
    metrics = AgentMetrics("n1", backend=counting)
    (key,) = [k for k in samples(metrics) if k[0] == "migweaver_agent_nvml_errors_total"]
    labels = dict(key[1])
    assert labels["error"] == "GPU_IS_LOST"
    assert labels["call"].startswith("nvml")
    assert samples(metrics)[key] == 2


def test_passes_durations_and_mode_switches() -> None:
    backend = FakeBackend([A100], mig_enabled=False, seed="n1")
    reconciler = Reconciler(backend)
    metrics = AgentMetrics("n1", wall=lambda: 1234.0)
    assert value(metrics, "migweaver_agent_last_report_timestamp_seconds", node="n1") == 0
    result = reconciler.reconcile(0, spec(backend, 0))
    metrics.observe_pass(result, 0.25)
    metrics.reported()
    assert (
        value(
            metrics,
            "migweaver_agent_reconcile_passes_total",
            node="n1",
            gpu="0",
            phase=result.phase,
        )
        == 1
    )
    assert (
        value(
            metrics,
            "migweaver_agent_mig_mode_switches_total",
            node="n1",
            gpu="0",
            mig_mode="enabled",
        )
        == 1
    )
    assert value(metrics, "migweaver_agent_layout_change_duration_seconds_count", node="n1") == 1
    assert value(metrics, "migweaver_agent_last_report_timestamp_seconds", node="n1") == 1234.0


def test_device_plugin_state_and_allocate_outcomes() -> None:
    plugin = SimpleNamespace(
        state="waiting_for_kubelet", allocate_results={"granted": 3, "NOT_FOUND": 1}
    )
    metrics = AgentMetrics("n1", plugin=plugin)
    state = "migweaver_agent_device_plugin_state"
    assert value(metrics, state, node="n1", state="waiting_for_kubelet") == 1
    assert value(metrics, state, node="n1", state="registered") == 0
    assert value(metrics, "migweaver_agent_allocate_total", node="n1", result="granted") == 3
    assert value(metrics, "migweaver_agent_allocate_total", node="n1", result="NOT_FOUND") == 1
    assert value(AgentMetrics("n1"), state, node="n1", state="disabled") == 1


async def test_serves_metrics_on_its_own_port() -> None:
    metrics = AgentMetrics("n1")
    async with (
        metrics.serve("127.0.0.1", 0) as port,
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    assert "migweaver_agent_last_report_timestamp_seconds" in text
