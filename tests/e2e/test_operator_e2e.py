"""Issue 5's acceptance: the operator and agents (fake GPUs) against a Kubernetes API.

The operator runs in-process (`run_operator`, `--standalone`, no webhook: pods are created
already carrying the `migweaver.io/placement` gate, as the webhook would leave them), the
agents with the fake backend and without the device plugin (`run_agent`). Every scenario
checks the API objects themselves: pod annotations, nodeSelector and gates, MigLayout spec
and status, Events. On the emulator the `binder` fixture binds released pods as
kube-scheduler would; on a real cluster the scheduler does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from migweaver.agent.main import AgentOptions, run_agent
from migweaver.core.config import CONFIGMAP_NAME
from migweaver.core.operator.metric_rows import InvalidLayout, LayoutInput
from migweaver.core.operator.pod_reservation import parse_reservation
from migweaver.core.resources.allocation import Allocation, parse_allocation
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_RESERVATION,
    LABEL_NODE,
    PLACEMENT_CONDITION,
    PLACEMENT_GATE,
)
from migweaver.core.resources.models import node_label_value
from migweaver.operator.main import run_operator
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.settings import OperatorOptions
from tests import builders
from tests.e2e.kube_api import (
    CONFIGMAPS,
    EVENTS,
    MIGLAYOUTS,
    MUTATING_WEBHOOKS,
    NODECONFIGS,
    NODES,
    PODS,
    STRATEGIC_PATCH,
    Kube,
    Ref,
    condition,
    meta,
)
from tests.e2e.tls import TlsFiles

JsonDict = dict[str, Any]

A100 = "A100-SXM4-80GB"
CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"
WEBHOOK_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "webhook.yaml"
LEASES = Ref("coordination.k8s.io/v1", "leases", True, "Lease")
HOSTNAME = "kubernetes.io/hostname"
TIMEOUT = 30.0
# What kube-scheduler writes on a gated pod; the operator's condition must leave it alone.
SCHEDULING_GATED = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "SchedulingGated",
    "message": "Scheduling is blocked due to non-empty scheduling gates",
}


# --------------------------------------------------------------------------- helpers


def node_body(name: str) -> JsonDict:
    # A kube-scheduler (real cluster) wants the extended resources the kubelet's device
    # plugin would advertise; the agent adds the gpumem ones itself.
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "70"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME: name}},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            # What a kubelet reports: the operator only plans on Ready Nodes.
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


async def add_node(kube: Kube, name: str, gpus: int = 1) -> None:
    await kube.create(NODES, node_body(name))
    for index in range(gpus):
        kube.track(MIGLAYOUTS, f"{name}-gpu{index}")  # created by the agent


async def add_nodeconfig(kube: Kube, node: str, mode: str) -> str:
    name = kube.name(f"{node}-config")
    await kube.create(
        NODECONFIGS,
        {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "NodeConfig",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "operatingMode": mode},
        },
    )
    return name


def gpu_pod(
    name: str,
    count: int = 1,
    memory: int | None = None,
    mode: str | None = None,
    container: str = "main",
) -> JsonDict:
    return builders.gpu_pod(
        name,
        gpu=count,
        mem=memory,
        mode=mode or None,
        annotations={},
        image="registry.k8s.io/pause:3.9",
        container_name=container,
        typed=True,
        gates=[PLACEMENT_GATE],
        # The test's Nodes have no kubelet: on a real cluster they are tainted not-ready.
        tolerations=[{"operator": "Exists"}],
    )


def released(pod: JsonDict | None) -> bool:
    """The operator released the pod: allocation written, gate gone."""
    if pod is None:
        return False
    annotations = meta(pod).get("annotations") or {}
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return ANNOTATION_ALLOCATION in annotations and not gates


def placement_is(status: str, reason: str) -> Callable[[JsonDict | None], bool]:
    """The pod's `migweaver.io/Placement` condition has this status and reason."""

    def check(pod: JsonDict | None) -> bool:
        found = condition(pod, PLACEMENT_CONDITION) or {}
        return (found.get("status"), found.get("reason")) == (status, reason)

    return check


async def mark_scheduling_gated(kube: Kube, name: str) -> None:
    """Write the scheduler's `PodScheduled` condition (as on a real cluster) through the
    status subresource, so a test can check that the operator's condition kept it."""
    patch = {"status": {"conditions": [SCHEDULING_GATED]}}
    await kube.patch(PODS, name, patch, content_type=STRATEGIC_PATCH, subresource="status")


def reserved(pod: JsonDict | None) -> bool:
    return pod is not None and ANNOTATION_RESERVATION in (meta(pod).get("annotations") or {})


def allocation_of(pod: JsonDict) -> Allocation:
    parsed = parse_allocation(meta(pod)["annotations"][ANNOTATION_ALLOCATION])
    assert isinstance(parsed, Allocation), parsed
    return parsed


def layout_ready(obj: JsonDict | None) -> bool:
    if obj is None:
        return False
    status = obj.get("status") or {}
    return (
        status.get("observedGeneration") == meta(obj).get("generation")
        and status.get("phase") == "Ready"
    )


async def wait_pod(
    kube: Kube, name: str, check: Callable[[JsonDict | None], bool], timeout_s: float = TIMEOUT
) -> JsonDict:
    found = await kube.wait_for(PODS, name, check, timeout_s=timeout_s)
    assert found is not None
    return found


async def wait_layout(
    kube: Kube, name: str, check: Callable[[JsonDict | None], bool], timeout_s: float = TIMEOUT
) -> JsonDict:
    found = await kube.wait_for(MIGLAYOUTS, name, check, timeout_s=timeout_s)
    assert found is not None
    return found


