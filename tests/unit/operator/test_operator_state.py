"""The operator's state rebuilt from API objects alone, and the planner's snapshot of it."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.operator.state import (
    ClusterState,
    allocated_rows,
    build_snapshot,
    cluster_state,
    concerns_operator,
    pod_trigger,
    wants_plan,
)
from migweaver.core.planning.snapshot import GpuState, InstanceState, Share
from migweaver.core.resources.models import FilterDevices
from migweaver.core.resources.requests import InvalidRequest
from tests.unit.operator_helpers import (
    allocation,
    gpu_uuid,
    hami_reservation,
    layout,
    node,
    nodeconfig,
    nodes_of,
    pod,
    reservation,
)

JsonDict = dict[str, Any]


def state(
    pods: list[JsonDict] = (),  # type: ignore[assignment]
    layouts: list[JsonDict] = (),  # type: ignore[assignment]
    configs: list[JsonDict] = (),  # type: ignore[assignment]
    nodes: list[JsonDict] | None = None,
) -> ClusterState:
    """The state; without `nodes`, every layout's Node exists."""
    if nodes is None:
        nodes = nodes_of(list(layouts))
    return cluster_state(pods=pods, layouts=layouts, nodeconfigs=configs, nodes=nodes)


def gpu(snapshot_state: ClusterState, node_name: str, index: int = 0) -> GpuState:
    for found in build_snapshot(snapshot_state, 0.0).gpus():
        if found.key == (node_name, index):
            return found
    raise AssertionError(f"{node_name}/gpu{index} is not in the snapshot")


# ------------------------------------------------------------------------- which pods


@pytest.mark.parametrize(
    ("body", "waiting", "allocated"),
    [
        pytest.param(pod("p"), True, False, id="gated-pod-waits"),
        pytest.param(pod("p", deleting=True), False, False, id="gated-pod-being-deleted-ignored"),
        pytest.param(pod("p", phase="Failed"), False, False, id="gated-pod-that-ended-ignored"),
        pytest.param(
            pod("p", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1))),
            False,
            True,
            id="released-pod-holds-its-allocation",
        ),
        pytest.param(
            pod(
                "p",
                gated=False,
                allocated=allocation("n", (0, "1g.10gb", 6, 1)),
                phase="Succeeded",
            ),
            False,
            False,
            id="ended-pod-holds-nothing",
        ),
        pytest.param(
            pod(
                "p",
                gated=False,
                allocated=allocation("n", (0, "1g.10gb", 6, 1)),
                bind_phase="failed",
            ),
            False,
            False,
            id="pod-the-kubelet-refused-holds-nothing",
        ),
        pytest.param(
            pod("p", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1)), deleting=True),
            False,
            True,
            id="released-pod-being-deleted-still-holds",
        ),
        pytest.param(pod("p", gated=False), False, False, id="ordinary-pod-ignored"),
    ],
)
def test_which_pods_count(body: JsonDict, waiting: bool, allocated: bool) -> None:
    found = state(pods=[body])
    assert bool(found.waiting) is waiting
    assert bool(found.allocations) is allocated


def test_invalid_gated_pod_waits_with_its_errors() -> None:
    found = state(pods=[pod("bad", mem=-1)])
    (waiting,) = found.waiting
    assert isinstance(waiting.demand, InvalidRequest)
    assert found.demands == []


def test_reservation_annotation_is_read_back() -> None:
    reserved = reservation("n", (0, "1g.10gb", 6, 1))
    found = state(pods=[pod("p", reserved=reserved)])
    assert found.reservations == {"default/p": reserved}


@pytest.mark.parametrize(
    ("event", "body", "trigger"),
    [
        pytest.param("ADDED", pod("p"), "plan", id="new-gated-pod-plans"),
        pytest.param(None, pod("p"), "plan", id="listed-gated-pod-plans"),
        pytest.param(
            "MODIFIED",
            pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1))),
            "round",
            id="reserved-pod-asks-a-round",
        ),
        pytest.param("DELETED", pod("p"), "round", id="deleted-gated-pod-frees-room"),
        pytest.param(
            "MODIFIED",
            pod("p", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1))),
            None,
            id="running-pod-status-update-ignored",
        ),
        pytest.param(
            "MODIFIED",
            pod(
                "p",
                gated=False,
                allocated=allocation("n", (0, "1g.10gb", 6, 1)),
                phase="Succeeded",
            ),
            "round",
            id="pod-that-ended-frees-room",
        ),
        pytest.param(
            "MODIFIED",
            pod("p", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1)), deleting=True),
            "round",
            id="pod-being-deleted",
        ),
        pytest.param(
            "MODIFIED",
            pod(
                "p",
                gated=False,
                allocated=allocation("n", (0, "1g.10gb", 6, 1)),
                bind_phase="failed",
            ),
            "round",
            id="pod-refused-by-the-kubelet",
        ),
        pytest.param("DELETED", pod("p", gated=False), None, id="unrelated-pod-deleted"),
    ],
)
def test_pod_trigger(event: str | None, body: JsonDict, trigger: str | None) -> None:
    assert pod_trigger(event, body) == trigger


def test_wants_plan_and_concerns() -> None:
    assert wants_plan(pod("p"))
    assert not wants_plan(pod("p", deleting=True))
    assert not wants_plan(pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1))))
    assert concerns_operator(pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1))))
    assert not concerns_operator(pod("p", gated=False))
    assert not concerns_operator(pod("p", gated=False, extra_gates=("other.io/gate",)))


# ------------------------------------------------------------------------- snapshot


