"""Released pods whose Node was deleted before they were bound: which are replaced, when,
and what a bare one is told."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migweaver.core.operator.pod_condition import condition_patch
from migweaver.core.operator.vanished import (
    already_told,
    due_for_action,
    stranded_pods,
    stranded_since,
    vanished_condition,
)
from tests.unit.operator_helpers import allocation, pod

JsonDict = dict[str, Any]
RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-7d9",
    "uid": "rs-uid",
    "controller": True,
}


ONE_G = allocation("gone", (0, "1g.10gb", 6, 1))


def released(
    name: str = "p", node: str = "gone", **changes: Callable[[JsonDict], None]
) -> JsonDict:
    body = pod(name, gated=False, allocated=allocation(node, (0, "1g.10gb", 6, 1)))
    for change in changes.values():
        change(body)
    return body


def bound(body: JsonDict) -> None:
    body["spec"]["nodeName"] = "gone"


def owned(body: JsonDict) -> None:
    body["metadata"]["ownerReferences"] = [RS_OWNER]


def owner_not_controller(body: JsonDict) -> None:
    body["metadata"]["ownerReferences"] = [{**RS_OWNER, "controller": False}]


def forged_uid(body: JsonDict) -> None:
    body["metadata"]["uid"] = "another-uid"


@pytest.mark.parametrize(
    ("body", "nodes", "controller"),
    [
        pytest.param(released(owner=owned), {"n1"}, "ReplicaSet/web-7d9", id="owned-node-deleted"),
        pytest.param(released(), {"n1"}, None, id="bare-node-deleted"),
        pytest.param(
            released(owner=owner_not_controller), {"n1"}, None, id="owner-without-controller-flag"
        ),
    ],
)
def test_a_pod_released_to_a_deleted_node_and_unbound_is_stranded(
    body: JsonDict, nodes: set[str], controller: str | None
) -> None:
    found = stranded_pods([body], nodes)
    assert list(found) == ["default/p"]
    assert found["default/p"].node == "gone"
    assert found["default/p"].controller == controller
    assert found["default/p"].evict is (controller is not None)


@pytest.mark.parametrize(
    ("body", "nodes"),
    [
        pytest.param(released(), {"gone"}, id="node-exists"),
        pytest.param(released(bound=bound), set[str](), id="already-bound"),
        pytest.param(pod("p", allocated=ONE_G), set[str](), id="gated"),
        pytest.param(pod("p", gated=False), set[str](), id="no-allocation"),
        pytest.param(released(uid=forged_uid), set[str](), id="allocation-of-another-pod"),
        pytest.param(
            pod("p", gated=False, deleting=True, allocated=ONE_G),
            set[str](),
            id="being-deleted",
        ),
        pytest.param(
            pod("p", gated=False, phase="Failed", allocated=ONE_G),
            set[str](),
            id="ended",
        ),
    ],
)
def test_other_pods_are_never_stranded(body: JsonDict, nodes: set[str]) -> None:
    assert stranded_pods([body], nodes) == {}


@pytest.mark.parametrize(
    ("first_seen", "now", "due", "wait"),
    [
        pytest.param(None, 100.0, [], 30.0, id="just-seen-waits-the-grace"),
        pytest.param(90.0, 100.0, [], 20.0, id="within-grace"),
        pytest.param(70.0, 100.0, ["default/p"], None, id="grace-over"),
    ],
)
def test_a_stranded_pod_is_acted_on_only_after_the_grace_period(
    first_seen: float | None, now: float, due: list[str], wait: float | None
) -> None:
    stranded = stranded_pods([released()], set())
    previous = {} if first_seen is None else {"default/p": first_seen}
    since = stranded_since(previous, stranded, now)
    acted, left = due_for_action(stranded, since, now, grace_s=30.0)
    assert [p.key for p in acted] == due
    assert left == wait


def test_a_pod_whose_node_came_back_starts_a_new_grace_period() -> None:
    since = stranded_since({"default/p": 10.0}, stranded_pods([released()], {"gone"}), 50.0)
    assert since == {}
    assert stranded_since(since, stranded_pods([released()], set()), 60.0) == {"default/p": 60.0}


def test_a_bare_pod_is_told_what_to_do_once() -> None:
    body = released()
    (stranded,) = stranded_pods([body], set()).values()
    wanted = vanished_condition(stranded)
    assert wanted.reason == "NodeVanished"
    assert wanted.status == "False"
    assert "gone, which no longer exists" in wanted.message
    assert wanted.message.endswith("delete it and create it again")
    assert not already_told(stranded)
    patch = condition_patch(body, wanted, "2024-01-01T00:00:00Z")
    assert patch is not None
    body["status"]["conditions"] = patch["status"]["conditions"]
    (again,) = stranded_pods([body], set()).values()
    assert already_told(again)


def test_an_owned_pods_message_names_its_controller() -> None:
    (stranded,) = stranded_pods([released(owner=owned)], set()).values()
    assert vanished_condition(stranded).message.endswith(
        "evicted so that its controller ReplicaSet/web-7d9 re-creates it"
    )
