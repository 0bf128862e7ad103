"""The rows behind the operator's MIG metrics (migweaver.core.operator.metric_rows), as tables."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from migweaver.core.mig.profiles import Placement
from migweaver.core.operator.metric_rows import InstanceRow, MemoryTotal, metric_rows
from migweaver.core.resources.models import MigLayout
from tests import builders

# The seed's example (HAMi's dynamic-MIG docs, "Monitor MIG Instance"): two A100-40GB GPUs
# of node aio-node15, each split 3g.20gb x2; three of the four instances in use.
SEED_GPU0 = "GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313"
SEED_GPU1 = "GPU-30f90f49-43ab-0a78-bf5c-93ed41ef2da2"


@dataclass(frozen=True)
class Inst:
    """A status instance, in short."""

    profile: str
    start: int
    size: int
    in_use: bool = False
    pod: str | None = None
    uuid: str | None = None
    gi: int | None = None
    ci: int | None = None


def layout(
    node: str,
    index: int,
    uuid: str,
    instances: list[Inst] | None = None,
    *,
    memory: int | None = 40960,
    mode: str | None = "mig",
    mig_enabled: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """A MigLayout as the API returns it; `instances=None` means no status at all."""
    spec = [builders.placed(i.profile, i.start, i.size) for i in instances or []]
    doc = builders.layout(node, index, uuid=uuid, name=name, migEnabled=mig_enabled, instances=spec)
    if instances is None:
        return doc
    status: dict[str, Any] = {"instances": []}
    for i in instances:
        entry = builders.placed(i.profile, i.start, i.size, inUse=i.in_use)
        if i.pod is not None:
            entry["pod"] = i.pod
        if i.uuid is not None:
            entry["uuid"] = i.uuid
        if i.gi is not None:
            entry["gpuInstanceId"] = i.gi
        if i.ci is not None:
            entry["computeInstanceId"] = i.ci
        status["instances"].append(entry)
    if memory is not None:
        status["gpu"] = {"model": "NVIDIA A100-SXM4-40GB", "memoryMiB": memory, "migCapable": True}
    if mode is not None:
        status["mode"] = mode
    doc["status"] = status
    return doc


def seed_layouts() -> list[dict[str, Any]]:
    return [
        layout(
            "aio-node15",
            0,
            SEED_GPU0,
            [Inst("3g.20gb", 0, 4, in_use=True), Inst("3g.20gb", 4, 4)],
        ),
        layout(
            "aio-node15",
            1,
            SEED_GPU1,
            [Inst("3g.20gb", 0, 4, in_use=True), Inst("3g.20gb", 4, 4, in_use=True)],
        ),
    ]


def names_and_use(rows: tuple[InstanceRow, ...]) -> list[tuple[str, int, str, bool]]:
    return [(r.node, r.gpu_index, r.mig_name, r.in_use) for r in rows]


# --------------------------------------------------------------------------- instances


def test_seed_example_gives_the_seed_rows() -> None:
    rows = metric_rows(seed_layouts())
    assert rows.invalid == ()
    assert [
        (r.gpu_index, r.gpu_uuid, r.mig_name, r.node, int(r.in_use)) for r in rows.instances
    ] == [
        (0, SEED_GPU0, "3g.20gb-0", "aio-node15", 1),
        (0, SEED_GPU0, "3g.20gb-1", "aio-node15", 0),
        (1, SEED_GPU1, "3g.20gb-0", "aio-node15", 1),
        (1, SEED_GPU1, "3g.20gb-1", "aio-node15", 1),
    ]


NAMING_CASES = [
    pytest.param(
        [Inst("3g.20gb", 4, 4), Inst("3g.20gb", 0, 4)],
        ["3g.20gb-0@0", "3g.20gb-1@4"],
        id="numbered-in-placement-order-not-status-order",
    ),
    pytest.param(
        [
            Inst("1g.10gb", 6, 1),
            Inst("3g.40gb", 0, 4),
            Inst("1g.10gb", 4, 1),
            Inst("1g.10gb", 5, 1),
        ],
        ["3g.40gb-0@0", "1g.10gb-0@4", "1g.10gb-1@5", "1g.10gb-2@6"],
        id="each-profile-numbered-on-its-own",
    ),
    pytest.param(
        [Inst("1g.10gb", 0, 1), Inst("1g.10gb+me", 1, 1), Inst("1g.10gb", 2, 1)],
        ["1g.10gb-0@0", "1g.10gb+me-0@1", "1g.10gb-1@2"],
        id="media-extension-profile-is-a-profile-of-its-own",
    ),
    pytest.param(
        [Inst("2g.20gb", 0, 2), Inst("2g.20gb", 0, 2), Inst("2g.20gb", 2, 2)],
        ["2g.20gb-0@0", "2g.20gb-1@2"],
        id="duplicate-status-entry-shown-once",
    ),
    pytest.param([], [], id="mig-gpu-without-instances"),
]


@pytest.mark.parametrize(("instances", "expected"), NAMING_CASES)
def test_mig_names(instances: list[Inst], expected: list[str]) -> None:
    rows = metric_rows([layout("node-a", 0, "GPU-a", instances)])
    assert [f"{r.mig_name}@{r.placement.start}" for r in rows.instances] == expected


IN_USE_CASES = [
    pytest.param(Inst("1g.10gb", 0, 1), False, id="free"),
    pytest.param(Inst("1g.10gb", 0, 1, in_use=True), True, id="in-use"),
    pytest.param(Inst("1g.10gb", 0, 1, pod="ns/p"), True, id="allocated-to-a-pod"),
    pytest.param(Inst("1g.10gb", 0, 1, pod=""), False, id="empty-pod-is-no-pod"),
]


@pytest.mark.parametrize(("instance", "in_use"), IN_USE_CASES)
def test_in_use(instance: Inst, in_use: bool) -> None:
    (row,) = metric_rows([layout("node-a", 0, "GPU-a", [instance])]).instances
    assert row.in_use is in_use


def test_row_carries_the_status_identity() -> None:
    instance = Inst("2g.20gb", 2, 2, in_use=True, uuid="MIG-x", gi=4, ci=0)
    (row,) = metric_rows([layout("node-a", 3, "GPU-a", [instance])]).instances
    assert row == InstanceRow(
        node="node-a",
        gpu_index=3,
        gpu_uuid="GPU-a",
        mig_name="2g.20gb-0",
        profile="2g.20gb",
        placement=Placement(2, 2),
        in_use=True,
        mig_uuid="MIG-x",
        gpu_instance_id=4,
        compute_instance_id=0,
    )


def test_spec_instances_that_do_not_exist_yet_are_not_shown() -> None:
    doc = layout("node-a", 0, "GPU-a", [Inst("3g.40gb", 0, 4)])
    doc["spec"]["instances"].append({"profile": "3g.40gb", "placement": {"start": 4, "size": 4}})
    assert [r.placement.start for r in metric_rows([doc]).instances] == [0]


def test_layout_without_status_has_no_rows_and_no_total() -> None:
    rows = metric_rows([layout("node-a", 0, "GPU-a", None)])
    assert rows == type(rows)()


def test_rows_are_sorted_by_node_then_gpu_whatever_the_input_order() -> None:
    docs = [
        layout("node-b", 0, "GPU-b0", [Inst("7g.40gb", 0, 8)]),
        layout("node-a", 1, "GPU-a1", [Inst("7g.40gb", 0, 8)]),
        layout("node-a", 0, "GPU-a0", [Inst("7g.40gb", 0, 8)]),
    ]
    assert [(r.node, r.gpu_index) for r in metric_rows(docs).instances] == [
        ("node-a", 0),
        ("node-a", 1),
        ("node-b", 0),
    ]


def test_accepts_read_only_mappings_and_parsed_models() -> None:
    docs = seed_layouts()
    frozen = MappingProxyType(docs[0])
    parsed = MigLayout.from_api(docs[1])
    assert names_and_use(metric_rows([frozen, parsed]).instances) == names_and_use(
        metric_rows(docs).instances
    )


# ----------------------------------------------------------------------------- invalid


def _without_spec() -> dict[str, Any]:
    doc = layout("node-x", 0, "GPU-x", [])
    del doc["spec"]
    return doc


def _negative_index() -> dict[str, Any]:
    return layout("node-x", -1, "GPU-x", [])


def _bad_status_instance() -> dict[str, Any]:
    doc = layout("node-x", 0, "GPU-x", [Inst("1g.10gb", 0, 1)])
    doc["status"]["instances"][0]["placement"] = {"start": "zero", "size": 1}
    return doc


def _typo_in_spec() -> dict[str, Any]:
    doc = layout("node-x", 0, "GPU-x", [])
    doc["spec"]["gpuIndx"] = 1
    return doc


INVALID_CASES = [
    pytest.param(_without_spec(), "node-x-gpu0", "spec", id="no-spec"),
    pytest.param(_negative_index(), "node-x-gpu-1", "gpuIndex", id="negative-gpu-index"),
    pytest.param(_bad_status_instance(), "node-x-gpu0", "placement", id="bad-status-placement"),
    pytest.param(_typo_in_spec(), "node-x-gpu0", "gpuIndx", id="unknown-spec-field"),
    pytest.param("not a layout", "#1", "not an object", id="not-a-mapping"),
    pytest.param({"spec": {"nodeName": "n"}}, "#1", "spec.", id="no-name"),
]


@pytest.mark.parametrize(("bad", "name", "reason_part"), INVALID_CASES)
def test_invalid_layouts_are_reported_and_the_rest_shown(
    bad: Any, name: str, reason_part: str
) -> None:
    good = layout("node-a", 0, "GPU-a", [Inst("1g.10gb", 0, 1)])
    rows = metric_rows([good, bad])
    assert [r.node for r in rows.instances] == ["node-a"]
    assert [r.node for r in rows.memory_totals] == ["node-a"]
    (problem,) = rows.invalid
    assert problem.name == name
    assert reason_part in problem.reason


def test_second_layout_for_the_same_gpu_is_reported_not_shown_twice() -> None:
    first = layout("node-a", 0, "GPU-a", [Inst("1g.10gb", 0, 1)], name="a-first")
    second = layout("node-a", 0, "GPU-a", [Inst("1g.10gb", 1, 1)], name="b-second")
    rows = metric_rows([second, first])
    assert [r.placement.start for r in rows.instances] == [0]
    assert [t.memory_mib for t in rows.memory_totals] == [40960]
    (problem,) = rows.invalid
    assert problem.name == "b-second"
    assert "a-first" in problem.reason


# ------------------------------------------------------------------------------ memory

MEMORY_CASES = [
    pytest.param(
        [layout("n1", 0, "G0", []), layout("n1", 1, "G1", [])],
        [MemoryTotal("n1", "mig", 81920)],
        id="summed-per-node",
    ),
    pytest.param(
        [
            layout("n1", 0, "G0", [], memory=81920),
            layout("n1", 1, "G1", [], memory=40960, mode="hami-core"),
            layout("n2", 0, "G2", [], memory=24576),
        ],
        [
            MemoryTotal("n1", "hami-core", 40960),
            MemoryTotal("n1", "mig", 81920),
            MemoryTotal("n2", "mig", 24576),
        ],
        id="split-by-mode",
    ),
    pytest.param(
        [
            layout("n1", 0, "G0", [], mode=None, mig_enabled=False),
            layout("n1", 1, "G1", [], mode=None, mig_enabled=True),
        ],
        [MemoryTotal("n1", "hami-core", 40960), MemoryTotal("n1", "mig", 40960)],
        id="mode-from-spec-until-the-agent-reports-it",
    ),
    pytest.param(
        [layout("n1", 0, "G0", [], memory=None), layout("n1", 1, "G1", None)],
        [],
        id="gpus-not-reported-yet-have-no-total",
    ),
]


@pytest.mark.parametrize(("docs", "expected"), MEMORY_CASES)
def test_memory_totals(docs: list[dict[str, Any]], expected: list[MemoryTotal]) -> None:
    assert list(metric_rows(docs).memory_totals) == expected