def test_reserved_spec_instance_is_busy_for_its_pod() -> None:
    found = state(
        pods=[pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1)))],
        layouts=[layout("n", spec=[("1g.10gb", 6, 1)], status=[])],
        configs=[nodeconfig("c", node_name="n")],
    )
    (instance,) = gpu(found, "n").instances
    assert instance == InstanceState("1g.10gb", instance.placement, None, False, "default/p")
    assert instance.busy


def test_allocated_instance_is_busy_before_the_agent_reports_it() -> None:
    found = state(
        pods=[pod("p", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1)))],
        layouts=[layout("n", spec=[("1g.10gb", 6, 1)])],
        configs=[nodeconfig("c", node_name="n")],
    )
    (instance,) = gpu(found, "n").instances
    assert instance.reserved_by == "default/p"


def test_reservation_for_another_gpu_uuid_is_ignored() -> None:
    moved = layout("n", spec=[("1g.10gb", 6, 1)])
    moved["spec"]["gpuUUID"] = "GPU-replaced"
    found = state(
        pods=[pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1)))],
        layouts=[moved],
        configs=[nodeconfig("c", node_name="n")],
    )
    (instance,) = gpu(found, "n").instances
    assert not instance.busy


def test_hami_core_shares_come_from_reservations_and_allocations() -> None:
    found = state(
        pods=[
            pod(
                "r",
                mode="hami-core",
                mem=4000,
                cores=20,
                reserved=hami_reservation("h", 0, 4000, 20),
            ),
        ],
        layouts=[layout("h", mig=False)],
    )
    assert gpu(found, "h").shares == (Share("default/r", 4000, 20),)
    assert gpu(found, "h").mode == "hami-core"  # no NodeConfig: HAMi's default


def test_filtered_gpu_is_not_in_the_snapshot() -> None:
    config = nodeconfig("c", node_name="n")
    config["spec"]["filterDevices"] = FilterDevices(index=[1]).to_api()
    found = state(layouts=[layout("n", 0), layout("n", 1)], configs=[config])
    keys = [g.key for g in build_snapshot(found, 0.0).gpus()]
    assert keys == [("n", 0)]


def test_node_mode_follows_selector_and_labels() -> None:
    found = state(
        layouts=[layout("a"), layout("b")],
        configs=[nodeconfig("pool", selector={"pool": "mig"})],
        nodes=[node("a", pool="mig"), node("b")],
    )
    assert found.mode("a") == "mig"
    assert found.mode("b") == "hami-core"
    assert found.settings["a"].source == "pool"


def test_invalid_layout_is_listed_not_fatal() -> None:
    broken = layout("n")
    broken["spec"]["gpuIndex"] = -1
    found = state(layouts=[broken, layout("m")])
    assert list(found.layouts) == ["m-gpu0"]
    # The reason names the field, as the operator's log line shows it.
    assert found.invalid_layouts["n-gpu0"].startswith("spec.gpuIndex: ")


def test_hostname_label_wins_over_node_name() -> None:
    found = state(nodes=[{"metadata": {"name": "n", "labels": {"kubernetes.io/hostname": "h"}}}])
    assert found.hostname("n") == "h"
    assert found.hostname("unknown") == "unknown"


def test_allocated_rows_sum_memory_per_node_and_mode() -> None:
    found = state(
        pods=[
            pod("a", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1))),
            pod("b", gated=False, allocated=allocation("n", (0, "1g.10gb", 5, 1))),
        ]
    )
    assert allocated_rows(found) == [("n", "mig", 2 * 9728)]
    assert gpu_uuid("n") == "GPU-n-0"


def test_node_facts_reach_the_snapshot() -> None:
    cordoned = node("a", zone="x")
    cordoned["spec"] = {
        "unschedulable": True,
        "taints": [{"key": "gpu", "value": "reserved", "effect": "NoSchedule"}],
    }
    not_ready = node("b")
    not_ready["status"] = {"conditions": [{"type": "Ready", "status": "Unknown"}]}
    found = state(layouts=[layout("a"), layout("b"), layout("c")], nodes=[cordoned, not_ready])
    by_name = {n.name: n for n in build_snapshot(found, 0.0).nodes}
    a, b = by_name["a"], by_name["b"]
    assert a.unschedulable
    assert a.ready
    assert a.labels["zone"] == "x"
    assert [str(t) for t in a.taints] == ["gpu=reserved:NoSchedule"]
    assert not b.unschedulable
    assert not b.ready
    # No Node object "c" (deleted, scaled down): its layout is left out and reported.
    assert "c" not in by_name
    assert found.without_node == {"c-gpu0": "c"}
    assert found.node_facts["a"].unschedulable


@pytest.mark.parametrize(
    "squatter",
    [
        pytest.param(
            pod(
                "cpu", gpu=0, mem=None, gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1))
            ),
            id="cpu-pod-with-an-allocation",
        ),
        pytest.param(
            pod(
                "copied",
                gated=False,
                allocated=allocation("n", (0, "1g.10gb", 6, 1)).model_copy(
                    update={"pod_uid": "uid-someone-else"}
                ),
            ),
            id="allocation-of-another-pod",
        ),
    ],
)
def test_a_pod_pins_nothing_through_an_allocation_not_bound_to_it(squatter: JsonDict) -> None:
    found = state(
        pods=[squatter],
        layouts=[layout("n", spec=[("1g.10gb", 6, 1)], status=[("1g.10gb", 6, 1)])],
        configs=[nodeconfig("c", node_name="n")],
    )
    assert found.allocations == {}
    (instance,) = gpu(found, "n").instances
    assert not instance.busy  # the planner may give it to a pod that asks
