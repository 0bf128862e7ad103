"""The MigLayout and NodeConfig models (docs/design.md, "Resources"): wire format, validation."""

from __future__ import annotations

import copy
import re
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.api import API_VERSION, GROUP, LABEL_NODE, VERSION
from migweaver.core.resources.models import (
    MIGLAYOUT_PLURAL,
    NODECONFIG_PLURAL,
    Condition,
    InstanceStatus,
    LabelSelector,
    LayoutInstance,
    MigLayout,
    MigLayoutSpec,
    MigLayoutStatus,
    NodeConfig,
    NodeConfigSpec,
    PlacementModel,
    find_condition,
    layout_name,
    node_label_value,
    set_condition,
    summarize_instances,
    used_summary,
)

# docs/design.md, "Resources", with the elided parts (`[...]`, `...`) filled in.
MIGLAYOUT_YAML = """
apiVersion: migweaver.io/v1alpha1
kind: MigLayout
metadata:
  name: node-a-gpu0
  labels: {migweaver.io/node: node-a}
  generation: 7
spec:
  nodeName: node-a
  gpuIndex: 0
  gpuUUID: GPU-936619fc-0000-0000-0000-000000000000
  policy: dynamic
  migEnabled: true
  instances:
  - profile: 3g.40gb
    placement: {start: 0, size: 4}
  - profile: 1g.10gb
    placement: {start: 4, size: 1}
status:
  observedGeneration: 7
  phase: Ready
  gpu: {model: NVIDIA A100-SXM4-80GB, memoryMiB: 81920, migCapable: true}
  migMode: {current: Enabled, pending: Enabled}
  profiles:
  - name: 1g.10gb
    id: 19
    memoryMiB: 9728
    slices: 1
    placements: [{start: 0, size: 1}, {start: 1, size: 1}]
    maxCount: 7
  - name: 3g.40gb
    id: 9
    memoryMiB: 40192
    slices: 3
    placements: [{start: 0, size: 4}, {start: 4, size: 4}]
  instances:
  - profile: 3g.40gb
    placement: {start: 0, size: 4}
    gpuInstanceId: 2
    computeInstanceId: 0
    uuid: MIG-11111111-2222-5333-8444-555555555555
    inUse: true
    pod: default/train-1
  - profile: 1g.10gb
    placement: {start: 4, size: 1}
    gpuInstanceId: 13
    computeInstanceId: 0
    uuid: MIG-66666666-2222-5333-8444-555555555555
    inUse: false
  conditions:
  - type: Ready
    status: "True"
    reason: Applied
    message: the GPU matches the spec
    lastTransitionTime: "2024-05-01T12:00:00Z"
    observedGeneration: 7
  mode: mig
  instancesSummary: 3g.40gb,1g.10gb
  used: 1/2
"""

NODECONFIG_YAML = """
apiVersion: migweaver.io/v1alpha1
kind: NodeConfig
metadata: {name: mig-node-a}
spec:
  nodeName: MIG-NODE-A
  operatingMode: mig
  filterDevices: {uuid: [], index: []}
status:
  observedGeneration: 1
  matchedNodes: [MIG-NODE-A]
  conditions: []
"""


def miglayout_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(MIGLAYOUT_YAML)
    return doc


def nodeconfig_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(NODECONFIG_YAML)
    return doc


def spec_doc(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = miglayout_doc()["spec"]
    spec.update(changes)
    return spec


# --- constants ---------------------------------------------------------------------------------


def test_constants() -> None:
    assert (GROUP, VERSION, API_VERSION) == ("migweaver.io", "v1alpha1", "migweaver.io/v1alpha1")
    assert (MIGLAYOUT_PLURAL, NODECONFIG_PLURAL) == ("miglayouts", "nodeconfigs")
    assert LABEL_NODE == "migweaver.io/node"


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "make_doc"),
    [(MigLayout, miglayout_doc), (NodeConfig, nodeconfig_doc)],
    ids=["miglayout", "nodeconfig"],
)
def test_design_examples_round_trip(model: type[MigLayout | NodeConfig], make_doc: Any) -> None:
    doc = make_doc()
    assert model.from_api(doc).to_api() == doc


