"""The allocation annotation: format, parsing that never raises, and what pods hold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migweaver.core.resources.allocation import (
    AllocatedDevice,
    Allocation,
    AllocationError,
    ContainerAllocation,
    HeldDevice,
    bind_patch,
    bound_allocation,
    held_devices,
    parse_allocation,
    parse_bind_time,
    release_annotations,
)
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_ERROR,
    ANNOTATION_BIND_PHASE,
)
from migweaver.core.resources.models import PlacementModel
from tests import builders

MIG = {
    "gpuUUID": "GPU-1",
    "gpuIndex": 0,
    "mode": "mig",
    "profile": "3g.40gb",
    "placement": {"start": 4, "size": 4},
    "migUUID": "MIG-a",
    "memoryMiB": 40192,
    "cores": 42,
}
SHARE = {"gpuUUID": "GPU-2", "gpuIndex": 1, "mode": "hami-core", "memoryMiB": 8000, "cores": 30}


def doc(*devices: dict[str, Any], node: str = "n1", name: str = "main") -> dict[str, Any]:
    return {
        "node": node,
        "podUID": "uid-1",
        "containers": [{"name": name, "devices": list(devices)}],
    }


def pod(
    name: str,
    allocation: dict[str, Any] | str | None,
    *,
    phase: str | None = None,
    bind: str | None = "allocating",
    gpus: int = 1,
) -> dict[str, Any]:
    """A pod whose allocation (a dict) is bound to it, as the operator writes it."""
    annotations: dict[str, str] = {}
    if allocation is not None:
        annotations[ANNOTATION_ALLOCATION] = (
            allocation if isinstance(allocation, str) else json.dumps(allocation | {"podUID": name})
        )
    if bind is not None:
        annotations[ANNOTATION_BIND_PHASE] = bind
    limits = {"nvidia.com/gpu": gpus} if gpus else {"cpu": 1}
    return {
        "metadata": builders.metadata(name, "ns", uid=name, annotations=annotations),
        "spec": {"containers": [builders.container(limits=limits)]},
        "status": {"phase": phase} if phase else {},
    }


def test_the_documented_example_parses_and_round_trips() -> None:
    text = json.dumps(doc(MIG), separators=(",", ":"))
    allocation = parse_allocation(text)
    assert isinstance(allocation, Allocation)
    (device,) = allocation.devices
    assert device.mig_uuid == "MIG-a"
    assert device.placement == PlacementModel(start=4, size=4)
    assert device.memory_mib == 40192
    assert allocation.to_annotation() == text
    assert parse_allocation(allocation.to_annotation()) == allocation


def test_the_operator_builds_it_from_python_names() -> None:
    allocation = Allocation(
        node="n1",
        containers=[
            ContainerAllocation(
                name="main",
                devices=[
                    AllocatedDevice(
                        gpu_uuid="GPU-2", gpu_index=1, mode="hami-core", memory_mib=8000, cores=30
                    )
                ],
            )
        ],
    )
    assert json.loads(allocation.to_annotation())["containers"][0]["devices"][0] == {
        **SHARE,
        "profile": None,
        "placement": None,
        "migUUID": None,
    }


def test_unknown_fields_are_ignored_for_version_skew() -> None:
    allocation = parse_allocation(json.dumps(doc(MIG | {"futureField": 1}) | {"extra": True}))
    assert isinstance(allocation, Allocation)


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (None, "", "missing"),
        (7, "", "expected a JSON string"),
        ("{", "", "not JSON"),
        ("[1]", "", "expected a JSON object"),
        (json.dumps({"containers": []}), "node", "Field required"),
        (json.dumps(doc(MIG | {"gpuIndex": "0"})), "containers[0].devices[0].gpuIndex", "integer"),
        (json.dumps(doc(MIG | {"mode": "mps"})), "containers[0].devices[0].mode", "'mig'"),
        (json.dumps(doc(MIG | {"migUUID": None})), "containers[0].devices[0]", "needs migUUID"),
        (json.dumps(doc(SHARE | {"migUUID": "MIG-x"})), "containers[0].devices[0]", "no migUUID"),
        (json.dumps(doc(MIG | {"cores": 101})), "containers[0].devices[0].cores", "100"),
        (json.dumps(doc(MIG | {"memoryMiB": -1})), "containers[0].devices[0].memoryMiB", "0"),
        (
            json.dumps(doc(MIG | {"placement": {"start": 0, "size": 0}})),
            "containers[0].devices[0].placement.size",
            "1",
        ),
        (json.dumps(doc()), "containers[0].devices", "at least 1"),
        (
            json.dumps({"node": "n1", "containers": [doc(MIG)["containers"][0]] * 2}),
            "",
            "listed more than once",
        ),
    ],
    ids=[
        "missing",
        "not-a-string",
        "not-json",
        "not-an-object",
        "no-node",
        "gpu-index-as-string",
        "unknown-mode",
        "mig-without-uuid",
        "share-with-mig-uuid",
        "cores-above-100",
        "negative-memory",
        "zero-size-placement",
        "no-devices",
        "container-listed-twice",
    ],
)
def test_bad_annotations_are_typed_errors_naming_the_field(
    text: object, field: str, reason: str
) -> None:
    error = parse_allocation(text)
    assert isinstance(error, AllocationError)
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith(ANNOTATION_ALLOCATION)


@given(st.text(max_size=200))
def test_parsing_any_text_never_raises(text: str) -> None:
    assert isinstance(parse_allocation(text), Allocation | AllocationError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["node", "containers", "x"]), json_values, max_size=3))
def test_parsing_any_json_never_raises(document: dict[str, Any]) -> None:
    assert isinstance(parse_allocation(json.dumps(document)), Allocation | AllocationError)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert isinstance(parse_allocation("[" * 100_000 + "]" * 100_000), AllocationError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", 1700000000),
        (" 12 ", 12),
        (5, 5),
        ("", None),
        ("1.5", None),
        ("-3", None),
        (True, None),
        (None, None),
        ("9" * 30, None),
        ("²", None),
        ("١٢", None),
    ],
    ids=[
        "unix-seconds",
        "spaces-around",
        "int-value",
        "empty",
        "fraction",
        "negative",
        "boolean",
        "absent",
        "too-many-digits",
        "superscript-digit",
        "arabic-indic-digits",
    ],
)
def test_bind_time(value: object, expected: int | None) -> None:
    assert parse_bind_time(value) == expected


def test_held_devices_follow_the_allocations_of_live_pods() -> None:
    two = doc(MIG, MIG | {"migUUID": "MIG-b", "placement": {"start": 0, "size": 4}})
    pods = [
        pod("a", two, bind="success"),
        pod("b", doc(SHARE)),  # allocating: reserved already
        pod("done", doc(MIG | {"migUUID": "MIG-c"}), phase="Succeeded", bind="success"),
        pod("crashed", doc(MIG | {"migUUID": "MIG-d"}), phase="Failed", bind="success"),
        pod("refused", doc(MIG | {"migUUID": "MIG-e"}), bind="failed"),
        pod("elsewhere", doc(MIG | {"migUUID": "MIG-f"}, node="n2"), bind="success"),
        pod("broken", "{not json", bind="success"),
        pod("plain", None, bind=None),
    ]
    assert held_devices(pods, "n1") == {
        "MIG-a": HeldDevice("ns/a", "GPU-1"),
        "MIG-b": HeldDevice("ns/a", "GPU-1"),
        "GPU-2": HeldDevice("ns/b", "GPU-2"),
    }


@pytest.mark.parametrize(
    "squatter",
    [
        pytest.param(pod("cpu-only", doc(MIG), bind="success", gpus=0), id="cpu-pod"),
        pytest.param(
            pod("forged", json.dumps(doc(MIG) | {"podUID": "someone-else"}), bind="success"),
            id="allocation-of-another-pod",
        ),
        pytest.param(pod("no-uid", json.dumps(doc(MIG)), bind="success"), id="no-pod-uid"),
    ],
)
def test_a_pod_holds_nothing_through_an_allocation_not_bound_to_it(
    squatter: dict[str, Any],
) -> None:
    # The instance stays free: the agent may repartition it, the operator may plan it.
    assert held_devices([squatter], "n1") == {}
    assert isinstance(bound_allocation(squatter), AllocationError)


def test_a_pod_being_deleted_still_holds_its_devices() -> None:
    terminating = pod("t", doc(MIG), bind="success")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert held_devices([terminating], "n1") == {"MIG-a": HeldDevice("ns/t", "GPU-1")}


def test_bind_patch_sets_the_phase_and_sets_or_clears_the_error() -> None:
    assert bind_patch("success") == {
        "metadata": {"annotations": {ANNOTATION_BIND_PHASE: "success", ANNOTATION_BIND_ERROR: None}}
    }
    failed = bind_patch("failed", "x" * 5000)
    assert len(failed["metadata"]["annotations"][ANNOTATION_BIND_ERROR]) == 1024


def test_describe_names_the_device() -> None:
    mig = AllocatedDevice.model_validate(MIG)
    assert mig.describe() == "MIG instance MIG-a (3g.40gb at 4:4) on GPU GPU-1"
    assert mig.visible_id == "MIG-a"
    share = AllocatedDevice.model_validate(SHARE)
    assert share.describe() == "GPU GPU-2 (hami-core share)"
    assert share.visible_id == "GPU-2"


def test_release_annotations_are_what_the_device_plugin_waits_for() -> None:
    allocation = parse_allocation(json.dumps(doc(MIG)))
    assert isinstance(allocation, Allocation)
    annotations = release_annotations(allocation, 1700000000)
    assert annotations == {
        ANNOTATION_ALLOCATION: allocation.to_annotation(),
        ANNOTATION_BIND_PHASE: "allocating",
        "migweaver.io/bind-time": "1700000000",
        ANNOTATION_BIND_ERROR: None,
    }
    assert parse_bind_time(annotations["migweaver.io/bind-time"]) == 1700000000