async def wait_events(
    kube: Kube, obj: JsonDict, reasons: set[str], namespace: str | None = None
) -> list[JsonDict]:
    """The Events about `obj` once every reason in `reasons` arrived."""
    where = namespace or meta(obj).get("namespace") or "default"
    events = await kube.wait_for_list(
        EVENTS,
        lambda items: reasons <= {e["reason"] for e in items},
        where,
        field_selector=f"involvedObject.uid={meta(obj)['uid']}",
        timeout_s=TIMEOUT,
    )
    for event in events:
        kube.track(EVENTS, meta(event)["name"], where)
    return events


def status_instances(layout: JsonDict) -> dict[tuple[str, int, int], JsonDict]:
    return {
        (i["profile"], i["placement"]["start"], i["placement"]["size"]): i
        for i in (layout.get("status") or {}).get("instances") or []
    }


@dataclass
class RunningOperator:
    metrics: OperatorMetrics
    task: asyncio.Task[int]
    ready: asyncio.Event


@contextlib.asynccontextmanager
async def running_operator(
    kube: Kube,
    metrics: OperatorMetrics | None = None,
    *,
    wall: Callable[[], float] = time.time,
    **overrides: Any,
) -> AsyncIterator[RunningOperator]:
    settings: dict[str, Any] = {
        "kubeconfig": str(kube.kubeconfig),
        "namespace": kube.namespace,
        "batch_idle": 0.1,
        "batch_max": 0.5,
        "resync_s": 2.0,
        "metrics_address": "127.0.0.1",
        "metrics_port": 0,
        "webhook": False,
        "probe_address": "127.0.0.1",
        "probe_port": 0,
        "standalone": True,
    }
    options = OperatorOptions(**(settings | overrides))
    metrics = metrics or OperatorMetrics()
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(run_operator(options, stop, metrics=metrics, ready=ready, wall=wall))
    try:
        yield RunningOperator(metrics, task, ready)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


@contextlib.asynccontextmanager
async def running_agents(kube: Kube, *nodes: tuple[str, str]) -> AsyncIterator[None]:
    """One agent per (node, fake GPUs) with the fake backend, without the device plugin."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_agent(
                AgentOptions(
                    node_name=node,
                    backend="fake",
                    fake_gpus=gpus,
                    kubeconfig=str(kube.kubeconfig),
                    probe_address="127.0.0.1",
                    probe_port=0,
                    metrics_address="127.0.0.1",
                    metrics_port=0,
                    resync_s=2,
                    device_plugin=False,
                ),
                stop,
            )
        )
        for node, gpus in nodes
    ]
    try:
        for node, _ in nodes:
            selector = f"{LABEL_NODE}={node_label_value(node)}"
            await kube.wait_for_list(
                MIGLAYOUTS,
                lambda items: bool(items) and all(layout_ready(o) for o in items),
                label_selector=selector,
                timeout_s=TIMEOUT,
            )
        yield
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        assert results == [0] * len(tasks), results


# --------------------------------------------------------------------------- scenarios


async def test_seed_pod_gets_two_mig_instances_on_one_node(kube: Kube, binder: None) -> None:
    node = kube.name("mig-a")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube) as op:
        created = await kube.create(PODS, gpu_pod("gpu-pod", 2, 8000, "mig", "ubuntu-container"))
        pod = await wait_pod(kube, "gpu-pod", released)

        allocation = allocation_of(pod)
        assert allocation.node == node
        (container,) = allocation.containers
        assert container.name == "ubuntu-container"
        assert len(container.devices) == 2
        assert all(d.mode == "mig" and d.memory_mib >= 8000 for d in container.devices)
        assert len({d.mig_uuid for d in container.devices}) == 2
        annotations = meta(pod)["annotations"]
        assert annotations[ANNOTATION_BIND_PHASE] == "allocating"
        assert ANNOTATION_RESERVATION not in annotations
        assert pod["spec"]["nodeSelector"] == {HOSTNAME: node}
        assert not pod["spec"].get("schedulingGates")

        layout = await wait_layout(kube, f"{node}-gpu0", layout_ready)
        assert layout["spec"]["migEnabled"] is True
        found = status_instances(layout)
        for device in container.devices:
            assert device.placement is not None
            assert device.profile is not None
            key = (device.profile, device.placement.start, device.placement.size)
            assert found[key]["uuid"] == device.mig_uuid
        spec = {(i["profile"], i["placement"]["start"]) for i in layout["spec"]["instances"]}
        assert {(d.profile, d.placement.start) for d in container.devices if d.placement} <= spec

        events = await wait_events(kube, created, {"MigPlanned", "MigReady"})
        ready = next(e for e in events if e["reason"] == "MigReady")
        assert node in ready["message"]
        # Placed at its first plan: no condition, no status write (docs/operator.md).
        assert condition(pod, PLACEMENT_CONDITION) is None
        await wait_events(kube, layout, {"LayoutChanged"}, "default")
        bound = await wait_pod(kube, "gpu-pod", lambda p: bool(p and p["spec"].get("nodeName")))
        assert bound["spec"]["nodeName"] == node
        assert b"migweaver_pods_placed_total 1.0" in op.metrics.render()


class RoundSignallingMetrics(OperatorMetrics):
    """The operator's metrics, signalling each time a round refreshed the MIG instance
    series (every round calls `update_layouts` with the MigLayouts it has just read)."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshed = asyncio.Event()

    def update_layouts(self, layouts: Iterable[LayoutInput]) -> tuple[InvalidLayout, ...]:
        invalid = super().update_layouts(layouts)
        self.refreshed.set()
        return invalid