def test_wire_names_are_kept_and_python_names_are_snake_case() -> None:
    layout = MigLayout.from_api(miglayout_doc())
    assert layout.spec.gpu_uuid.startswith("GPU-936619fc")
    assert layout.status is not None
    assert layout.status.gpu is not None
    assert layout.status.gpu.memory_mib == 81920
    assert layout.status.instances[0].in_use is True
    assert layout.status.profiles[0].max_count == 7
    assert layout.name == "node-a-gpu0"
    wire = layout.to_api()
    assert "gpuUUID" in wire["spec"]
    assert wire["status"]["gpu"]["memoryMiB"] == 81920
    assert wire["status"]["instances"][0]["inUse"] is True
    assert wire["status"]["migMode"] == {"current": "Enabled", "pending": "Enabled"}


def test_defaults_and_none_left_out() -> None:
    spec = MigLayoutSpec.from_api({"nodeName": "n", "gpuIndex": 1, "gpuUUID": "GPU-1"})
    assert spec.policy == "dynamic"
    assert spec.mig_enabled is True
    assert spec.instances == []
    layout = MigLayout(spec=spec)
    wire = layout.to_api()
    assert wire["apiVersion"] == API_VERSION
    assert wire["kind"] == "MigLayout"
    assert "status" not in wire
    assert layout.name == ""
    instance = InstanceStatus(profile="1g.10gb", placement=PlacementModel(start=0, size=1))
    assert instance.to_api() == {
        "profile": "1g.10gb",
        "placement": {"start": 0, "size": 1},
        "inUse": False,
    }


def test_populate_by_python_name() -> None:
    spec = MigLayoutSpec(node_name="n", gpu_index=0, gpu_uuid="GPU-1", mig_enabled=False)
    assert spec.to_api()["gpuUUID"] == "GPU-1"
    assert spec.to_api()["migEnabled"] is False


def test_from_api_accepts_read_only_mappings() -> None:
    # kopf hands handlers read-only Mapping views, not dicts.
    doc = miglayout_doc()
    frozen = MappingProxyType(
        {
            **doc,
            "spec": MappingProxyType(
                {
                    **doc["spec"],
                    "instances": tuple(MappingProxyType(i) for i in doc["spec"]["instances"]),
                }
            ),
        }
    )
    assert MigLayout.from_api(frozen).to_api() == doc


def test_kind_must_match() -> None:
    doc = miglayout_doc()
    doc["kind"] = "NodeConfig"
    with pytest.raises(ValidationError):
        MigLayout.from_api(doc)


