"""NodeConfig -> `spec.migEnabled` of the GPUs it selects, and what its status reports."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.operator.nodeconfig_actions import (
    mode_changes,
    nodeconfig_reports,
    status_patch,
)
from migweaver.core.operator.state import ClusterState, cluster_state
from migweaver.core.resources.models import FilterDevices
from tests.unit.operator_helpers import (
    allocation,
    hami_reservation,
    layout,
    nodeconfig,
    pod,
    reservation,
)

JsonDict = dict[str, Any]


def state(
    layouts: list[JsonDict],
    configs: list[JsonDict],
    pods: list[JsonDict] = (),  # type: ignore[assignment]
) -> ClusterState:
    return cluster_state(pods=pods, layouts=layouts, nodeconfigs=configs, nodes=[])


@pytest.mark.parametrize(
    ("layouts", "configs", "pods", "changed", "waiting"),
    [
        pytest.param(
            [layout("n", mig=False)],
            [nodeconfig("c", node_name="n", mode="mig")],
            [],
            {"n-gpu0": {"migEnabled": True}},
            {},
            id="mig-node-turns-mig-on",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)])],
            [nodeconfig("c", node_name="n", mode="hami-core")],
            [],
            {"n-gpu0": {"migEnabled": False, "instances": []}},
            {},
            id="idle-gpu-turns-mig-off-and-drops-idle-instances",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)])],
            [],
            [],
            {"n-gpu0": {"migEnabled": False, "instances": []}},
            {},
            id="no-nodeconfig-means-hami-core",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], in_use={6: "default/train"})],
            [nodeconfig("c", node_name="n", mode="hami-core")],
            [],
            {},
            {("n", 0): "1g.10gb@6:1 used by default/train"},
            id="instance-in-use-keeps-mig",
        ),
        pytest.param(
            [layout("n", spec=[("1g.10gb", 6, 1)], status=[])],
            [nodeconfig("c", node_name="n", mode="hami-core")],
            [pod("p", reserved=reservation("n", (0, "1g.10gb", 6, 1)))],
            {},
            {("n", 0): "1g.10gb@6:1 reserved for default/p"},
            id="reserved-instance-keeps-mig",
        ),
        pytest.param(
            [layout("n", mig=False)],
            [nodeconfig("c", node_name="n", mode="mig")],
            [pod("s", mode="hami-core", mem=4000, reserved=hami_reservation("n", 0, 4000))],
            {},
            {("n", 0): "a hami-core share of default/s"},
            id="hami-core-share-keeps-mig-off",
        ),
        pytest.param(
            [layout("n", mig=False, policy="static")],
            [nodeconfig("c", node_name="n", mode="mig")],
            [],
            {},
            {},
            id="static-layout-left-alone",
        ),
        pytest.param(
            [layout("n", mig=True)],
            [nodeconfig("c", node_name="n", mode="mig")],
            [],
            {},
            {},
            id="already-in-mode",
        ),
    ],
)
def test_mode_changes(
    layouts: list[JsonDict],
    configs: list[JsonDict],
    pods: list[JsonDict],
    changed: dict[str, JsonDict],
    waiting: dict[tuple[str, int], str],
) -> None:
    changes, blocked = mode_changes(state(layouts, configs, pods))
    assert {c.name: c.patch["spec"] for c in changes} == changed
    for change in changes:
        assert change.patch["metadata"] == {"resourceVersion": "10"}
    assert blocked == waiting


def test_filtered_gpu_is_left_alone() -> None:
    config = nodeconfig("c", node_name="n", mode="mig")
    config["spec"]["filterDevices"] = FilterDevices(index=[0]).to_api()
    changes, _ = mode_changes(state([layout("n", mig=False)], [config]))
    assert changes == []


def report_of(found: ClusterState, name: str) -> Any:
    _, waiting = mode_changes(found)
    return next(r for r in nodeconfig_reports(found, waiting) if r.name == name)


def test_reports() -> None:
    applied = report_of(state([layout("n")], [nodeconfig("c", node_name="n")]), "c")
    assert (applied.ready, applied.reason, applied.matched_nodes) == (True, "Applied", ("n",))

    switching = report_of(state([layout("n", mig=False)], [nodeconfig("c", node_name="n")]), "c")
    assert (switching.ready, switching.reason) == (False, "Switching")
    assert "n/gpu0" in switching.message

    busy = report_of(
        state(
            [layout("n", spec=[("1g.10gb", 6, 1)], in_use={6: None})],
            [nodeconfig("c", node_name="n", mode="hami-core")],
        ),
        "c",
    )
    assert (busy.ready, busy.reason) == (False, "GpusBusy")
    assert "used by a process" in busy.message

    both = [
        nodeconfig("pool", selector={}, mode="hami-core"),
        nodeconfig("exact", node_name="n", mode="mig"),
    ]
    lost = report_of(state([layout("n")], both), "pool")
    assert (lost.reason, lost.matched_nodes) == ("Conflict", ())
    assert "exact" in lost.message


def test_status_patch_only_when_something_changed() -> None:
    body = nodeconfig("c", node_name="n", generation=3)
    found = state([layout("n")], [body])
    report = report_of(found, "c")
    patch = status_patch(body, report, "2024-05-01T00:00:00Z")
    assert patch is not None
    status = patch["status"]
    assert status["matchedNodes"] == ["n"]
    assert status["observedGeneration"] == 3
    (condition,) = status["conditions"]
    assert condition["type"] == "Ready"
    assert condition["status"] == "True"
    assert condition["lastTransitionTime"] == "2024-05-01T00:00:00Z"
    body["status"] = status
    assert status_patch(body, report, "2024-05-02T00:00:00Z") is None
    assert allocation("n", (0, "1g.10gb", 6, 1)).node == "n"