async def scrape(port: int) -> dict[str, list[Sample]]:
    """`/metrics` over HTTP, parsed: samples by sample name (`..._total`, `..._count`)."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def of_node(samples: dict[str, list[Sample]], name: str, label: str, node: str) -> list[Sample]:
    return [s for s in samples.get(name, []) if s.labels.get(label) == node]


def expected_mig_series(layout: JsonDict) -> dict[str, float]:
    """migname -> value the layout's status calls for: `<profile>-<n>`, n numbering that
    profile's instances in placement order; 1 in use (or allocated to a pod), 0 free."""
    series: dict[str, float] = {}
    seen: dict[str, int] = {}
    instances = status_instances(layout)
    for key in sorted(instances, key=lambda k: k[1]):  # by start slot
        profile, instance = key[0], instances[key]
        n = seen.get(profile, 0)
        seen[profile] = n + 1
        series[f"{profile}-{n}"] = 1.0 if instance.get("inUse") or instance.get("pod") else 0.0
    return series


async def test_metrics_show_the_seed_pods_instances_with_the_seeds_labels(
    kube: Kube, binder: None
) -> None:
    node = kube.name("metrics-l")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    gpu0 = f"{node}-gpu0"
    metrics = RoundSignallingMetrics()
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube, metrics):
        await kube.create(PODS, gpu_pod("gpu-pod", 2, 8000, "mig", "ubuntu-container"))
        (container,) = allocation_of(await wait_pod(kube, "gpu-pod", released)).containers
        held = {
            (d.profile, d.placement.start, d.placement.size): d
            for d in container.devices
            if d.placement is not None and d.profile is not None
        }
        assert len(held) == 2

        def holds_both(obj: JsonDict | None) -> bool:
            found = status_instances(obj or {})
            return layout_ready(obj) and all(found.get(k, {}).get("inUse") for k in held)

        # The agent counts the bound pod's instances as in use; the metrics follow the
        # status at the operator's next round (each attempt waits for one).
        layout = await wait_layout(kube, gpu0, holds_both)
        expected = expected_mig_series(layout)
        assert metrics.port is not None
        for _ in range(20):
            metrics.refreshed.clear()
            samples = await scrape(metrics.port)
            legacy = of_node(samples, "nodeGPUMigInstance", "nodeid", node)
            if {s.labels["migname"]: s.value for s in legacy} == expected:
                break
            await asyncio.wait_for(metrics.refreshed.wait(), TIMEOUT)
        else:
            raise AssertionError(f"nodeGPUMigInstance of {node}: {legacy}, expected {expected}")

        gpu_uuid = layout["spec"]["gpuUUID"]
        assert {d.gpu_uuid for d in held.values()} == {gpu_uuid}
        for sample in legacy:
            assert set(sample.labels) == {"deviceidx", "deviceuuid", "migname", "nodeid", "zone"}
            assert sample.labels["zone"] == "vGPU"
            assert sample.labels["deviceidx"] == "0"
            assert sample.labels["deviceuuid"] == gpu_uuid
            assert re.fullmatch(r"\d+g\.\d+gb(\+me)?-\d+", sample.labels["migname"])
        in_use = {s.labels["migname"] for s in legacy if s.value == 1.0}
        assert len(in_use) == 2
        assert {n.rpartition("-")[0] for n in in_use} == {k[0] for k in held}

        info = of_node(samples, "hami_node_gpu_mig_instance_info", "node", node)
        assert {s.labels["mig_uuid"] for s in info} == {d.mig_uuid for d in held.values()}
        assert {(s.labels["profile"], int(s.labels["placement_start"])) for s in info} == {
            (profile, start) for profile, start, _ in held
        }
        assert all(s.value == 1.0 and s.labels["device_uuid"] == gpu_uuid for s in info)
        (placed,) = samples["migweaver_pods_placed_total"]
        assert placed.value >= 1
        (waited,) = samples["migweaver_pod_wait_seconds_count"]
        assert waited.value >= 1


async def test_pod_pinned_to_hami_core_lands_on_a_hami_core_node_and_an_unpinned_one_on_either(
    kube: Kube, binder: None
) -> None:
    mig, hami = kube.name("mig-b"), kube.name("hami-b")
    await add_node(kube, mig)
    await add_node(kube, hami)
    await add_nodeconfig(kube, mig, "mig")  # `hami` has none: hami-core, HAMi's default
    async with (
        running_agents(kube, (mig, f"{A100}:1"), (hami, f"{A100}:1")),
        running_operator(kube),
    ):
        await kube.create(PODS, gpu_pod("shared", 1, 10000, "hami-core"))
        pod = await wait_pod(kube, "shared", released)
        allocation = allocation_of(pod)
        assert allocation.node == hami
        (device,) = allocation.devices
        assert device.mode == "hami-core"
        assert device.mig_uuid is None
        assert device.memory_mib == 10000
        layout = await kube.get(MIGLAYOUTS, f"{hami}-gpu0")
        assert device.gpu_uuid == layout["spec"]["gpuUUID"]
        assert layout["spec"]["migEnabled"] is False
        assert layout["status"]["migMode"]["current"] == "Disabled"
        assert pod["spec"]["nodeSelector"] == {HOSTNAME: hami}
        mig_layout = await kube.get(MIGLAYOUTS, f"{mig}-gpu0")
        assert mig_layout["spec"]["instances"] == []  # the MIG GPU was left alone

        # No annotation: either kind of node serves it, each in its own way.
        await kube.create(PODS, gpu_pod("either", 1, 20000))
        pod = await wait_pod(kube, "either", released)
        (device,) = allocation_of(pod).devices
        assert allocation_of(pod).node in {mig, hami}
        if allocation_of(pod).node == hami:
            assert (device.mode, device.mig_uuid, device.memory_mib) == ("hami-core", None, 20000)
        else:
            assert device.mode == "mig"
            assert device.mig_uuid is not None
            assert device.memory_mib >= 20000
        assert pod["spec"]["nodeSelector"] == {HOSTNAME: allocation_of(pod).node}


