"""Releasing a reserved pod: when its devices are Ready, and the one patch that frees it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migweaver.core.operator.release import (
    NotReady,
    leave_patch,
    ready_allocation,
    release_patch,
    ungate_patch,
)
from migweaver.core.operator.state import cluster_state, instance_owners
from migweaver.core.resources.allocation import Allocation, parse_allocation
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_ERROR,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
    ANNOTATION_RESERVATION,
)
from tests.unit.operator_helpers import (
    allocation,
    gpu_uuid,
    hami_reservation,
    layout,
    mig_uuid,
    nodeconfig,
    pod,
    reservation,
)

JsonDict = dict[str, Any]
ONE_G = reservation("n", (0, "1g.10gb", 6, 1))


def decide(layouts: list[JsonDict], pods: list[JsonDict] = ()) -> Allocation | NotReady:  # type: ignore[assignment]
    body = pod("p", reserved=ONE_G)
    state = cluster_state(
        pods=[body, *pods],
        layouts=layouts,
        nodeconfigs=[nodeconfig("c", node_name="n")],
        nodes=[],
    )
    return ready_allocation("default/p", ONE_G, state, uid="uid-p")


def test_ready_when_the_instance_exists_with_a_mig_uuid() -> None:
    result = decide([layout("n", spec=[("1g.10gb", 6, 1)])])
    assert isinstance(result, Allocation)
    (device,) = result.devices
    assert device.mig_uuid == mig_uuid("n", 0, 6)
    assert device.gpu_uuid == gpu_uuid("n")
    assert (device.profile, device.memory_mib, device.cores) == ("1g.10gb", 9728, 14)
    assert result.node == "n"


def _no_uuid() -> JsonDict:
    body = layout("n", spec=[("1g.10gb", 6, 1)])
    del body["status"]["instances"][0]["uuid"]
    return body


def _other_gpu() -> JsonDict:
    body = layout("n", spec=[("1g.10gb", 6, 1)])
    body["spec"]["gpuUUID"] = "GPU-other"
    return body


@pytest.mark.parametrize(
    ("layouts", "pods", "reason"),
    [
        pytest.param([], [], "n/gpu0 has no MigLayout", id="no-layout"),
        pytest.param([_other_gpu()], [], "is now GPU GPU-other", id="gpu-replaced"),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], generation=2, observed=1)],
            [],
            "still applying",
            id="spec-not-observed-yet",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], observed=None)],
            [],
            "still applying",
            id="no-status-yet",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], status=[])],
            [],
            "does not exist yet",
            id="instance-not-created-yet",
        ),
        pytest.param([_no_uuid()], [], "does not exist yet", id="no-compute-instance-yet"),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], in_use={6: "default/thief"})],
            [],
            "held by default/thief",
            id="held-by-another-pod",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], in_use={6: None})],
            [],
            "in use by a process",
            id="in-use-by-a-process",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], mig=False)],
            [],
            "MIG mode on yet",
            id="mig-mode-off",
        ),
    ],
)
def test_not_ready(layouts: list[JsonDict], pods: list[JsonDict], reason: str) -> None:
    result = decide(layouts, pods)
    assert isinstance(result, NotReady), result
    assert reason in result.reason


def test_instance_already_counted_for_this_pod_is_ready() -> None:
    result = decide([layout("n", spec=[("1g.10gb", 6, 1)], in_use={6: "default/p"})])
    assert isinstance(result, Allocation)


def test_hami_core_share_waits_for_mig_off() -> None:
    share = hami_reservation("n", 0, 4000, 30)
    state = cluster_state(pods=[], layouts=[layout("n", mig=True)], nodeconfigs=[], nodes=[])
    waiting = ready_allocation("default/p", share, state, uid="uid-p")
    assert isinstance(waiting, NotReady)
    assert "MIG mode on" in waiting.reason
    state = cluster_state(pods=[], layouts=[layout("n", mig=False)], nodeconfigs=[], nodes=[])
    ready = ready_allocation("default/p", share, state, uid="uid-p")
    assert isinstance(ready, Allocation)
    (device,) = ready.devices
    assert (device.mode, device.mig_uuid, device.memory_mib, device.cores) == (
        "hami-core",
        None,
        4000,
        30,
    )


@pytest.mark.parametrize(
    ("extra", "gates"),
    [
        pytest.param((), None, id="only-gate-removed-entirely"),
        pytest.param(
            ("quota.example.com/wait",), [{"name": "quota.example.com/wait"}], id="other-gates-kept"
        ),
    ],
)
def test_release_patch(extra: tuple[str, ...], gates: list[JsonDict] | None) -> None:
    body = pod("p", reserved=ONE_G, extra_gates=extra, rv="77")
    granted = allocation("n", (0, "1g.10gb", 6, 1))
    patch = release_patch(body, granted, "n-host", 1700000000)
    assert patch["metadata"]["resourceVersion"] == "77"
    annotations = patch["metadata"]["annotations"]
    assert parse_allocation(annotations[ANNOTATION_ALLOCATION]) == granted
    assert annotations[ANNOTATION_BIND_PHASE] == "allocating"
    assert annotations[ANNOTATION_BIND_TIME] == "1700000000"
    assert annotations[ANNOTATION_BIND_ERROR] is None
    assert annotations[ANNOTATION_RESERVATION] is None
    assert patch["spec"] == {
        "nodeSelector": {"kubernetes.io/hostname": "n-host"},
        "schedulingGates": gates,
    }


def test_ungate_patch_removes_only_the_gate() -> None:
    body = pod("p", gpu=0, extra_gates=("x.io/y",), rv="9")
    assert ungate_patch(body) == {
        "metadata": {"resourceVersion": "9"},
        "spec": {"schedulingGates": [{"name": "x.io/y"}]},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            pod("p", gpu=1, rv="3"),
            {"metadata": {"resourceVersion": "3"}, "spec": {"schedulingGates": None}},
            id="waiting-pod",
        ),
        pytest.param(
            pod("p", gpu=1, extra_gates=("x.io/y",), rv="4"),
            {
                "metadata": {"resourceVersion": "4"},
                "spec": {"schedulingGates": [{"name": "x.io/y"}]},
            },
            id="another-gate-stays",
        ),
        pytest.param(
            pod("p", reserved=ONE_G, rv="5"),
            {
                "metadata": {"resourceVersion": "5", "annotations": {ANNOTATION_RESERVATION: None}},
                "spec": {"schedulingGates": None},
            },
            id="reservation-goes-with-the-gate",
        ),
    ],
)
def test_leave_patch_hands_the_pod_to_the_scheduler(body: JsonDict, expected: JsonDict) -> None:
    # Uninstall (`migweaver release-gates`): no nodeSelector, no allocation is written;
    # the stock scheduler alone places the pod.
    assert leave_patch(body) == expected


def test_instance_reserved_twice_is_released_to_neither_pod() -> None:
    # Two reservations name one instance: a forged annotation (or a hand-over gone wrong).
    # Pod names are the tenant's choice, so neither wins: both are planned afresh.
    twice = [pod("a", reserved=ONE_G), pod("b", reserved=ONE_G)]
    state = cluster_state(
        pods=twice,
        layouts=[layout("n", spec=[("1g.10gb", 6, 1)])],
        nodeconfigs=[nodeconfig("c", node_name="n")],
        nodes=[],
    )
    assert [w.reservation for w in state.waiting] == [None, None]
    assert state.ignored_reservations == {
        "default/a": "names the instance at 6:1 of n/gpu0, as default/b",
        "default/b": "names the instance at 6:1 of n/gpu0, as default/a",
    }


def test_instance_allocated_to_a_released_pod_is_not_released_again() -> None:
    released = pod("z-running", gated=False, allocated=allocation("n", (0, "1g.10gb", 6, 1)))
    result = decide([layout("n", spec=[("1g.10gb", 6, 1)])], [released])
    assert isinstance(result, NotReady)
    assert "belongs to default/z-running" in result.reason


@st.composite
def crowded(draw: Any) -> list[JsonDict]:
    """Pods that reserve or hold instances of one fully carved A100, overlapping at will
    (two replicas during a hand-over, a person's edits)."""
    pods = []
    for k in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, 6))
        device = (0, "1g.10gb", start, 1)
        if draw(st.booleans()):
            pods.append(pod(f"r{k}", reserved=reservation("n", device)))
        else:
            pods.append(pod(f"a{k}", gated=False, allocated=allocation("n", device)))
    return pods


