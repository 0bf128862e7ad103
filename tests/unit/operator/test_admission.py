"""The webhook's pure decision: which pods get the gate and a default device count."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.operator.admission import Mutation, apply_operations, has_gate, mutate_pod
from migweaver.core.resources.api import ANNOTATION_ALLOCATION, PLACEMENT_GATE, escape_pointer
from migweaver.core.resources.requests import DEFAULTS, RequestDefaults, parse_pod
from tests import builders

GPU = "nvidia.com/gpu"
MEM = "nvidia.com/gpumem"
PCT = "nvidia.com/gpumem-percentage"
CORES = "nvidia.com/gpucores"
GATE = {"name": PLACEMENT_GATE}
OTHER_GATE = {"name": "example.com/quota"}


def container(
    name: str = "main", limits: dict[str, Any] | None = None, requests: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = builders.container(name, image="ubuntu", limits=limits, requests=requests)
    body.setdefault("resources", {})  # the webhook sees an empty `resources` too
    return body


def pod(
    *containers: dict[str, Any],
    gates: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    init: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body = builders.pod(
        "p", "ns", containers=containers, typed=True, annotations=annotations or {}, **spec
    )
    if gates is not None:
        body["spec"]["schedulingGates"] = gates
    if init is not None:
        body["spec"]["initContainers"] = init
    return body


def applied(body: dict[str, Any], mutation: Mutation) -> dict[str, Any]:
    """The pod after the patch, applied by the `jsonpatch` library (RFC 6902), not ours."""
    return jsonpatch.apply_patch(body, list(mutation.operations))  # type: ignore[no-any-return]


def resources_of(body: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return body["spec"]["containers"][index]["resources"]  # type: ignore[no-any-return]


# --- table: (pod, expected gates after, expected limits/requests of container 0) ---------

UNTOUCHED = None
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]] | None, dict[str, Any] | None]] = [
    ("no-gpu-resources", pod(container(limits={"cpu": "1", "memory": "1Gi"})), UNTOUCHED, None),
    ("no-containers", pod(), UNTOUCHED, None),
    ("other-vendor-resource", pod(container(limits={"amd.com/gpu": "1"})), UNTOUCHED, None),
    (
        "gpu-only",
        pod(container(limits={GPU: "1"}, requests={GPU: "1"})),
        [GATE],
        {"limits": {GPU: "1"}, "requests": {GPU: "1"}},
    ),
    (
        "gpumem-only-gpu-defaulted",
        pod(container(limits={MEM: "8000"}, requests={MEM: "8000"})),
        [GATE],
        {"limits": {MEM: "8000", GPU: "1"}, "requests": {MEM: "8000", GPU: "1"}},
    ),
    (
        "gpumem-percentage-only-gpu-defaulted",
        pod(container(limits={PCT: "50"})),
        [GATE],
        {"limits": {PCT: "50", GPU: "1"}, "requests": {GPU: "1"}},
    ),
    (
        "gpucores-only-gpu-defaulted",
        pod(container(limits={CORES: "30"}, requests={CORES: "30"})),
        [GATE],
        {"limits": {CORES: "30", GPU: "1"}, "requests": {CORES: "30", GPU: "1"}},
    ),
    (
        "in-requests-only",
        pod(container(requests={MEM: "8000"})),
        [GATE],
        {"requests": {MEM: "8000", GPU: "1"}, "limits": {GPU: "1"}},
    ),
    (
        "gpu-in-requests-counts-as-given",
        pod(container(limits={MEM: "8000"}, requests={GPU: "2", MEM: "8000"})),
        [GATE],
        {"limits": {MEM: "8000"}, "requests": {GPU: "2", MEM: "8000"}},
    ),
    (
        "explicit-gpu-zero-still-gated",
        pod(container(limits={GPU: "0", MEM: "8000"})),
        [GATE],
        {"limits": {GPU: "0", MEM: "8000"}},
    ),
    (
        "already-gated",
        pod(container(limits={GPU: "1", MEM: "8000"}), gates=[GATE]),
        UNTOUCHED,
        None,
    ),
    (
        "already-gated-count-still-defaulted",
        pod(container(limits={MEM: "8000"}), gates=[GATE]),
        [GATE],
        {"limits": {MEM: "8000", GPU: "1"}, "requests": {GPU: "1"}},
    ),
    (
        # A pod is never created placed: a forged allocation does not escape the gate.
        "created-with-an-allocation-still-gated",
        pod(container(limits={GPU: "1"}), annotations={ANNOTATION_ALLOCATION: "{}"}),
        [GATE],
        {"limits": {GPU: "1"}},
    ),
    (
        "node-name-set",
        pod(container(limits={GPU: "1"}), nodeName="node-a"),
        UNTOUCHED,
        None,
    ),
    (
        "existing-other-gates-kept",
        pod(container(limits={GPU: "1"}), gates=[OTHER_GATE]),
        [OTHER_GATE, GATE],
        {"limits": {GPU: "1"}},
    ),
    (
        "empty-gate-list",
        pod(container(limits={GPU: "1"}), gates=[]),
        [GATE],
        {"limits": {GPU: "1"}},
    ),
    (
        "null-gate-list",
        pod(container(limits={GPU: "1"}), schedulingGates=None),
        [GATE],
        {"limits": {GPU: "1"}},
    ),
    (
        "invalid-quantity-still-gated",
        pod(container(limits={MEM: "8Gi-ish"})),
        [GATE],
        {"limits": {MEM: "8Gi-ish", GPU: "1"}, "requests": {GPU: "1"}},
    ),
    (
        "invalid-count-still-gated-not-defaulted",
        pod(container(limits={GPU: "one", MEM: "8000"})),
        [GATE],
        {"limits": {GPU: "one", MEM: "8000"}},
    ),
    (
        "non-string-quantities-still-gated",
        pod(container(limits={MEM: 8000, CORES: None})),
        [GATE],
        {"limits": {MEM: 8000, CORES: None, GPU: "1"}, "requests": {GPU: "1"}},
    ),
    (
        "init-container-only-not-gated",
        pod(container(limits={"cpu": "1"}), init=[container("init", limits={GPU: "1"})]),
        UNTOUCHED,
        None,
    ),
    (
        "malformed-limits-gated-not-defaulted",
        pod(container(limits="8000", requests={MEM: "8000"})),  # type: ignore[arg-type]
        [GATE],
        {"limits": "8000", "requests": {MEM: "8000"}},
    ),
]


@pytest.mark.parametrize(
    ("body", "gates", "resources"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mutation_table(
    body: dict[str, Any],
    gates: list[dict[str, Any]] | None,
    resources: dict[str, Any] | None,
) -> None:
    original = copy.deepcopy(body)
    mutation = mutate_pod(body)
    assert body == original, "mutate_pod must not change its input"
    assert mutation.reason
    if gates is None:
        assert not mutation.changed
        assert mutation.operations == ()
        return
    after = applied(body, mutation)
    assert after["spec"]["schedulingGates"] == gates
    assert resources_of(after) == resources
    assert mutate_pod(after).operations == (), "a second pass must change nothing"


def test_several_containers_each_defaulted_and_paths_escaped() -> None:
    body = pod(
        container("a", limits={MEM: "8000"}),
        container("b", limits={"cpu": "1"}),
        container("c", limits={GPU: "2", MEM: "4000"}),
        container("d", limits={CORES: "50"}, requests={CORES: "50"}),
    )
    mutation = mutate_pod(body)
    assert mutation.defaulted == ("a", "d")
    assert mutation.operations == (
        {"op": "add", "path": "/spec/schedulingGates", "value": [GATE]},
        {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"},
        {"op": "add", "path": "/spec/containers/0/resources/requests", "value": {GPU: "1"}},
        {"op": "add", "path": "/spec/containers/3/resources/limits/nvidia.com~1gpu", "value": "1"},
        {
            "op": "add",
            "path": "/spec/containers/3/resources/requests/nvidia.com~1gpu",
            "value": "1",
        },
    )
    after = applied(body, mutation)
    assert resources_of(after, 1) == {"limits": {"cpu": "1"}}
    assert resources_of(after, 2) == {"limits": {GPU: "2", MEM: "4000"}}
    assert "gate migweaver.io/placement added" in mutation.reason
    assert "nvidia.com/gpu: 1 defaulted for containers a, d" in mutation.reason


def test_existing_gate_list_gets_an_append_not_a_replacement() -> None:
    mutation = mutate_pod(pod(container(limits={GPU: "1"}), gates=[OTHER_GATE]))
    assert mutation.operations == ({"op": "add", "path": "/spec/schedulingGates/-", "value": GATE},)


def test_default_gpu_num_and_resource_names_come_from_the_configuration() -> None:
    defaults = RequestDefaults(resource_count="example.com/vgpu", default_gpu_num=2)
    body = pod(container(limits={MEM: "8000"}))
    after = applied(body, mutate_pod(body, defaults))
    assert resources_of(after)["limits"] == {MEM: "8000", "example.com/vgpu": "2"}
    renamed = RequestDefaults(resource_memory="example.com/vmem")
    assert not mutate_pod(pod(container(limits={MEM: "8000"})), renamed).changed
    assert mutate_pod(pod(container(limits={"example.com/vmem": "1"})), renamed).changed


def test_default_gpu_num_zero_gates_without_a_count() -> None:
    body = pod(container(limits={MEM: "8000"}))
    mutation = mutate_pod(body, RequestDefaults(default_gpu_num=0))
    assert applied(body, mutation)["spec"]["schedulingGates"] == [GATE]
    assert mutation.defaulted == ()


@pytest.mark.parametrize(
    "body",
    [None, "pod", [], {"spec": "x"}, {"spec": {"containers": "x"}}, {"spec": {"containers": [1]}}],
    ids=["none", "string", "list", "spec-string", "containers-string", "container-int"],
)
def test_malformed_objects_are_left_alone(body: Any) -> None:
    mutation = mutate_pod(body)
    assert mutation.operations == ()
    assert mutation.reason


def test_malformed_gate_list_is_left_for_the_apiserver() -> None:
    mutation = mutate_pod(pod(container(limits={GPU: "1"}), schedulingGates="x"))
    assert not mutation.changed
    assert "not a list" in mutation.reason


def test_reasons_say_why_nothing_changed() -> None:
    assert "asks for no GPU" in mutate_pod(pod(container())).reason
    gated = pod(container(limits={GPU: "1"}), gates=[GATE])
    assert "already gated" in mutate_pod(gated).reason


def test_has_gate() -> None:
    assert has_gate(pod(gates=[OTHER_GATE, GATE]))
    assert not has_gate(pod(gates=[OTHER_GATE]))
    assert not has_gate(pod())
    assert not has_gate({"spec": {"schedulingGates": ["migweaver.io/placement"]}})


@pytest.mark.parametrize(
    ("token", "escaped"),
    [("nvidia.com/gpu", "nvidia.com~1gpu"), ("a~b", "a~0b"), ("~/", "~0~1"), ("plain", "plain")],
    ids=["slash", "tilde", "tilde-and-slash", "plain"],
)
def test_escape_pointer(token: str, escaped: str) -> None:
    assert escape_pointer(token) == escaped


def test_apply_operations_matches_rfc6902_and_refuses_what_it_does_not_do() -> None:
    body = pod(container(limits={MEM: "8000"}), gates=[OTHER_GATE])
    mutation = mutate_pod(body)
    ours = copy.deepcopy(body)
    apply_operations(ours, mutation.operations)
    assert ours == applied(body, mutation)
    with pytest.raises(ValueError, match="only 'add'"):
        apply_operations({}, [{"op": "remove", "path": "/a"}])
    with pytest.raises(ValueError, match="does not exist"):
        apply_operations({}, [{"op": "add", "path": "/a/b", "value": 1}])
    with pytest.raises(ValueError, match="out of range"):
        apply_operations({"a": []}, [{"op": "add", "path": "/a/3", "value": 1}])
    with pytest.raises(ValueError, match="JSON pointer"):
        apply_operations({}, [{"op": "add", "path": "a", "value": 1}])
    listed: dict[str, Any] = {"a": [1, 3], "b~/c": {}}
    apply_operations(listed, [{"op": "add", "path": "/a/1", "value": 2}])
    apply_operations(listed, [{"op": "add", "path": "/b~0~1c/d", "value": 4}])
    assert listed == {"a": [1, 2, 3], "b~/c": {"d": 4}}


# --- properties ---------------------------------------------------------------------------

GPU_NAMES = [GPU, MEM, PCT, CORES]
OTHER_NAMES = ["cpu", "memory", "amd.com/gpu", "nvidia.com/mig-1g.10gb", "example.com/x"]
quantities = st.one_of(
    st.sampled_from(["0", "1", "2", "8000", "50", "8Gi", "1.5", "-1", "abc", ""]),
    st.integers(-5, 100_000),
    st.none(),
)


def sections(names: list[str]) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.one_of(st.none(), st.dictionaries(st.sampled_from(names), quantities, max_size=4))


def containers(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    resources = st.fixed_dictionaries(
        {}, optional={"limits": sections(names), "requests": sections(names)}
    )
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c"]), "image": st.just("img")},
        optional={"resources": st.one_of(st.none(), resources)},
    )


def pods(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    spec = st.fixed_dictionaries(
        {"containers": st.lists(containers(names), max_size=4)},
        optional={
            "schedulingGates": st.one_of(
                st.none(),
                st.lists(
                    st.sampled_from([PLACEMENT_GATE, OTHER_GATE["name"]]), max_size=2, unique=True
                ).map(lambda names: [{"name": n} for n in names]),
            ),
            "initContainers": st.lists(containers(GPU_NAMES), max_size=1),
        },
    )
    annotations = st.dictionaries(
        st.sampled_from([ANNOTATION_ALLOCATION, "nvidia.com/vgpu-mode", "x"]),
        st.sampled_from(["", "{}", "mig"]),
        max_size=2,
    )
    metadata = st.fixed_dictionaries({"name": st.just("p"), "annotations": annotations})
    return st.fixed_dictionaries({"metadata": metadata, "spec": spec})


@settings(max_examples=300, deadline=None)
@given(pods(GPU_NAMES + OTHER_NAMES))
def test_property_the_webhook_on_its_own_output_changes_nothing(body: dict[str, Any]) -> None:
    mutation = mutate_pod(body)
    once = applied(body, mutation)
    assert mutate_pod(once).operations == ()
    if mutation.changed:
        gates = once["spec"]["schedulingGates"]
        assert gates.count(GATE) == 1
        # Our own applier agrees with the RFC 6902 reference.
        ours = copy.deepcopy(body)
        apply_operations(ours, mutation.operations)
        assert ours == once


@settings(max_examples=300, deadline=None)
@given(pods(OTHER_NAMES))
def test_property_a_pod_without_nvidia_resources_is_never_changed(body: dict[str, Any]) -> None:
    for container_ in body["spec"].get("initContainers", []):
        container_.pop("resources", None)  # init containers never count; keep this one plain
    mutation = mutate_pod(body)
    assert mutation.operations == ()


@settings(max_examples=300, deadline=None)
@given(pods(GPU_NAMES + OTHER_NAMES))
def test_property_defaulting_agrees_with_the_demand_the_operator_parses(
    body: dict[str, Any],
) -> None:
    """The count the webhook writes is the one `parse_pod` assumes when it is missing."""
    mutation = mutate_pod(body)
    after = applied(body, mutation)
    assert parse_pod(after, DEFAULTS) == parse_pod(body, DEFAULTS)