async def test_free_half_is_repartitioned_around_an_instance_in_use(
    kube: Kube, binder: None
) -> None:
    node = kube.name("mig-c")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    gpu0 = f"{node}-gpu0"
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube):
        await kube.create(PODS, gpu_pod("trainer", 1, 40000, "mig"))
        trainer = allocation_of(await wait_pod(kube, "trainer", released))
        (big,) = trainer.devices
        assert big.profile == "3g.40gb"
        assert big.placement is not None
        big_key = (big.profile, big.placement.start, big.placement.size)

        def held(obj: JsonDict | None) -> bool:
            instance = status_instances(obj or {}).get(big_key)
            return bool(instance and instance.get("inUse") and layout_ready(obj))

        await wait_layout(kube, gpu0, held)  # the agent counts the released pod's instance

        await kube.create(PODS, gpu_pod("small-1", 2, 8000, "mig"))
        await kube.create(PODS, gpu_pod("small-2", 1, 8000, "mig"))
        smalls = [
            allocation_of(await wait_pod(kube, name, released)) for name in ("small-1", "small-2")
        ]
        layout = await wait_layout(kube, gpu0, held)
        instance = status_instances(layout)[big_key]
        assert instance["uuid"] == big.mig_uuid  # the 3g was never touched
        assert instance["pod"] == f"{kube.namespace}/trainer"
        spec = [(i["profile"], i["placement"]["start"]) for i in layout["spec"]["instances"]]
        assert (big.profile, big.placement.start) in spec
        taken = set(range(big.placement.start, big.placement.start + big.placement.size))
        uuids = {big.mig_uuid}
        for allocation in smalls:
            for device in allocation.devices:
                assert device.placement is not None
                assert device.placement.start not in taken  # in the free half
                assert device.memory_mib >= 8000
                uuids.add(device.mig_uuid)
        assert len(uuids) == 4  # nothing handed out twice


async def test_impossible_pod_gets_one_migunschedulable_event(kube: Kube, binder: None) -> None:
    node = kube.name("mig-d")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    async with running_agents(kube, (node, f"{A100}:1")):
        huge = await kube.create(PODS, gpu_pod("huge", 1, 200000, "mig"))
        await mark_scheduling_gated(kube, "huge")  # before the operator writes anything
        async with running_operator(kube):
            events = await wait_events(kube, huge, {"MigUnschedulable"})
            (event,) = [e for e in events if e["reason"] == "MigUnschedulable"]
            assert event["type"] == "Warning"
            assert "200000 MiB" in event["message"]
            assert "7g.80gb" in event["message"]
            # The pod condition says the same, beside the scheduler's condition.
            waiting = await wait_pod(kube, "huge", placement_is("False", "MigUnschedulable"))
            said = condition(waiting, PLACEMENT_CONDITION)
            assert said is not None
            assert said["message"] == event["message"]
            assert said["lastTransitionTime"]
            scheduled = condition(waiting, "PodScheduled")
            assert scheduled is not None
            assert scheduled["reason"] == "SchedulingGated"
            # Later batches plan again; the reason is the same, so no second Event, and
            # the pod is not written again.
            await kube.create(PODS, gpu_pod("fits", 1, 8000, "mig"))
            await wait_pod(kube, "fits", released)
            await kube.create(PODS, gpu_pod("fits-too", 1, 8000, "mig"))
            await wait_pod(kube, "fits-too", released)
            again = await wait_events(kube, huge, {"MigUnschedulable"})
            assert [e["reason"] for e in again].count("MigUnschedulable") == 1
            still = await kube.get(PODS, "huge")
            assert still["spec"]["schedulingGates"] == [{"name": PLACEMENT_GATE}]
            assert ANNOTATION_RESERVATION not in (meta(still).get("annotations") or {})
            assert condition(still, PLACEMENT_CONDITION) == said
            assert condition(still, "PodScheduled") is not None
            if kube.is_emulator:  # a real scheduler may still touch its own condition
                assert meta(still)["resourceVersion"] == meta(waiting)["resourceVersion"]
        # A restarted operator knows from the pod's condition what the pod was told: the
        # reason is the same, so no second Event (the operator keeps no state of its own).
        async with running_operator(kube):
            await kube.create(PODS, gpu_pod("after-restart", 1, 8000, "mig"))
            await wait_pod(kube, "after-restart", released)
            again = await wait_events(kube, huge, {"MigUnschedulable"})
            assert [e["reason"] for e in again].count("MigUnschedulable") == 1


async def test_invalid_request_gets_an_invalidrequest_condition(kube: Kube, binder: None) -> None:
    node = kube.name("mig-i")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    # A value the apiserver accepts (a non-negative whole number) that HAMi's API refuses;
    # a negative one (`nvidia.com/gpumem: "-5"`) never gets past a real apiserver.
    bad = gpu_pod("bad-request")
    bad["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem-percentage"] = 150
    async with running_agents(kube, (node, f"{A100}:1")):
        created = await kube.create(PODS, bad)
        await mark_scheduling_gated(kube, "bad-request")
        async with running_operator(kube):
            waiting = await wait_pod(kube, "bad-request", placement_is("False", "InvalidRequest"))
            said = condition(waiting, PLACEMENT_CONDITION)
            assert said is not None
            assert said["message"].startswith("invalid GPU request: ")
            assert '["nvidia.com/gpumem-percentage"]' in said["message"]
            assert "150" in said["message"]
            assert condition(waiting, "PodScheduled") is not None
            events = await wait_events(kube, created, {"MigUnschedulable"})
            (event,) = [e for e in events if e["reason"] == "MigUnschedulable"]
            assert event["message"] == said["message"]
            assert waiting["spec"]["schedulingGates"] == [{"name": PLACEMENT_GATE}]


