"""What the operator's health metrics show: waiting pods by reason, layout phases, shares."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.operator.health_rows import (
    WAITING_REASONS,
    LayoutRow,
    layout_rows,
    share_rows,
    waiting_rows,
)
from migweaver.core.operator.state import ClusterState, cluster_state
from migweaver.core.resources.allocation import AllocatedDevice, Allocation, ContainerAllocation
from migweaver.core.resources.api import PLACEMENT_CONDITION
from tests.unit.operator_helpers import gpu_uuid, layout, pod, reservation

JsonDict = dict[str, Any]
# 2024-01-01T00:10:00Z: ten minutes after the helpers' creation time.
NOW = 1704067800.0


def state(pods: list[JsonDict] = (), layouts: list[JsonDict] = ()) -> ClusterState:  # type: ignore[assignment]
    return cluster_state(pods=pods, layouts=layouts, nodeconfigs=[], nodes=[])


def with_condition(body: JsonDict, reason: str) -> JsonDict:
    body["status"]["conditions"] = [
        {"type": PLACEMENT_CONDITION, "status": "False", "reason": reason, "message": "why"}
    ]
    return body


def by_reason(rows: Any) -> dict[str, tuple[int, float]]:
    return {row.reason: (row.pods, row.longest_s) for row in rows}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(pod("new"), "Batching", id="no-plan-has-looked-at-it-yet"),
        pytest.param(
            with_condition(pod("big"), "MigUnschedulable"),
            "MigUnschedulable",
            id="the-planner-found-no-room",
        ),
        pytest.param(
            pod("r", reserved=reservation("n1", (0, "1g.10gb", 0, 1))),
            "MigPlanned",
            id="reserved-waits-for-its-instances",
        ),
        pytest.param(pod("bad", gpu=-1), "InvalidRequest", id="request-does-not-parse"),
    ],
)
def test_each_waiting_pod_is_counted_under_its_reason(body: JsonDict, reason: str) -> None:
    rows = by_reason(waiting_rows(state([body]), NOW))
    assert rows[reason] == (1, 600.0)
    assert all(rows[other] == (0, 0.0) for other in WAITING_REASONS if other != reason)


def test_every_reason_has_a_row_when_nothing_waits() -> None:
    assert by_reason(waiting_rows(state(), NOW)) == dict.fromkeys(WAITING_REASONS, (0, 0.0))


def test_longest_wait_is_the_oldest_pod_and_clock_skew_is_not_negative() -> None:
    old = pod("old", created="2024-01-01T00:00:00Z")
    young = pod("young", created="2024-01-01T00:09:00Z")
    future = pod("future", created="2024-01-01T01:00:00Z")
    rows = by_reason(waiting_rows(state([young, old]), NOW))
    assert rows["Batching"] == (2, 600.0)
    assert by_reason(waiting_rows(state([future]), NOW))["Batching"][1] <= 0.0


def failed(body: JsonDict) -> JsonDict:
    body["status"]["phase"] = "Failed"
    return body


@pytest.mark.parametrize(
    ("body", "phase", "converged"),
    [
        pytest.param(layout("n1"), "Ready", True, id="ready-for-its-generation"),
        pytest.param(layout("n1", generation=2), "Ready", False, id="ready-for-an-older-spec"),
        pytest.param(failed(layout("n1")), "Failed", False, id="failed"),
        pytest.param(layout("n1", observed=None), "Unknown", False, id="no-status-yet"),
    ],
)
def test_layout_phase_and_convergence(body: JsonDict, phase: str, converged: bool) -> None:
    assert layout_rows(state(layouts=[body])) == (LayoutRow("n1", 0, "n1-gpu0", phase, converged),)


def test_hami_core_gpu_shows_its_containers_and_their_memory() -> None:
    share = Allocation(
        node="h1",
        containers=[
            ContainerAllocation(
                name="main",
                devices=[
                    AllocatedDevice(
                        gpu_uuid=gpu_uuid("h1"), gpu_index=0, mode="hami-core", memory_mib=10000
                    )
                ],
            )
        ],
    )
    shared = [pod(f"p{i}", mode="hami-core", allocated=share, gated=False) for i in range(2)]
    rows = share_rows(state(shared, [layout("h1", mig=False)]))
    assert [(r.node, r.gpu_uuid, r.containers, r.memory_mib, r.total_mib) for r in rows] == [
        ("h1", gpu_uuid("h1"), 2, 20000, 81920)
    ]


def test_mig_gpus_have_no_share_rows() -> None:
    assert share_rows(state(layouts=[layout("m1", spec=[("1g.10gb", 0, 1)])])) == ()