# --- spec validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        spec_doc(gpuIndx=1),  # typo
        spec_doc(gpuUuid="GPU-1"),  # the alias to_camel would have produced
        spec_doc(gpuIndex=-1),
        spec_doc(nodeName=""),
        spec_doc(gpuUUID=""),
        spec_doc(policy="auto"),
        spec_doc(migEnabled="sometimes"),
        spec_doc(instances=[{"profile": "1g.10gb", "placement": {"start": 0, "size": 0}}]),
        spec_doc(instances=[{"profile": "1g.10gb", "placement": {"start": -1, "size": 1}}]),
        spec_doc(instances=[{"profile": "1g.10gb", "placement": {"start": 0, "size": 1, "x": 1}}]),
        spec_doc(instances=[{"profile": "1g.10gb", "placment": {"start": 0, "size": 1}}]),
        spec_doc(instances=[{"profile": "", "placement": {"start": 0, "size": 1}}]),
    ],
    ids=[
        "unknown-field",
        "gpuUuid-spelling",
        "negative-gpuIndex",
        "empty-nodeName",
        "empty-gpuUUID",
        "bad-policy",
        "bad-migEnabled",
        "placement-size-0",
        "placement-negative-start",
        "unknown-placement-field",
        "unknown-instance-field",
        "empty-profile",
    ],
)
def test_miglayout_spec_rejects(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MigLayoutSpec.from_api(spec)


def test_status_ignores_unknown_fields() -> None:
    # A newer agent may report more than this version knows: the status must still parse.
    doc = miglayout_doc()
    doc["status"]["temperatureC"] = 40
    doc["status"]["instances"][0]["smCount"] = 42
    status = MigLayout.from_api(doc).status
    assert status is not None
    assert "temperatureC" not in status.to_api()


def test_status_rejects_bad_values() -> None:
    for change in ({"phase": "Done"}, {"mode": "vgpu"}, {"migMode": {"current": "On"}}):
        with pytest.raises(ValidationError):
            MigLayoutStatus.from_api(change)


def test_duplicate_condition_types_are_rejected() -> None:
    ready = {"type": "Ready", "status": "True"}
    with pytest.raises(ValidationError, match="duplicate condition type"):
        MigLayoutStatus.from_api({"conditions": [ready, ready]})


def node_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = nodeconfig_doc()["spec"]
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize(
    "spec",
    [
        node_spec(nodeSelector={"matchLabels": {"gpu": "a100"}}),  # both
        node_spec(nodeName=None),  # neither
        node_spec(operatingMode="vgpu"),
        node_spec(operatingMode="MIG"),
        node_spec(filterDevices={"uuid": [], "index": [-1]}),
        node_spec(filterDevices={"uuids": []}),
        node_spec(nodeName=None, nodeSelector={"matchLabel": {"gpu": "a100"}}),
        node_spec(
            nodeName=None, nodeSelector={"matchExpressions": [{"key": "k", "operator": "In"}]}
        ),
        node_spec(
            nodeName=None,
            nodeSelector={
                "matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]
            },
        ),
        node_spec(
            nodeName=None, nodeSelector={"matchExpressions": [{"key": "k", "operator": "Has"}]}
        ),
    ],
    ids=[
        "both-targets",
        "no-target",
        "bad-mode",
        "mode-is-case-sensitive",
        "negative-index",
        "unknown-filter-field",
        "unknown-selector-field",
        "In-without-values",
        "Exists-with-values",
        "bad-operator",
    ],
)
def test_nodeconfig_spec_rejects(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NodeConfigSpec.from_api(spec)


def test_nodeconfig_spec_exactly_one_message() -> None:
    with pytest.raises(ValidationError, match="exactly one of nodeName or nodeSelector"):
        NodeConfigSpec.from_api({"operatingMode": "mig"})


def test_nodeconfig_defaults() -> None:
    spec = NodeConfigSpec.from_api({"nodeName": "n"})
    assert spec.operating_mode == "hami-core"
    assert spec.filter_devices.uuid == []
    assert spec.filter_devices.index == []


# --- node selection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),  # empty selector: every node, as in Kubernetes
        ({"matchLabels": {"gpu": "a100"}}, {"gpu": "a100", "x": "y"}, True),
        ({"matchLabels": {"gpu": "a100"}}, {"gpu": "h100"}, False),
        ({"matchLabels": {"gpu": "a100"}}, {}, False),
        (
            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a", "b"]}]},
            {"gpu": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["a"]}]},
            {"gpu": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "a"}, False),
        (
            {
                "matchLabels": {"zone": "z1"},
                "matchExpressions": [{"key": "gpu", "operator": "Exists"}],
            },
            {"zone": "z1"},
            False,
        ),
    ],
    ids=[
        "empty-selector-matches-all",
        "match-labels-match",
        "match-labels-other-value",
        "match-labels-absent",
        "in-matches",
        "in-absent-label",
        "not-in-absent-label",
        "not-in-excluded",
        "exists",
        "exists-absent",
        "does-not-exist",
        "does-not-exist-present",
        "labels-and-expressions-both-needed",
    ],
)
def test_label_selector_matches(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert LabelSelector.from_api(selector).matches(labels) is expected


def test_nodeconfig_applies_to() -> None:
    by_name = NodeConfigSpec(node_name="node-a")
    assert by_name.applies_to("node-a", {})
    assert not by_name.applies_to("node-b", {})
    by_label = NodeConfigSpec.from_api({"nodeSelector": {"matchLabels": {"gpu": "a100"}}})
    assert by_label.applies_to("node-b", {"gpu": "a100"})
    assert not by_label.applies_to("node-b", {})


# --- placements --------------------------------------------------------------------------------


def test_placement_conversion() -> None:
    model = PlacementModel.from_placement(Placement(4, 2))
    assert model == PlacementModel(start=4, size=2)
    assert model.to_placement() == Placement(4, 2)
    assert model.to_api() == {"start": 4, "size": 2}


@given(st.integers(0, 64), st.integers(1, 64))
def test_placement_round_trip(start: int, size: int) -> None:
    placement = Placement(start, size)
    assert PlacementModel.from_placement(placement).to_placement() == placement


# --- summaries ---------------------------------------------------------------------------------


def instances(*profiles: str, in_use: int = 0) -> list[InstanceStatus]:
    return [
        InstanceStatus(profile=p, placement=PlacementModel(start=i, size=1), in_use=i < in_use)
        for i, p in enumerate(profiles)
    ]


def test_summarize_instances() -> None:
    assert summarize_instances(instances("3g.40gb", "1g.10gb", "1g.10gb", "1g.10gb")) == (
        "3g.40gb,1g.10gbx3"
    )
    # Order of first appearance, counted over the whole list.
    assert summarize_instances(instances("1g.10gb", "3g.40gb", "1g.10gb")) == "1g.10gbx2,3g.40gb"
    assert summarize_instances([]) == "-"
    spec_instances = [LayoutInstance(profile="7g.80gb", placement=PlacementModel(start=0, size=8))]
    assert summarize_instances(spec_instances) == "7g.80gb"


def test_used_summary() -> None:
    assert used_summary(instances("3g.40gb", "1g.10gb", "1g.10gb", "1g.10gb", in_use=1)) == "1/4"
    assert used_summary(instances("1g.10gb", in_use=1)) == "1/1"
    assert used_summary([]) == "-"


def test_with_summaries() -> None:
    status = MigLayoutStatus(instances=instances("3g.40gb", "1g.10gb", "1g.10gb", in_use=2))
    summarized = status.with_summaries()
    assert (summarized.instances_summary, summarized.used) == ("3g.40gb,1g.10gbx2", "2/3")
    assert status.instances_summary is None  # a copy, not a mutation
    assert MigLayoutStatus().with_summaries().to_api() == {
        "profiles": [],
        "instances": [],
        "conditions": [],
        "instancesSummary": "-",
        "used": "-",
    }


# --- conditions --------------------------------------------------------------------------------


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = set_condition([], Condition(type="Ready", status="False", reason="Applying"), "t1")
    assert first[0].last_transition_time == "t1"
    again = set_condition(first, Condition(type="Ready", status="False", reason="Waiting"), "t2")
    assert again[0].last_transition_time == "t1"
    assert again[0].reason == "Waiting"
    flipped = set_condition(again, Condition(type="Ready", status="True"), "t3")
    assert flipped[0].last_transition_time == "t3"
    both = set_condition(flipped, Condition(type="Degraded", status="False"), "t4")
    assert [c.type for c in both] == ["Ready", "Degraded"]
    assert find_condition(both, "Degraded") == Condition(
        type="Degraded", status="False", last_transition_time="t4"
    )
    assert find_condition(both, "Applied") is None
    assert len(first) == 1  # inputs untouched


# --- names -------------------------------------------------------------------------------------

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize(
    ("node", "index", "expected"),
    [
        ("node-a", 0, "node-a-gpu0"),
        ("MIG-NODE-A", 3, "mig-node-a-gpu3"),
        ("ip-10-0-1-23.ec2.internal", 7, "ip-10-0-1-23.ec2.internal-gpu7"),
        ("Node_A", 1, "node-a-gpu1"),
        ("-odd-.-name-", 0, "odd.name-gpu0"),
        ("", 0, "node-gpu0"),
    ],
    ids=["plain", "upper-case", "dotted-hostname", "underscore", "odd-dashes", "empty-node"],
)
def test_layout_name(node: str, index: int, expected: str) -> None:
    assert layout_name(node, index) == expected


def test_layout_name_long_nodes_stay_valid_and_distinct() -> None:
    a, b = "n" * 300 + "a", "n" * 300 + "b"
    assert layout_name(a, 0) != layout_name(b, 0)
    for node in (a, b, "x" * 248):
        name = layout_name(node, 12)
        assert len(name) <= 253
        assert name.endswith("-gpu12")
        assert DNS1123_SUBDOMAIN.match(name)


def test_layout_name_rejects_negative_index() -> None:
    with pytest.raises(ValueError, match="gpu index"):
        layout_name("node-a", -1)


@given(st.text(max_size=300), st.integers(0, 1000))
def test_layout_name_is_always_a_valid_object_name(node: str, index: int) -> None:
    name = layout_name(node, index)
    assert len(name) <= 253
    assert DNS1123_SUBDOMAIN.match(name), name


def test_node_label_value() -> None:
    assert node_label_value("node-a") == "node-a"
    long_a, long_b = "ip-" + "1" * 80 + ".a", "ip-" + "1" * 80 + ".b"
    assert node_label_value(long_a) != node_label_value(long_b)
    for value in (node_label_value(long_a), node_label_value("a" * 63), node_label_value("a" * 64)):
        assert len(value) <= 63
        assert LABEL_VALUE.match(value)


def test_models_do_not_share_mutable_defaults() -> None:
    a = MigLayoutStatus()
    b = MigLayoutStatus()
    a.instances.append(instances("1g.10gb")[0])
    assert b.instances == []
    doc = miglayout_doc()
    before = copy.deepcopy(doc)
    MigLayout.from_api(doc)
    assert doc == before  # parsing does not modify the input