async def test_waiting_pods_condition_turns_true_when_it_is_released(
    kube: Kube, binder: None
) -> None:
    node = kube.name("mig-w")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube):
        await kube.create(PODS, gpu_pod("whole", 1, 80000, "mig"))
        await wait_pod(kube, "whole", released)
        await kube.create(PODS, gpu_pod("next", 1, 40000, "mig"))
        await mark_scheduling_gated(kube, "next")
        waiting = await wait_pod(kube, "next", placement_is("False", "MigUnschedulable"))
        before = condition(waiting, PLACEMENT_CONDITION)
        assert before is not None
        assert "3g.40gb" in before["message"]

        await kube.patch(PODS, "whole", {"status": {"phase": "Succeeded"}}, subresource="status")
        pod = await wait_pod(kube, "next", placement_is("True", "MigReady"))
        assert released(pod)
        said = condition(pod, PLACEMENT_CONDITION)
        assert said is not None
        # The GPU is idle now: its 7g.80gb is repartitioned into the size the pod needs.
        device = allocation_of(pod).devices[0]
        assert device.profile == "3g.40gb"
        assert device.placement is not None
        where = f"{device.placement.start}:{device.placement.size}"
        assert said["message"] == f"released to {node}: main gets {device.profile}@{where} on gpu0"
        bound = await wait_pod(kube, "next", lambda p: bool(p and p["spec"].get("nodeName")))
        assert condition(bound, PLACEMENT_CONDITION) is not None
        assert condition(bound, "PodScheduled") is not None


def nodeconfig_ready(reason: str) -> Callable[[JsonDict | None], bool]:
    def check(obj: JsonDict | None) -> bool:
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        ready = conditions.get("Ready") or {}
        return ready.get("reason") == reason and status.get("observedGeneration") == meta(
            obj or {}
        ).get("generation")

    return check


def mig_mode(enabled: bool) -> Callable[[JsonDict | None], bool]:
    current = "Enabled" if enabled else "Disabled"

    def check(obj: JsonDict | None) -> bool:
        if not layout_ready(obj):
            return False
        assert obj is not None
        return (
            obj["spec"]["migEnabled"] is enabled and obj["status"]["migMode"]["current"] == current
        )

    return check


async def test_nodeconfig_switches_a_node_to_mig_and_back(kube: Kube, binder: None) -> None:
    node = kube.name("switch-e")
    await add_node(kube, node)
    config = await add_nodeconfig(kube, node, "hami-core")
    gpu0 = f"{node}-gpu0"
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube):
        await wait_layout(kube, gpu0, mig_mode(False))
        found = await kube.wait_for(NODECONFIGS, config, nodeconfig_ready("Applied"))
        assert found is not None
        assert found["status"]["matchedNodes"] == [node]

        await kube.patch(NODECONFIGS, config, {"spec": {"operatingMode": "mig"}})
        await wait_layout(kube, gpu0, mig_mode(True))
        await kube.wait_for(NODECONFIGS, config, nodeconfig_ready("Applied"))

        # A MIG pod runs: switching back must wait for it, and say so.
        await kube.create(PODS, gpu_pod("runner", 1, 8000, "mig"))
        await wait_pod(kube, "runner", released)
        await kube.patch(NODECONFIGS, config, {"spec": {"operatingMode": "hami-core"}})
        busy = await kube.wait_for(NODECONFIGS, config, nodeconfig_ready("GpusBusy"))
        assert busy is not None
        message = busy["status"]["conditions"][0]["message"]
        assert f"{kube.namespace}/runner" in message
        assert (await kube.get(MIGLAYOUTS, gpu0))["spec"]["migEnabled"] is True
        await wait_events(kube, busy, {"GpusBusy"}, "default")

        await kube.patch(PODS, "runner", {"status": {"phase": "Succeeded"}}, subresource="status")
        layout = await wait_layout(kube, gpu0, mig_mode(False))
        assert layout["spec"]["instances"] == []
        await kube.wait_for(NODECONFIGS, config, nodeconfig_ready("Applied"))
        await wait_events(kube, layout, {"LayoutChanged"}, "default")


async def test_operator_restart_mid_batch_keeps_reservations(kube: Kube, binder: None) -> None:
    node = kube.name("restart-f")
    await add_node(kube, node)
    gpu0 = f"{node}-gpu0"
    async with running_agents(kube, (node, f"{A100}:1")):
        pass  # the agent creates the MigLayout, then stops: nothing gets applied meanwhile
    await add_nodeconfig(kube, node, "mig")

    names = ["first-1", "first-2", "first-3"]
    async with running_operator(kube):
        for name in names:
            await kube.create(PODS, gpu_pod(name, 1, 8000, "mig"))
        before = {name: await wait_pod(kube, name, reserved) for name in names}
    planned = await kube.get(MIGLAYOUTS, gpu0)
    assert len(planned["spec"]["instances"]) == 3
    reservations = {}
    for name, pod in before.items():
        assert not released(pod)
        found = parse_reservation(meta(pod)["annotations"][ANNOTATION_RESERVATION])
        assert found is not None
        reservations[name] = found

    await kube.create(PODS, gpu_pod("after-restart", 1, 8000, "mig"))
    async with running_operator(kube), running_agents(kube, (node, f"{A100}:1")):
        pods = {n: await wait_pod(kube, n, released) for n in [*names, "after-restart"]}
    allocations = {name: allocation_of(pod) for name, pod in pods.items()}
    for name in names:  # the restarted operator kept every reservation
        (kept,) = reservations[name].devices
        (got,) = allocations[name].devices
        assert (got.profile, got.placement) == (kept.profile, kept.placement)
    placements = [d.placement for a in allocations.values() for d in a.devices]
    uuids = [d.mig_uuid for a in allocations.values() for d in a.devices]
    assert len(set(uuids)) == 4
    assert len({(p.start, p.size) for p in placements if p}) == 4


