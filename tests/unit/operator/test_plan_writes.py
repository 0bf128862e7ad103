"""From a plan to API writes: MigLayout spec patches, reservation annotations, Events."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, valid_layouts
from migweaver.core.mig.profiles import Placement
from migweaver.core.operator.plan_writes import (
    PlanWrites,
    dropped_busy,
    layout_change_message,
    plan_writes,
    planned_message,
    unschedulable_events,
)
from migweaver.core.operator.pod_reservation import parse_reservation
from migweaver.core.operator.state import ClusterState, build_snapshot, cluster_state
from migweaver.core.planning.plan import Assignment
from migweaver.core.planning.planner import plan
from migweaver.core.resources.api import ANNOTATION_RESERVATION
from tests.unit.operator_helpers import (
    allocation,
    layout,
    nodeconfig,
    nodes_of,
    pod,
    reservation,
)

JsonDict = dict[str, Any]


def writes_for(
    pods: list[JsonDict], layouts: list[JsonDict], mode: str = "mig"
) -> tuple[PlanWrites, ClusterState]:
    nodes = sorted({lay["spec"]["nodeName"] for lay in layouts})
    found = cluster_state(
        pods=pods,
        layouts=layouts,
        nodeconfigs=[nodeconfig(f"{n}-c", node_name=n, mode=mode) for n in nodes],
        nodes=nodes_of(layouts),
    )
    snapshot = build_snapshot(found, 0.0)
    return plan_writes(plan(snapshot, found.demands), found, snapshot), found


def test_new_pod_gets_a_conditional_layout_patch_and_a_reservation() -> None:
    writes, _ = writes_for([pod("seed", gpu=2, mem=8000)], [layout("n", rv="42")])
    (write,) = writes.layouts
    assert write.name == "n-gpu0"
    assert write.patch["metadata"] == {"resourceVersion": "42"}
    instances = write.patch["spec"]["instances"]
    assert [i["profile"] for i in instances] == ["1g.10gb", "1g.10gb"]
    (pod_write,) = writes.pods
    assert pod_write.key == "default/seed"
    assert pod_write.patch["metadata"]["resourceVersion"] == "5"
    value = pod_write.patch["metadata"]["annotations"][ANNOTATION_RESERVATION]
    reserved = parse_reservation(value)
    assert reserved is not None
    assert reserved == pod_write.reservation
    assert [d.profile for d in reserved.devices] == ["1g.10gb", "1g.10gb"]
    assert {(i["placement"]["start"]) for i in instances} == {
        d.placement.start for d in reserved.devices if d.placement
    }
    assert "n: main gets 1g.10gb@" in planned_message(reserved)
    assert not writes.unplaceable


def test_reserved_pod_that_still_fits_writes_nothing() -> None:
    reserved = reservation("n", (0, "1g.10gb", 6, 1))
    writes, _ = writes_for(
        [pod("p", reserved=reserved)], [layout("n", spec=[("1g.10gb", 6, 1)], status=[])]
    )
    assert writes.layouts == []
    assert writes.pods == []


def test_existing_free_instance_is_reserved_without_a_layout_change() -> None:
    writes, _ = writes_for([pod("p")], [layout("n", spec=[("1g.10gb", 6, 1)])])
    assert writes.layouts == []
    (pod_write,) = writes.pods
    assert pod_write.reservation is not None
    (device,) = pod_write.reservation.devices
    assert (device.profile, device.placement and device.placement.start) == ("1g.10gb", 6)


def test_unplaceable_pod_gets_a_reason_and_loses_a_stale_reservation() -> None:
    stale = reservation("n", (0, "1g.10gb", 6, 1))
    # The pod now asks far more than its old reservation serves, and more than any GPU.
    writes, _ = writes_for([pod("p", mem=200000, reserved=stale)], [layout("n")])
    assert "200000 MiB" in writes.unplaceable["default/p"]
    (pod_write,) = writes.pods
    assert pod_write.reservation is None
    assert pod_write.patch["metadata"]["annotations"] == {ANNOTATION_RESERVATION: None}


def test_invalid_pod_is_reported_not_planned() -> None:
    writes, _ = writes_for([pod("bad", mem=-1)], [layout("n")])
    assert writes.unplaceable["default/bad"].startswith("invalid GPU request: ")
    assert writes.pods == []


def test_gated_pod_without_devices_is_only_ungated() -> None:
    body = pod("cpu-only", gpu=0, mem=None)
    writes, _ = writes_for([body], [layout("n")])
    assert writes.ungate == ["default/cpu-only"]


def test_mig_switch_is_part_of_the_layout_patch() -> None:
    writes, _ = writes_for([pod("p")], [layout("n", mig=False)])
    (write,) = writes.layouts
    assert write.patch["spec"]["migEnabled"] is True
    assert write.mig_enabled is True
    assert "MIG mode on" in layout_change_message(write)


def test_layout_change_names_the_pods_of_its_own_gpu() -> None:
    # Both GPUs get the same new instance (7g.80gb@0:8), each for another pod: each
    # LayoutChanged message names the pod reserved on that GPU, and only that one.
    writes, _ = writes_for(
        [pod("p", mem=80000), pod("q", mem=80000)], [layout("n", 0), layout("n", 1)]
    )
    on_gpu = {w.reservation.devices[0].gpu_index: w.key for w in writes.pods if w.reservation}
    assert sorted(on_gpu.values()) == ["default/p", "default/q"]
    assert len(writes.layouts) == 2
    for write in writes.layouts:
        assert write.for_pods == (on_gpu[write.gpu[1]],)
        message = layout_change_message(write)
        assert message == f"instances none -> 7g.80gb@0:8; for {on_gpu[write.gpu[1]]}"


P = Placement


@pytest.mark.parametrize(
    ("busy", "after", "dropped"),
    [
        pytest.param([("3g.40gb", P(0, 4))], [PlacedInstance("3g.40gb", P(0, 4))], [], id="kept"),
        pytest.param(
            [("3g.40gb", P(0, 4))], [PlacedInstance("3G.40GB", P(0, 4))], [], id="case-insensitive"
        ),
        pytest.param(
            [("3g.40gb", P(0, 4))],
            [PlacedInstance("3g.40gb", P(4, 4))],
            [("3g.40gb", P(0, 4))],
            id="moved-counts-as-dropped",
        ),
        pytest.param([("1g.10gb", P(6, 1))], [], [("1g.10gb", P(6, 1))], id="dropped"),
    ],
)
def test_dropped_busy(
    busy: list[tuple[str, Placement]],
    after: list[PlacedInstance],
    dropped: list[tuple[str, Placement]],
) -> None:
    assert dropped_busy(busy, after) == dropped


@pytest.mark.parametrize(
    ("previous", "current", "events", "memory"),
    [
        pytest.param({}, {"a": "r1"}, {"a": "r1"}, {"a": "r1"}, id="first-reason-is-posted"),
        pytest.param({"a": "r1"}, {"a": "r1"}, {}, {"a": "r1"}, id="same-reason-not-repeated"),
        pytest.param({"a": "r1"}, {"a": "r2"}, {"a": "r2"}, {"a": "r2"}, id="new-reason-posted"),
        pytest.param({"a": "r1"}, {}, {}, {}, id="placed-pod-is-forgotten"),
    ],
)
def test_unschedulable_events(
    previous: dict[str, str],
    current: dict[str, str],
    events: dict[str, str],
    memory: dict[str, str],
) -> None:
    assert unschedulable_events(previous, current) == (events, memory)


# ------------------------------------------------------------------------- properties

MODEL = "A100-SXM4-80GB"


@cache
def a100_layouts() -> list[tuple[PlacedInstance, ...]]:
    model = get_model(MODEL)
    assert model is not None
    return [lay for lay in valid_layouts(model.table) if lay]


@st.composite
def clusters(draw: Any) -> tuple[list[JsonDict], list[JsonDict], set[tuple[int, int]]]:
    """Pods and layouts of one MIG node with 1-2 A100s; and the (gpu, start) of every
    instance in use (by a process or an allocated pod)."""
    layouts: list[JsonDict] = []
    pods: list[JsonDict] = []
    in_use: set[tuple[int, int]] = set()
    for index in range(draw(st.integers(1, 2))):
        chosen = draw(st.sampled_from(a100_layouts()))
        instances = [(p.profile, p.placement.start, p.placement.size) for p in chosen]
        holders: dict[int, str | None] = {}
        for profile, start, size in instances:
            role = draw(st.sampled_from(["free", "process", "allocated", "reserved"]))
            device = (index, profile, start, size)
            name = f"p{index}-{start}"
            if role == "process":
                holders[start] = None
                in_use.add((index, start))
            elif role == "allocated":
                holders[start] = f"default/{name}"
                in_use.add((index, start))
                pods.append(pod(name, gated=False, allocated=allocation("n", device)))
            elif role == "reserved":
                # A small pod: its reservation keeps serving it.
                pods.append(pod(name, mem=4000, reserved=reservation("n", device)))
        layouts.append(layout("n", index, spec=instances, in_use=holders))
    for k in range(draw(st.integers(0, 4))):
        gpus = draw(st.integers(1, 2))
        memory = draw(st.sampled_from([4000, 9000, 19000, 40000, 70000]))
        pods.append(pod(f"new-{k}", gpu=gpus, mem=memory))
    return pods, layouts, in_use


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_writes_never_touch_busy_instances(
    cluster: tuple[list[JsonDict], list[JsonDict], set[tuple[int, int]]],
) -> None:
    pods, layouts, in_use = cluster
    writes, found = writes_for(pods, layouts)
    assert writes.skipped == []
    kept = {}  # (gpu, start) -> pod, for reservations that still hold
    for waiting in found.waiting:
        if waiting.reservation is not None:
            for d in waiting.reservation.devices:
                assert d.placement is not None
                kept[(d.gpu_index, d.placement.start)] = waiting.key
    busy = in_use | set(kept)
    # A spec patch never drops (or moves) an instance in use or reserved.
    for write in writes.layouts:
        after = {(p.placement.start, p.profile) for p in write.after}
        before = {p.placement.start: p.profile for p in write.before}
        for gpu, start in busy:
            if gpu == write.gpu[1]:
                assert (start, before[start]) in after
    # A new reservation never points at an instance in use or reserved for another pod.
    given_out: set[tuple[int, int]] = set()
    for pod_write in writes.pods:
        if pod_write.reservation is None:
            continue
        for d in pod_write.reservation.devices:
            if d.placement is None:
                continue
            where = (d.gpu_index, d.placement.start)
            assert where not in in_use
            assert kept.get(where, pod_write.key) == pod_write.key
            assert where not in given_out
            given_out.add(where)
    json.dumps([w.patch for w in writes.layouts])  # the patches are plain JSON


def test_plan_assignment_is_reused_for_kept_reservations() -> None:
    reserved = reservation("n", (0, "3g.40gb", 0, 4))
    found = cluster_state(
        pods=[pod("p", mem=30000, reserved=reserved)],
        layouts=[layout("n", spec=[("3g.40gb", 0, 4)])],
        nodeconfigs=[nodeconfig("c", node_name="n")],
        nodes=nodes_of([layout("n")]),
    )
    result = plan(build_snapshot(found, 0.0), found.demands)
    assigned = result.pods["default/p"]
    assert isinstance(assigned, Assignment)
    assert assigned.reused