@given(crowded())
def test_no_instance_is_ever_released_to_two_pods(pods: list[JsonDict]) -> None:
    carved = [("1g.10gb", s, 1) for s in range(7)]
    state = cluster_state(
        pods=pods,
        layouts=[layout("n", spec=carved)],
        nodeconfigs=[nodeconfig("c", node_name="n")],
        nodes=[],
    )
    owners = instance_owners(state)
    handed = [d.mig_uuid for a in state.allocations.values() for d in a.devices]
    holders = {d.mig_uuid: key for key, a in state.allocations.items() for d in a.devices}
    for waiting in state.waiting:
        if waiting.reservation is None:
            continue  # contested: planned afresh, never released
        result = ready_allocation(waiting.key, waiting.reservation, state, owners, uid="u")
        if isinstance(result, Allocation):
            for device in result.devices:
                assert device.mig_uuid not in holders, "given to a pod that already has it"
                handed.append(device.mig_uuid)
    # Allocations that already exist may overlap (that is the input); new ones never add
    # a second holder.
    new = handed[len([d for a in state.allocations.values() for d in a.devices]) :]
    assert len(new) == len(set(new))


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        pytest.param(
            hami_reservation("n", 0, 0),
            "container main: a hami-core share of 0 MiB (no memory limit)",
            id="share-without-memory-limit",
        ),
        pytest.param(
            hami_reservation("n", 0, 80000),
            "container main: a hami-core share of 80000 MiB, it asks 8000 MiB",
            id="share-larger-than-asked",
        ),
        pytest.param(
            reservation("n", (0, "1g.10gb", 6, 1), container="sidecar"),
            "reserves devices for containers sidecar; the pod's GPU containers are main",
            id="another-container",
        ),
        pytest.param(
            reservation("n", (0, "1g.10gb", 6, 1), (0, "1g.10gb", 5, 1)),
            "container main: 2 devices reserved, it asks 1",
            id="more-devices",
        ),
    ],
)
def test_a_reservation_that_does_not_fit_the_pods_demand_is_never_released(
    forged: Any, why: str
) -> None:
    # A tenant may create a pod with a reservation annotation of its own (without the
    # admission policy): the operator plans the pod afresh instead of releasing it.
    state = cluster_state(
        pods=[pod("p", mode=None, reserved=forged)],
        layouts=[layout("n", mig=False)],
        nodeconfigs=[],
        nodes=[],
    )
    (waiting,) = state.waiting
    assert waiting.reservation is None
    assert state.ignored_reservations == {"default/p": why}