CONFIG_3G_ONLY = """
nvidia:
  knownMigGeometries:
  - models: ["A100-SXM4-80GB"]
    allowedGeometries:
    - - name: 3g.40gb
        memory: 40960
        count: 2
"""
CONFIG_INVALID = """
nvidia:
  knownMigGeometries:
  - models: ["A100-SXM4-80GB"]
    allowedGeometries:
    - - name: 5g.50gb
        memory: 50000
        count: 1
"""


async def test_invalid_configmap_keeps_the_last_valid_one(kube: Kube, binder: None) -> None:
    node = kube.name("config-g")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    configmap = await kube.create(
        CONFIGMAPS,
        {"metadata": {"name": CONFIGMAP_NAME}, "data": {"config.yaml": CONFIG_3G_ONLY}},
    )
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube) as op:
        await wait_events(kube, configmap, {"ConfigLoaded"})
        await kube.create(PODS, gpu_pod("under-3g", 1, 8000, "mig"))
        (device,) = allocation_of(await wait_pod(kube, "under-3g", released)).devices
        assert device.profile == "3g.40gb"  # the only configured geometry

        await kube.patch(CONFIGMAPS, CONFIGMAP_NAME, {"data": {"config.yaml": CONFIG_INVALID}})
        events = await wait_events(kube, configmap, {"ConfigInvalid"})
        invalid = next(e for e in events if e["reason"] == "ConfigInvalid")
        assert invalid["type"] == "Warning"
        assert "5g.50gb" in invalid["message"]
        assert b"migweaver_config_reload_failures_total 1.0" in op.metrics.render()

        await kube.create(PODS, gpu_pod("still-3g", 1, 8000, "mig"))
        (device,) = allocation_of(await wait_pod(kube, "still-3g", released)).devices
        assert device.profile == "3g.40gb"  # the last valid configuration is in force


# HAMi's own ConfigMap data (`hami-scheduler-device`, key `device-config.yaml`): the nvidia
# block with HAMi settings migweaver does not use, beside other vendors' blocks.
HAMI_DEVICE_CONFIG = """
nvidia:
  resourceCountName: nvidia.com/gpu
  gpuCorePolicy: default
  libCudaLogLevel: 1
  knownMigGeometries:
  - models: ["A100-SXM4-80GB"]
    allowedGeometries:
    - - name: 3g.40gb
        memory: 40960
        count: 2
cambricon:
  resourceCountName: cambricon.com/vmlu
vnpus:
  hamiVnpuCore: false
"""


async def test_hami_configmap_as_it_is_and_a_misspelled_key(kube: Kube, binder: None) -> None:
    node = kube.name("config-hami")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    configmap = await kube.create(
        CONFIGMAPS,
        {"metadata": {"name": CONFIGMAP_NAME}, "data": {"device-config.yaml": HAMI_DEVICE_CONFIG}},
    )
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube):
        events = await wait_events(kube, configmap, {"ConfigLoaded", "ConfigWarning"})
        (warning,) = [e for e in events if e["reason"] == "ConfigWarning"]
        assert "nvidia.gpuCorePolicy" in warning["message"]
        assert "cambricon" not in warning["message"]  # other vendors' blocks are HAMi's
        await kube.create(PODS, gpu_pod("hami-3g", 1, 8000, "mig"))
        (device,) = allocation_of(await wait_pod(kube, "hami-3g", released)).devices
        assert device.profile == "3g.40gb"  # the geometry of HAMi's ConfigMap is in force

        misspelled = HAMI_DEVICE_CONFIG.replace("knownMigGeometries", "knownMigGeomtries")
        await kube.patch(CONFIGMAPS, CONFIGMAP_NAME, {"data": {"device-config.yaml": misspelled}})

        events = await kube.wait_for_list(
            EVENTS,
            lambda items: any("knownMigGeomtries" in e["message"] for e in items),
            meta(configmap).get("namespace") or "default",
            field_selector=f"involvedObject.uid={meta(configmap)['uid']}",
            timeout_s=TIMEOUT,
        )
        for event in events:
            kube.track(EVENTS, meta(event)["name"], meta(event)["namespace"])
        (typo,) = [e for e in events if "knownMigGeomtries" in e["message"]]
        assert typo["type"] == "Warning"
        assert "nearest known key is 'knownMigGeometries'" in typo["message"]


CONFIG_7G_ONLY = """
nvidia:
  knownMigGeometries:
  - models: ["A100-SXM4-80GB"]
    allowedGeometries:
    - - name: 7g.80gb
        memory: 81920
        count: 1
"""


