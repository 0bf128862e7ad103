"""The node status patch for the HAMi extended resources (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from migweaver.core.agent.node_resources import node_capacity, status_patch
from migweaver.core.resources.api import escape_pointer
from tests import builders

RESOURCES = {
    "nvidia.com/gpumem": "106496",
    "nvidia.com/gpumem-percentage": "200",
    "nvidia.com/gpucores": "200",
}


def node(capacity: dict[str, str] | None, allocatable: dict[str, str] | None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if capacity is not None:
        status["capacity"] = capacity
    if allocatable is not None:
        status["allocatable"] = allocatable
    return builders.node("n1", status=status)


def apply(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/remove on objects, as the API server applies them."""
    result = copy.deepcopy(document)
    for op in ops:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = result
        for token in tokens[:-1]:
            target = target[token]
        if op["op"] == "add":
            target[tokens[-1]] = copy.deepcopy(op["value"])
        else:
            del target[tokens[-1]]
    return result


def test_capacity_sums_memory_and_counts_100_per_gpu() -> None:
    assert node_capacity([81920, 24576]) == RESOURCES
    assert node_capacity([]) == {}


def test_keys_are_escaped_as_json_pointers() -> None:
    assert escape_pointer("nvidia.com/gpumem") == "nvidia.com~1gpumem"
    assert escape_pointer("a~b/c") == "a~0b~1c"


def test_the_patch_adds_every_resource_to_capacity_and_allocatable() -> None:
    ops = status_patch(node({"cpu": "8"}, {"cpu": "7"}), RESOURCES)
    assert ops == [
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpumem", "value": "106496"},
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpumem-percentage", "value": "200"},
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpucores", "value": "200"},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpumem", "value": "106496"},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpumem-percentage", "value": "200"},
        {"op": "add", "path": "/status/allocatable/nvidia.com~1gpucores", "value": "200"},
    ]


def test_nothing_is_written_when_the_node_already_says_so() -> None:
    current = node({"cpu": "8", **RESOURCES}, {"cpu": "7", **RESOURCES})
    assert status_patch(current, RESOURCES) == []


def test_only_what_differs_is_written() -> None:
    current = node({**RESOURCES, "nvidia.com/gpumem": "0"}, dict(RESOURCES))
    assert status_patch(current, RESOURCES) == [
        {"op": "add", "path": "/status/capacity/nvidia.com~1gpumem", "value": "106496"}
    ]


def test_removal_takes_off_only_what_is_there_and_nothing_else() -> None:
    current = node({"cpu": "8", **RESOURCES}, {"cpu": "7", "nvidia.com/gpucores": "200"})
    ops = status_patch(current, {})
    assert ops == [
        {"op": "remove", "path": "/status/capacity/nvidia.com~1gpumem"},
        {"op": "remove", "path": "/status/capacity/nvidia.com~1gpumem-percentage"},
        {"op": "remove", "path": "/status/capacity/nvidia.com~1gpucores"},
        {"op": "remove", "path": "/status/allocatable/nvidia.com~1gpucores"},
    ]
    assert apply(current, ops)["status"] == {"capacity": {"cpu": "8"}, "allocatable": {"cpu": "7"}}
    assert status_patch(node({"cpu": "8"}, None), {}) == []


def test_a_missing_section_is_added_whole() -> None:
    ops = status_patch(node(None, {"cpu": "7"}), RESOURCES)
    assert ops[0] == {
        "op": "add",
        "path": "/status/capacity",
        "value": dict(sorted(RESOURCES.items())),
    }


@pytest.mark.parametrize(
    "start",
    [
        node({"cpu": "8"}, {"cpu": "7"}),
        node({"cpu": "8", **RESOURCES}, {}),
        node({"nvidia.com/gpumem": "5", "nvidia.com/gpucores": "100"}, None),
        node(None, None),
    ],
    ids=[
        "other-resources-only",
        "gpu-capacity-no-allocatable",
        "stale-gpu-resources",
        "no-capacity-or-allocatable",
    ],
)
@pytest.mark.parametrize(
    "desired",
    [RESOURCES, {}, node_capacity([40960])],
    ids=["desired-resources", "desired-nothing", "desired-one-40gb-gpu"],
)
def test_applying_the_patch_converges_in_one_step(
    start: dict[str, Any], desired: dict[str, str]
) -> None:
    after = apply(start, status_patch(start, desired))
    assert status_patch(after, desired) == []
    for section in ("capacity", "allocatable"):
        values = after["status"].get(section, {})
        assert {k: v for k, v in values.items() if k.startswith("nvidia.com/")} == desired
        before = start["status"].get(section) or {}
        assert {k: v for k, v in values.items() if not k.startswith("nvidia.com/")} == {
            k: v for k, v in before.items() if not k.startswith("nvidia.com/")
        }
