"""The pod condition `migweaver.io/Placement`: what to write, and when to write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.operator.plan_writes import plan_writes, planned_message
from migweaver.core.operator.pod_condition import (
    MAX_MESSAGE,
    PlacementCondition,
    condition_patch,
    current_condition,
    planned_condition,
    ready_condition,
    reasons_already_told,
    unplaceable_condition,
)
from migweaver.core.operator.state import build_snapshot, cluster_state
from migweaver.core.planning.planner import plan
from migweaver.core.resources.allocation import AllocatedDevice, Allocation, ContainerAllocation
from migweaver.core.resources.api import PLACEMENT_CONDITION
from migweaver.core.resources.requests import FieldError, InvalidRequest
from tests.unit.operator_helpers import allocation, layout, nodeconfig, pod, reservation

JsonDict = dict[str, Any]

NOW = "2026-01-02T03:04:05Z"
EARLIER = "2026-01-01T00:00:00Z"
SCHEDULED = {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
UNSCHEDULABLE = PlacementCondition("False", "MigUnschedulable", "no GPU has 200000 MiB")


def with_conditions(*conditions: JsonDict) -> JsonDict:
    body = pod("p")
    body["status"] = {"phase": "Pending", "conditions": list(conditions)}
    return body


def placement(status: str, reason: str, message: str, since: str = EARLIER) -> JsonDict:
    return {
        "type": PLACEMENT_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def written(wanted: PlacementCondition, since: str = NOW) -> JsonDict:
    """The patch that makes the condition say `wanted`, changed at `since`."""
    return {
        "status": {"conditions": [placement(wanted.status, wanted.reason, wanted.message, since)]}
    }


READY = ready_condition(allocation("node-a", (0, "1g.10gb", 6, 1)))
PLANNED = planned_condition("node-a: main gets 1g.10gb@6:1 on gpu0")


@pytest.mark.parametrize(
    ("existing", "wanted", "only_if_present", "expected"),
    [
        pytest.param(
            (), UNSCHEDULABLE, False, written(UNSCHEDULABLE), id="first-reason-is-written"
        ),
        pytest.param(
            (SCHEDULED,), UNSCHEDULABLE, False, written(UNSCHEDULABLE), id="beside-podscheduled"
        ),
        pytest.param(
            (SCHEDULED, placement("False", "MigUnschedulable", "no GPU has 200000 MiB")),
            UNSCHEDULABLE,
            False,
            None,
            id="same-reason-and-message-writes-nothing",
        ),
        pytest.param(
            (placement("False", "MigUnschedulable", "an older nearest miss"),),
            UNSCHEDULABLE,
            False,
            written(UNSCHEDULABLE, since=EARLIER),
            id="new-message-same-reason-keeps-transition-time",
        ),
        pytest.param(
            (placement("False", "InvalidRequest", "invalid GPU request: x"),),
            UNSCHEDULABLE,
            False,
            written(UNSCHEDULABLE),
            id="new-reason-moves-transition-time",
        ),
        pytest.param(
            (placement("False", "MigUnschedulable", "no GPU has 200000 MiB"),),
            READY,
            True,
            written(READY),
            id="ready-after-waiting-turns-true",
        ),
        pytest.param((), READY, True, None, id="ready-without-condition-writes-nothing"),
        pytest.param((SCHEDULED,), PLANNED, True, None, id="planned-without-condition-nothing"),
        pytest.param(
            (placement("False", "MigUnschedulable", "no GPU has 200000 MiB"),),
            PLANNED,
            True,
            written(PLANNED),
            id="planned-after-waiting-is-written",
        ),
        pytest.param(
            (placement("True", "MigReady", READY.message),),
            READY,
            True,
            None,
            id="ready-twice-writes-nothing",
        ),
        pytest.param(
            (placement("False", "MigUnschedulable", "x", since=""),),
            PlacementCondition("False", "MigUnschedulable", "y"),
            False,
            written(PlacementCondition("False", "MigUnschedulable", "y"), since=NOW),
            id="missing-transition-time-becomes-now",
        ),
    ],
)
def test_condition_patch(
    existing: tuple[JsonDict, ...],
    wanted: PlacementCondition,
    only_if_present: bool,
    expected: JsonDict | None,
) -> None:
    body = with_conditions(*existing)
    assert condition_patch(body, wanted, NOW, only_if_present=only_if_present) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(pod("p"), id="no-status"),
        pytest.param({"status": None}, id="null-status"),
        pytest.param({"status": {"conditions": None}}, id="null-conditions"),
        pytest.param({"status": {"conditions": ["junk", {"type": "Ready"}]}}, id="other-types"),
    ],
)
def test_no_current_condition(body: JsonDict) -> None:
    assert current_condition(body) is None
    assert condition_patch(body, READY, NOW, only_if_present=True) is None
    assert condition_patch(body, UNSCHEDULABLE, NOW) == written(UNSCHEDULABLE)


def test_the_patch_names_only_its_own_condition() -> None:
    """A strategic merge patch merges conditions by type: only ours is in the patch."""
    patch = condition_patch(with_conditions(SCHEDULED), UNSCHEDULABLE, NOW)
    assert patch is not None
    assert set(patch) == {"status"}
    assert set(patch["status"]) == {"conditions"}
    assert [c["type"] for c in patch["status"]["conditions"]] == [PLACEMENT_CONDITION]


def test_a_long_message_is_cut_as_an_events_is() -> None:
    long = PlacementCondition("False", "MigUnschedulable", "x" * (MAX_MESSAGE + 50))
    patch = condition_patch(with_conditions(), long, NOW)
    assert patch is not None
    assert len(patch["status"]["conditions"][0]["message"]) == MAX_MESSAGE
    # The cut message is what the pod then carries: nothing to write next time.
    again = with_conditions(*patch["status"]["conditions"])
    assert condition_patch(again, long, NOW) is None


def test_a_pod_waiting_every_round_is_written_once() -> None:
    body = with_conditions(SCHEDULED)
    patch = condition_patch(body, UNSCHEDULABLE, NOW)
    assert patch is not None
    body["status"]["conditions"].append(patch["status"]["conditions"][0])
    for later in ("2026-01-02T03:04:35Z", "2026-01-02T03:05:05Z"):
        assert condition_patch(body, UNSCHEDULABLE, later) is None


@pytest.mark.parametrize(
    ("demand", "reason"),
    [
        pytest.param(
            InvalidRequest("default/p", (FieldError("nvidia.com/gpumem", "-5", "negative"),)),
            "InvalidRequest",
            id="invalid-request",
        ),
        pytest.param(None, "MigUnschedulable", id="valid-request"),
    ],
)
def test_unplaceable_condition(demand: InvalidRequest | None, reason: str) -> None:
    state = cluster_state(pods=[pod("p")], layouts=[], nodeconfigs=[], nodes=[])
    (waiting,) = state.waiting
    found = unplaceable_condition(demand or waiting.demand, "the Event's text")
    assert found == PlacementCondition("False", reason, "the Event's text")


def test_invalid_request_condition_says_what_the_event_says() -> None:
    """A pod asking for `nvidia.com/gpumem: "-5"`: InvalidRequest, naming the field."""
    bad = pod("bad", mem=None)
    bad["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] = "-5"
    lay = layout("n")
    state = cluster_state(
        pods=[bad],
        layouts=[lay],
        nodeconfigs=[nodeconfig("n-c", node_name="n", mode="mig")],
        nodes=[],
    )
    snapshot = build_snapshot(state, 0.0)
    writes = plan_writes(plan(snapshot, state.demands), state, snapshot)
    (waiting,) = state.waiting
    found = unplaceable_condition(waiting.demand, writes.unplaceable[waiting.key])
    assert found.status == "False"
    assert found.reason == "InvalidRequest"
    assert found.message == writes.unplaceable[waiting.key]
    assert found.message.startswith("invalid GPU request: ")
    assert "nvidia.com/gpumem" in found.message
    assert "-5" in found.message


@pytest.mark.parametrize(
    ("alloc", "message"),
    [
        pytest.param(
            allocation("node-a", (0, "1g.10gb", 6, 1), (0, "1g.10gb", 5, 1)),
            "released to node-a: main gets 1g.10gb@6:1 on gpu0, 1g.10gb@5:1 on gpu0",
            id="two-mig-instances",
        ),
        pytest.param(
            Allocation(
                node="node-b",
                containers=[
                    ContainerAllocation(
                        name="main",
                        devices=[
                            AllocatedDevice(
                                gpu_uuid="GPU-1",
                                gpu_index=1,
                                mode="hami-core",
                                memory_mib=8000,
                                cores=30,
                            )
                        ],
                    ),
                ],
            ),
            "released to node-b: main gets a hami-core share of gpu1 (8000 MiB)",
            id="hami-core-share",
        ),
    ],
)
def test_ready_condition(alloc: Allocation, message: str) -> None:
    assert ready_condition(alloc) == PlacementCondition("True", "MigReady", message)


def test_planned_condition_carries_the_planned_events_text() -> None:
    reserved = reservation("node-a", (0, "1g.10gb", 6, 1))
    text = planned_message(reserved)
    found = planned_condition(text)
    assert (found.status, found.reason) == ("False", "MigPlanned")
    assert found.message.endswith(text)


@pytest.mark.parametrize(
    ("body", "told"),
    [
        pytest.param(with_conditions(SCHEDULED), None, id="no-placement-condition"),
        pytest.param(
            with_conditions(placement("False", "MigUnschedulable", "no room")),
            "no room",
            id="unschedulable-is-remembered",
        ),
        pytest.param(
            with_conditions(placement("False", "InvalidRequest", "gpumem: bad")),
            "gpumem: bad",
            id="invalid-request-is-remembered",
        ),
        pytest.param(
            with_conditions(placement("False", "MigPlanned", "waiting for ...")),
            None,
            id="planned-is-no-reason",
        ),
        pytest.param(with_conditions(placement("True", "MigReady", "released")), None, id="ready"),
    ],
)
def test_reasons_already_told_survive_a_restart(body: JsonDict, told: str | None) -> None:
    # A restarted operator posts a MigUnschedulable Event only when the reason differs
    # from what the pod's condition already says.
    assert reasons_already_told({"ns/p": body}) == ({} if told is None else {"ns/p": told})