async def test_a_configmap_change_is_taken_from_the_watch(
    kube: Kube, binder: None, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 11, bug 1: the watch started without a resourceVersion of its own list, which a
    # real API server answers with 504 "Too large resource version" once its ConfigMap
    # cache lags behind etcd (any write of another kind does that). No periodic re-read
    # here (resync_s is an hour): only the watch can bring the change in.
    node = kube.name("config-w")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    caplog.set_level(logging.DEBUG, logger="migweaver")
    async with (
        running_agents(kube, (node, f"{A100}:2")),
        running_operator(kube, resync_s=3600.0) as op,
    ):
        await asyncio.wait_for(op.ready.wait(), TIMEOUT)
        configmap = await kube.create(
            CONFIGMAPS,
            {"metadata": {"name": CONFIGMAP_NAME}, "data": {"config.yaml": CONFIG_3G_ONLY}},
        )
        await wait_events(kube, configmap, {"ConfigLoaded"})
        await kube.create(PODS, gpu_pod("first-3g", 1, 8000, "mig"))
        (device,) = allocation_of(await wait_pod(kube, "first-3g", released)).devices
        assert device.profile == "3g.40gb"

        await kube.patch(CONFIGMAPS, CONFIGMAP_NAME, {"data": {"config.yaml": CONFIG_7G_ONLY}})
        await kube.create(PODS, gpu_pod("then-7g", 1, 8000, "mig"))
        (device,) = allocation_of(await wait_pod(kube, "then-7g", released)).devices
        assert device.profile == "7g.80gb"  # the new version, seen by the watch
    failed = [r.getMessage() for r in caplog.records if "ConfigMap" in r.getMessage()]
    assert not [m for m in failed if "watch" in m], failed


async def test_deleted_waiting_pod_releases_its_reservation(kube: Kube, binder: None) -> None:
    node = kube.name("delete-h")
    await add_node(kube, node)
    async with running_agents(kube, (node, f"{A100}:1")):
        pass  # the MigLayout exists; no agent applies it while the pods wait
    await add_nodeconfig(kube, node, "mig")
    async with running_operator(kube):
        await kube.create(PODS, gpu_pod("gone", 1, 70000, "mig"))
        first = parse_reservation(
            meta(await wait_pod(kube, "gone", reserved))["annotations"][ANNOTATION_RESERVATION]
        )
        assert first is not None
        assert [d.profile for d in first.devices] == ["7g.80gb"]
        await kube.delete(PODS, "gone")
        await kube.wait_gone(PODS, "gone")
        await kube.create(PODS, gpu_pod("next", 1, 70000, "mig"))
        second = parse_reservation(
            meta(await wait_pod(kube, "next", reserved))["annotations"][ANNOTATION_RESERVATION]
        )
        assert second is not None
        assert second.devices == first.devices  # the whole GPU was free again
        async with running_agents(kube, (node, f"{A100}:1")):
            pod = await wait_pod(kube, "next", released)
        (device,) = allocation_of(pod).devices
        assert device.profile == "7g.80gb"


def owner_uids(layout: JsonDict | None) -> list[str]:
    return [str(r.get("uid")) for r in meta(layout or {}).get("ownerReferences") or []]


async def test_a_layout_of_a_deleted_node_gets_no_pod_and_goes_with_its_node(
    kube: Kube, binder: None
) -> None:
    # Issue 11, bug 2: a MigLayout whose Node is gone (node deleted, autoscaler
    # scale-down) received pods, released to a node that no longer exists.
    node = kube.name("gone-n")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    uid = meta(await kube.get(NODES, node))["uid"]
    async with running_agents(kube, (node, f"{A100}:1")):
        layout = await kube.get(MIGLAYOUTS, f"{node}-gpu0")
        assert owner_uids(layout) == [uid]  # the agent made the Node its owner
    await kube.delete(NODES, node)
    # The garbage collector removes the layout with its Node.
    await kube.wait_for(MIGLAYOUTS, f"{node}-gpu0", lambda o: o is None, timeout_s=TIMEOUT)

    # An agent left over from the removed node makes a layout again, owned by nobody:
    # the operator reports it and places nothing on it.
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube) as op:
        layout = await kube.get(MIGLAYOUTS, f"{node}-gpu0")
        assert owner_uids(layout) == []
        await wait_events(kube, layout, {"NodeMissing"}, namespace="default")
        await kube.create(PODS, gpu_pod("nowhere", 1, 8000, "mig"))
        await wait_pod(kube, "nowhere", placement_is("False", "MigUnschedulable"))
        assert not released(await kube.get(PODS, "nowhere"))
        assert b"migweaver_miglayouts_without_node 1.0" in op.metrics.render()
        # The Node comes back: the pod is placed there.
        await kube.create(NODES, node_body(node))
        pod = await wait_pod(kube, "nowhere", released)
        assert allocation_of(pod).node == node


def unscheduled(pod: JsonDict, owner: JsonDict | None = None) -> JsonDict:
    """The pod for no scheduler at all (so it stays unbound on a real cluster too),
    controlled by `owner` when given."""
    pod["spec"]["schedulerName"] = "migweaver-e2e-unscheduled"
    if owner is not None:
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta(owner)["name"],
                "uid": meta(owner)["uid"],
                "controller": True,
            }
        ]
    return pod


async def test_a_pod_released_to_a_node_deleted_before_binding_is_evicted_or_explained(
    kube: Kube,
) -> None:
    # Issue 11, bug 2: a released pod whose Node is deleted before the scheduler binds it
    # can neither run nor be planned again (no gate can be added back, its nodeSelector
    # cannot change). A pod with a controller is evicted so its controller re-creates it;
    # a bare pod is never deleted, it is told what to do.
    node = kube.name("vanish-n")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    # Any controlling owner makes a pod replaceable; a ConfigMap has no controller of its
    # own here, so the pod is the same on the emulator and on a real cluster.
    owner = await kube.create(
        CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rs-like"}}
    )
    async with running_operator(kube, node_vanished_grace_s=1.0):
        async with running_agents(kube, (node, f"{A100}:1")):
            await kube.create(PODS, unscheduled(gpu_pod("owned", 1, 8000, "mig"), owner))
            await kube.create(PODS, unscheduled(gpu_pod("bare", 1, 8000, "mig")))
            await wait_pod(kube, "owned", released)
            bare = await wait_pod(kube, "bare", released)
        assert not (bare.get("spec") or {}).get("nodeName")
        owned = await kube.get(PODS, "owned")
        await kube.delete(NODES, node)

        await kube.wait_gone(PODS, "owned", timeout_s=TIMEOUT)
        events = await wait_events(kube, owned, {"NodeVanished"})
        (event,) = [e for e in events if e["reason"] == "NodeVanished"]
        assert "evicted so that its controller ConfigMap/rs-like re-creates it" in event["message"]

        told = await wait_pod(kube, "bare", placement_is("False", "NodeVanished"))
        await wait_events(kube, bare, {"NodeVanished"})
        message = (condition(told, PLACEMENT_CONDITION) or {})["message"]
        assert message.endswith("delete it and create it again")
        still = await kube.get(PODS, "bare")
        assert meta(still)["uid"] == meta(bare)["uid"]
        assert not meta(still).get("deletionTimestamp")


async def wait_rendered(metrics: OperatorMetrics, line: bytes) -> None:
    """Until the metrics show `line` (fails after TIMEOUT with what they show)."""
    for _ in range(int(TIMEOUT * 10)):  # a counter, not an event: look every 0.1 s
        if line in metrics.render():
            return
        await asyncio.sleep(0.1)
    assert line in metrics.render()


def operator_command(kube: Kube, *extra: str) -> list[str]:
    """`migweaver operator` as a process of its own, without the webhook."""
    return [
        sys.executable,
        "-m",
        "migweaver",
        "operator",
        "--kubeconfig",
        str(kube.kubeconfig),
        "--namespace",
        kube.namespace,
        "--no-webhook",
        "--batch-idle",
        "0.1",
        "--batch-max",
        "0.5",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--probe-address",
        "127.0.0.1",
        "--probe-port",
        "0",
        *extra,
    ]


async def test_operator_command_serves_and_stops_cleanly_on_sigterm(
    kube: Kube, binder: None, tmp_path: Path
) -> None:
    node = kube.name("cli-i")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    log_path = tmp_path / "operator.log"
    async with running_agents(kube, (node, f"{A100}:1")):
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *operator_command(kube, "--standalone"),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            await kube.create(PODS, gpu_pod("via-cli", 1, 8000, "mig"))
            pod = await wait_pod(kube, "via-cli", released, timeout_s=60)
            assert allocation_of(pod).node == node
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
            assert code == 0, log_path.read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def lease_holder(lease: JsonDict | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


async def test_kill_the_leader_and_the_other_replica_leads_and_places_the_next_pod(
    kube: Kube, binder: None, tmp_path: Path
) -> None:
    # Issue 11, bug 3: leader election on a Lease. The leader runs as a process of its own
    # and is killed (SIGKILL: no clean release); the replica in this process takes the
    # Lease over once it expired and places the next pod.
    lease = kube.name("migweaver-operator")
    kube.track(LEASES, lease, kube.namespace)
    node = kube.name("lead-j")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    log_path = tmp_path / "leader.log"
    async with running_agents(kube, (node, f"{A100}:1")):
        with log_path.open("wb") as log:
            leader = await asyncio.create_subprocess_exec(
                *operator_command(kube, "--lease", lease, "--lease-duration", "4"),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "POD_NAME": "killed-leader"},
            )
        try:
            first = await kube.wait_for(
                LEASES, lease, lambda o: lease_holder(o).startswith("killed-leader/"), timeout_s=60
            )
            standby = {"standalone": False, "lease": lease, "lease_duration_s": 4}
            async with running_operator(kube, **standby, lease_renew_s=0.5) as other:
                await kube.create(PODS, gpu_pod("led-1", 1, 8000, "mig"))
                await wait_pod(kube, "led-1", released, timeout_s=60)
                assert b"migweaver_pods_placed_total 0.0" in other.metrics.render()
                leader.kill()
                await leader.wait()
                taken = await kube.wait_for(
                    LEASES,
                    lease,
                    lambda o: not lease_holder(o).startswith("killed-leader/"),
                    timeout_s=TIMEOUT,
                )
                assert taken is not None
                assert first is not None
                assert lease_holder(taken) != ""  # taken over, not released
                spec = taken["spec"]
                assert spec["leaseTransitions"] == first["spec"]["leaseTransitions"] + 1
                await kube.create(PODS, gpu_pod("led-2", 1, 8000, "mig"))
                await wait_pod(kube, "led-2", released)
                # Counted once the release patch returned, which can be after the watch
                # showed the released pod: wait for it (the standby placed nothing before).
                await wait_rendered(other.metrics, b"migweaver_pods_placed_total 1.0")
            # A clean stop releases the Lease at once.
            released_lease = await kube.wait_for(LEASES, lease, lambda o: not lease_holder(o))
            assert released_lease is not None
            assert released_lease["spec"]["leaseDurationSeconds"] == 1
        finally:
            if leader.returncode is None:
                leader.kill()
                await leader.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_operator_serves_the_webhook_and_places_an_ungated_pod(
    kube: Kube, binder: None, webhook_tls: TlsFiles, tmp_path: Path
) -> None:
    secret = tmp_path / "webhook-tls"
    secret.mkdir()
    shutil.copy(webhook_tls.cert, secret / "tls.crt")
    shutil.copy(webhook_tls.key, secret / "tls.key")
    port = free_port()
    config = yaml.safe_load(WEBHOOK_MANIFEST.read_text())
    config["metadata"]["name"] = kube.name(config["metadata"]["name"])
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        url = f"https://127.0.0.1:{port}{path}"
        hook["clientConfig"] = {"url": url, "caBundle": webhook_tls.ca_bundle}
    node = kube.name("hook-k")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    served = {
        "webhook": True,
        "webhook_address": "127.0.0.1",
        "webhook_port": port,
        "webhook_tls_dir": str(secret),
    }
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube, **served) as op:
        await asyncio.wait_for(op.ready.wait(), TIMEOUT)  # the webhook listens
        await kube.create(MUTATING_WEBHOOKS, config)
        body = gpu_pod("ungated", 1, 8000, "mig")
        del body["spec"]["schedulingGates"]
        created = await kube.create(PODS, body)
        assert created["spec"]["schedulingGates"] == [{"name": PLACEMENT_GATE}]
        pod = await wait_pod(kube, "ungated", released)
        assert allocation_of(pod).node == node
