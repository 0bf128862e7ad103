"""Request parsing: HAMi pod manifests to PodDemand, against docs/mig-reference.md section 5."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.resources.requests import (
    ContainerDemand,
    FieldError,
    InvalidRequest,
    PodDemand,
    RequestDefaults,
    VgpuMode,
    parse_pod,
    parse_quantity,
    wants_gpu,
)
from tests import builders

GPU = "nvidia.com/gpu"
MEM = "nvidia.com/gpumem"
PCT = "nvidia.com/gpumem-percentage"
CORES = "nvidia.com/gpucores"
PRIO = "nvidia.com/priority"
MODE = "nvidia.com/vgpu-mode"


def container(
    name: str = "main",
    limits: dict[str, Any] | None = None,
    requests: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = builders.container(name, image="ubuntu:22.04", limits=limits, requests=requests)
    body.setdefault("resources", {})
    return body


def pod(
    *containers: Any,
    annotations: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return builders.pod(
        "gpu-pod",
        "team-a",
        uid="0b5c9a52-3f0e-4d56-9d1a-4c7a1c1d2e3f",
        created="2025-01-02T03:04:05Z",
        annotations=annotations,
        containers=containers,
        typed=True,
        **spec,
    )


def demand_of(manifest: Any, defaults: RequestDefaults | None = None) -> PodDemand:
    result = parse_pod(manifest) if defaults is None else parse_pod(manifest, defaults)
    assert isinstance(result, PodDemand), str(result)
    return result


def errors_of(manifest: Any) -> tuple[FieldError, ...]:
    result = parse_pod(manifest)
    assert isinstance(result, InvalidRequest), f"expected an InvalidRequest, got {result}"
    assert result.errors
    return result.errors


# --- the seed example ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "memory"),
    [(2, 8000), ("2", "8k"), ("2", "8000")],
    ids=["as-written-in-yaml", "as-the-api-returns-it", "string-integers"],
)
def test_seed_example_pod_asks_for_two_mig_devices_of_8000_mib(gpus: Any, memory: Any) -> None:
    # The apiserver canonicalises 8000 to "8k", so that spelling must read as 8000 MiB.
    manifest = pod(
        container("ubuntu-container", limits={GPU: gpus, MEM: memory}),
        annotations={MODE: "mig"},
    )
    assert demand_of(manifest) == PodDemand(
        namespace="team-a",
        name="gpu-pod",
        uid="0b5c9a52-3f0e-4d56-9d1a-4c7a1c1d2e3f",
        containers=(
            ContainerDemand(
                name="ubuntu-container",
                count=2,
                memory_mib=8000,
                memory_percentage=None,
                cores=0,
                priority=None,
            ),
        ),
        mode=VgpuMode.MIG,
        created="2025-01-02T03:04:05Z",
    )


def test_pod_identity_and_totals() -> None:
    manifest = pod(
        container("a", limits={GPU: "1"}), container("b", limits={GPU: "3"}), priority=1000
    )
    demand = demand_of(manifest)
    assert demand.key == "team-a/gpu-pod"
    assert demand.total_devices == 4
    assert demand.pod_priority == 1000
    assert demand.mode is None


# --- one container: HAMi's rules ---------------------------------------------------------

# (limits, requests, defaults, expected (count, memory_mib, memory_percentage, cores, priority))
SINGLE_CONTAINER = [
    pytest.param(
        {GPU: "1", MEM: "4000"},
        {GPU: "3", MEM: "9000"},
        RequestDefaults(),
        (1, 4000, None, 0, None),
        id="limits-beat-requests",
    ),
    pytest.param(
        {MEM: "4000"},
        {GPU: "2", MEM: "9000"},
        RequestDefaults(),
        (2, 4000, None, 0, None),
        id="each-resource-looked-up-separately",
    ),
    pytest.param(
        None,
        {GPU: "1", MEM: "2000"},
        RequestDefaults(),
        (1, 2000, None, 0, None),
        id="request-only",
    ),
    pytest.param(
        {MEM: "3000"},
        None,
        RequestDefaults(),
        (1, 3000, None, 0, None),
        id="memory-only-one-device",
    ),
    pytest.param(
        {MEM: "3000"},
        None,
        RequestDefaults(default_gpu_num=3),
        (3, 3000, None, 0, None),
        id="memory-only-default-gpu-num",
    ),
    pytest.param(
        None,
        {CORES: "40"},
        RequestDefaults(),
        (1, None, 100, 40, None),
        id="cores-only-in-requests",
    ),
    pytest.param(
        {PCT: "50"}, None, RequestDefaults(), (1, None, 50, 0, None), id="percentage-only"
    ),
    pytest.param(
        {GPU: "1", MEM: "6000", PCT: "50"},
        None,
        RequestDefaults(),
        (1, 6000, None, 0, None),
        id="gpumem-wins-over-percentage",
    ),
    pytest.param(
        {GPU: "1", MEM: "0", PCT: "30"},
        None,
        RequestDefaults(),
        (1, None, 30, 0, None),
        id="gpumem-zero-is-unset",
    ),
    pytest.param(
        {MEM: "0"},
        None,
        RequestDefaults(default_memory=2048),
        (1, 2048, None, 0, None),
        id="gpumem-zero-falls-to-default-memory",
    ),
    pytest.param(
        {GPU: "1", PCT: "0"}, None, RequestDefaults(), (1, None, 100, 0, None), id="percentage-zero"
    ),
    pytest.param(
        {GPU: "2"},
        None,
        RequestDefaults(default_memory=4096),
        (2, 4096, None, 0, None),
        id="default-memory",
    ),
    pytest.param({GPU: "1"}, None, RequestDefaults(), (1, None, 100, 0, None), id="whole-device"),
    pytest.param(
        {GPU: "1", CORES: "30"}, None, RequestDefaults(), (1, None, 100, 30, None), id="cores"
    ),
    pytest.param(
        {GPU: "1"},
        None,
        RequestDefaults(default_cores=20),
        (1, None, 100, 20, None),
        id="default-cores",
    ),
    pytest.param(
        {GPU: "1", CORES: "0"},
        None,
        RequestDefaults(default_cores=20),
        (1, None, 100, 0, None),
        id="explicit-zero-cores-beat-default",
    ),
    pytest.param(
        {GPU: "1", PRIO: "1"}, None, RequestDefaults(), (1, None, 100, 0, 1), id="priority"
    ),
    pytest.param(
        {GPU: "2000m", MEM: "1Ki"},
        None,
        RequestDefaults(),
        (2, 1024, None, 0, None),
        id="quantity-suffixes",
    ),
    pytest.param(
        {"example.com/gpu": "2", "example.com/mem": "5000", GPU: "7"},
        None,
        RequestDefaults(resource_count="example.com/gpu", resource_memory="example.com/mem"),
        (2, 5000, None, 0, None),
        id="configured-resource-names",
    ),
]


@pytest.mark.parametrize(("limits", "requests", "defaults", "expected"), SINGLE_CONTAINER)
def test_single_container_demand(
    limits: dict[str, Any] | None,
    requests: dict[str, Any] | None,
    defaults: RequestDefaults,
    expected: tuple[int, int | None, int | None, int, int | None],
) -> None:
    demand = demand_of(pod(container("worker", limits, requests)), defaults)
    count, memory_mib, memory_percentage, cores, priority = expected
    assert demand.containers == (
        ContainerDemand("worker", count, memory_mib, memory_percentage, cores, priority),
    )


@pytest.mark.parametrize(
    ("manifest", "defaults"),
    [
        (pod(container()), RequestDefaults()),
        (pod({"name": "bare", "image": "busybox"}), RequestDefaults()),
        (pod(container(limits={"cpu": "2", "memory": "1Gi"})), RequestDefaults()),
        (pod(container(limits={GPU: "0"})), RequestDefaults()),
        (pod(container(limits={GPU: 0, MEM: "8000"})), RequestDefaults()),
        (pod(container(limits={PRIO: "0"})), RequestDefaults()),
        (pod(container(limits={MEM: "8000"})), RequestDefaults(default_gpu_num=0)),
        (
            pod(
                container(limits={"cpu": "1"}),
                initContainers=[container("init", limits={GPU: "1", MEM: "1000"})],
            ),
            RequestDefaults(),
        ),
        ({"metadata": {"name": "p", "namespace": "n"}}, RequestDefaults()),
        ({"metadata": {"name": "p"}, "spec": {"containers": None}}, RequestDefaults()),
    ],
    ids=[
        "empty-resources",
        "no-resources",
        "cpu-and-memory-only",
        "zero-gpus",
        "zero-gpus-with-memory",
        "priority-only",
        "memory-with-default-gpu-num-zero",
        "gpu-only-in-init-container",
        "no-spec",
        "null-containers",
    ],
)
def test_pods_without_gpu_demand_are_valid_and_empty(
    manifest: dict[str, Any], defaults: RequestDefaults
) -> None:
    demand = demand_of(manifest, defaults)
    assert demand.containers == ()
    assert demand.total_devices == 0


def test_multi_container_pod_keeps_gpu_containers_in_order() -> None:
    manifest = pod(
        container("trainer", limits={GPU: "2", MEM: "20000"}),
        container("sidecar", limits={"cpu": "100m"}),
        container("evaluator", requests={PCT: "25", CORES: "10"}),
        container("zero", limits={GPU: "0"}),
    )
    demand = demand_of(manifest)
    assert demand.containers == (
        ContainerDemand("trainer", 2, 20000, None, 0, None),
        ContainerDemand("evaluator", 1, None, 25, 10, None),
    )
    assert demand.total_devices == 3


# --- annotations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mig", VgpuMode.MIG),
        ("  MIG ", VgpuMode.MIG),
        ("hami-core", VgpuMode.HAMI_CORE),
        ("HAMi-Core", VgpuMode.HAMI_CORE),
        ("", None),
        ("   ", None),
    ],
    ids=["mig", "mig-upper-padded", "hami-core", "hami-core-mixed-case", "empty", "blank"],
)
def test_vgpu_mode(value: str, expected: VgpuMode | None) -> None:
    demand = demand_of(pod(container(limits={GPU: "1"}), annotations={MODE: value}))
    assert demand.mode is expected


def test_filters_and_policies() -> None:
    annotations = {
        "nvidia.com/use-gputype": "A100, h100-sxm5 ,,",
        "nvidia.com/nouse-gputype": " A30",
        "nvidia.com/use-gpuuuid": "GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313,GPU-30f9",
        "nvidia.com/nouse-gpuuuid": "",
        "hami.io/gpu-scheduler-policy": "Binpack",
        "hami.io/node-scheduler-policy": " spread ",
    }
    demand = demand_of(pod(container(limits={GPU: "1"}), annotations=annotations))
    assert demand.use_gputype == ("A100", "h100-sxm5")
    assert demand.nouse_gputype == ("A30",)
    assert demand.use_gpuuuid == ("GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313", "GPU-30f9")
    assert demand.nouse_gpuuuid == ()
    assert demand.gpu_scheduler_policy == "binpack"
    assert demand.node_scheduler_policy == "spread"


def test_absent_annotations_give_empty_filters() -> None:
    demand = demand_of(pod(container(limits={GPU: "1"})))
    assert (demand.use_gputype, demand.nouse_gputype) == ((), ())
    assert (demand.use_gpuuuid, demand.nouse_gpuuuid) == ((), ())
    assert demand.gpu_scheduler_policy is None
    assert demand.node_scheduler_policy is None


# --- invalid requests ----------------------------------------------------------------------


def lim(field: str) -> str:
    return f'spec.containers[1].resources.limits["{field}"]'


def second(limits: dict[str, Any] | None = None, requests: dict[str, Any] | None = None) -> Any:
    """A pod whose second container carries the bad value, so paths must name index 1."""
    return pod(container("ok", limits={GPU: "1"}), container("bad", limits, requests))


def ann(key: str) -> str:
    return f'metadata.annotations["{key}"]'


# (pod, field, value, words the reason must contain)
INVALID = [
    pytest.param(second({GPU: "-1"}), lim(GPU), "-1", "negative", id="negative-count"),
    pytest.param(second({GPU: -2}), lim(GPU), "-2", "negative", id="negative-int-count"),
    pytest.param(
        second({GPU: "abc"}), lim(GPU), "abc", "not a Kubernetes quantity", id="non-numeric-count"
    ),
    pytest.param(second({GPU: "1.5"}), lim(GPU), "1.5", "not a whole number", id="fraction-count"),
    pytest.param(second({GPU: "500m"}), lim(GPU), "500m", "not a whole number", id="milli-count"),
    pytest.param(second({GPU: 1.5}), lim(GPU), "1.5", "not a whole number", id="float-count"),
    pytest.param(second({GPU: True}), lim(GPU), "true", "boolean", id="boolean-count"),
    pytest.param(second({GPU: None}), lim(GPU), "null", "not a quantity", id="null-count"),
    pytest.param(second({GPU: ["1"]}), lim(GPU), "[...]", "list", id="list-count"),
    pytest.param(
        second({GPU: "4294967296"}), lim(GPU), "4294967296", "above", id="count-beyond-int32"
    ),
    pytest.param(second({MEM: "-5"}), lim(MEM), "-5", "negative", id="negative-memory"),
    pytest.param(
        second({MEM: "8GB"}), lim(MEM), "8GB", "not a Kubernetes quantity", id="memory-bad-suffix"
    ),
    pytest.param(
        second({MEM: "8 Gi"}), lim(MEM), "8 Gi", "not a Kubernetes quantity", id="memory-space"
    ),
    pytest.param(second({MEM: "8Gi"}), lim(MEM), "8Gi", "8 GiB is 8192", id="memory-in-bytes"),
    pytest.param(second({PCT: "150"}), lim(PCT), "150", "0 to 100", id="percentage-150"),
    pytest.param(second({PCT: "-1"}), lim(PCT), "-1", "negative", id="percentage-negative"),
    pytest.param(second({PCT: "50%"}), lim(PCT), "50%", "not a Kubernetes", id="percentage-sign"),
    pytest.param(second({CORES: "101"}), lim(CORES), "101", "0 to 100", id="cores-101"),
    pytest.param(second({CORES: "x"}), lim(CORES), "x", "not a Kubernetes", id="cores-text"),
    pytest.param(second({GPU: "1", PRIO: "-1"}), lim(PRIO), "-1", "negative", id="priority"),
    pytest.param(
        second({GPU: "1"}, {GPU: "abc"}),
        'spec.containers[1].resources.requests["nvidia.com/gpu"]',
        "abc",
        "not a Kubernetes quantity",
        id="bad-request-shadowed-by-limit",
    ),
    pytest.param(
        pod(container(limits={GPU: "1"}), annotations={MODE: "mps"}),
        ann(MODE),
        "mps",
        'expected "mig" or "hami-core"',
        id="bad-mode",
    ),
    pytest.param(
        pod(container(limits={GPU: "1"}), annotations={MODE: 1}),
        ann(MODE),
        "1",
        "expected a string",
        id="non-string-mode",
    ),
    pytest.param(
        pod(container(limits={GPU: "1"}), annotations={"nvidia.com/use-gputype": ["A100"]}),
        ann("nvidia.com/use-gputype"),
        "[...]",
        "expected a string",
        id="list-filter",
    ),
    pytest.param(
        pod(container(limits={GPU: "1"}), annotations={"hami.io/gpu-scheduler-policy": "pack"}),
        ann("hami.io/gpu-scheduler-policy"),
        "pack",
        '"binpack" or "spread"',
        id="bad-policy",
    ),
    pytest.param(
        pod(container(limits={GPU: "1"}), priority="high"),
        "spec.priority",
        "high",
        "integer",
        id="pod-priority-string",
    ),
    pytest.param(
        pod(container(), {"name": "x", "resources": ["limits"]}),
        "spec.containers[1].resources",
        "[...]",
        "expected an object",
        id="resources-list",
    ),
    pytest.param(
        pod(container(), {"name": "x", "resources": {"limits": "nvidia.com/gpu=1"}}),
        "spec.containers[1].resources.limits",
        "nvidia.com/gpu=1",
        "expected an object",
        id="limits-string",
    ),
    pytest.param(
        pod(container(), "main"),
        "spec.containers[1]",
        "main",
        "expected an object",
        id="container-string",
    ),
    pytest.param(
        {"metadata": {"name": "p"}, "spec": {"containers": {"main": {}}}},
        "spec.containers",
        "{...}",
        "expected a list",
        id="containers-object",
    ),
    pytest.param(
        {"metadata": {"name": 7}, "spec": {}}, "metadata.name", "7", "string", id="name-number"
    ),
    pytest.param(
        {"metadata": ["x"], "spec": {}},
        "metadata",
        "[...]",
        "expected an object",
        id="metadata-list",
    ),
    pytest.param(
        {"metadata": {"annotations": "mig"}},
        "metadata.annotations",
        "mig",
        "expected an object",
        id="annotations-string",
    ),
    pytest.param(["not", "a", "pod"], "pod", "[...]", "expected a pod", id="not-a-mapping"),
]


@pytest.mark.parametrize(("manifest", "field", "value", "reason"), INVALID)
def test_invalid_value_names_field_and_value(
    manifest: Any, field: str, value: str, reason: str
) -> None:
    (error,) = errors_of(manifest)
    assert (error.field, error.value) == (field, value)
    assert reason in error.reason


def test_all_errors_are_collected_in_order() -> None:
    manifest = pod(
        container("a", limits={GPU: "-1", MEM: "lots"}),
        container("b", limits={GPU: "1"}),
        container("c", requests={PCT: "150"}),
        annotations={MODE: "mps", "hami.io/node-scheduler-policy": "random"},
    )
    result = parse_pod(manifest)
    assert isinstance(result, InvalidRequest)
    assert result.pod == "team-a/gpu-pod"
    assert [(e.field, e.value) for e in result.errors] == [
        ('spec.containers[0].resources.limits["nvidia.com/gpu"]', "-1"),
        ('spec.containers[0].resources.limits["nvidia.com/gpumem"]', "lots"),
        ('spec.containers[2].resources.requests["nvidia.com/gpumem-percentage"]', "150"),
        ('metadata.annotations["nvidia.com/vgpu-mode"]', "mps"),
        ('metadata.annotations["hami.io/node-scheduler-policy"]', "random"),
    ]
    assert result.message == "; ".join(str(e) for e in result.errors)
    assert str(result).startswith("pod team-a/gpu-pod: ")


def test_field_error_renders_one_readable_line() -> None:
    (error,) = errors_of(second({PCT: "150"}))
    assert str(error) == (
        'spec.containers[1].resources.limits["nvidia.com/gpumem-percentage"] = "150": '
        "above 100; expected a percentage of device memory, 0 to 100"
    )
    (multiline,) = errors_of(second({GPU: 'two\n"gpus"\u2028'}))
    assert str(multiline).endswith(
        '= "two\\n\\"gpus\\"\\u2028": not a Kubernetes quantity (e.g. 2, 8000, 8k, 16Gi); '
        "expected a whole number of devices, 0 or more"
    )


def test_long_and_huge_values_are_shortened() -> None:
    (long_text,) = errors_of(second({GPU: "9" * 5000}))
    assert len(long_text.value) == 100
    assert long_text.value.endswith("…")
    (huge_int,) = errors_of(second({GPU: 10**5000}))
    assert huge_int.value == "<16610-bit integer>"
    assert huge_int.reason.startswith("too large")


# --- quantities ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2),
        (8000, 8000),
        ("8k", 8000),
        ("3M", 3_000_000),
        ("2G", 2 * 10**9),
        ("1T", 10**12),
        ("4Ki", 4096),
        ("2Mi", 2 * 2**20),
        ("16Gi", 16 * 2**30),
        ("1Ti", 2**40),
        ("2000m", 2),
        ("1.5k", 1500),
        ("0.5Ki", 512),
        ("1e3", 1000),
        ("+3", 3),
        ("-0", 0),
        (2.0, 2),
    ],
    ids=repr,
)
def test_parse_quantity_accepts(text: object, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.5", "not a whole number"),
        ("1500m", "not a whole number"),
        ("0.3Ki", "not a whole number"),
        ("-1", "negative"),
        (-3, "negative"),
        ("abc", "not a Kubernetes quantity"),
        ("", "not a Kubernetes quantity"),
        ("1KB", "not a Kubernetes quantity"),
        ("1ki", "not a Kubernetes quantity"),
        (" 2", "not a Kubernetes quantity"),
        ("\u0663", "not a Kubernetes quantity"),
        ("1e999", "too large"),
        ("9Ei", "too large"),
        (float("nan"), "not a finite number"),
        (None, "not a quantity"),
        (False, "boolean"),
    ],
    ids=repr,
)
def test_parse_quantity_rejects(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_quantity(text)


SUFFIX_FACTORS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SUFFIX_FACTORS)))
def test_parse_quantity_scales_by_suffix(number: int, suffix: str) -> None:
    assert parse_quantity(f"{number}{suffix}") == number * SUFFIX_FACTORS[suffix]


# --- wants_gpu -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (pod(container(limits={GPU: "1"})), True),
        (pod(container(requests={MEM: "1000"})), True),
        (pod(container(), container(limits={PCT: "10"})), True),
        (pod(container(limits={CORES: "abc"})), True),
        (pod(container(limits={GPU: "0"})), True),
        (pod(container(limits={"cpu": "1", PRIO: "1"})), False),
        (pod(container(), initContainers=[container(limits={GPU: "1"})]), False),
        (pod("not-a-container", container(limits={"memory": "1Gi"})), False),
        ({"spec": {"containers": {"a": {}}}}, False),
        ({}, False),
    ],
    ids=[
        "count-in-limits",
        "memory-in-requests",
        "second-container-percentage",
        "bad-value-still-counts",
        "explicit-zero-still-named",
        "priority-alone",
        "init-container-only",
        "junk-container",
        "containers-object",
        "empty",
    ],
)
def test_wants_gpu(manifest: Any, expected: bool) -> None:
    assert wants_gpu(manifest) is expected


def test_wants_gpu_uses_configured_names() -> None:
    custom = RequestDefaults(resource_cores="example.com/cores")
    manifest = pod(container(limits={"example.com/cores": "10"}))
    assert wants_gpu(manifest, custom)
    assert not wants_gpu(manifest)


# --- never raises --------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "spec",
                    "containers",
                    "resources",
                    "limits",
                    "requests",
                    "annotations",
                    "name",
                    "priority",
                    GPU,
                    MEM,
                    PCT,
                    CORES,
                    PRIO,
                    MODE,
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def check_result(result: PodDemand | InvalidRequest) -> None:
    if isinstance(result, InvalidRequest):
        assert result.errors
        assert "\n" not in result.message
    else:
        for c in result.containers:
            assert c.count >= 1
            assert (c.memory_mib is None) != (c.memory_percentage is None)
            assert 0 <= c.cores <= 100


@settings(max_examples=300)
@given(json_like)
def test_parse_pod_never_raises_on_json_like_input(document: Any) -> None:
    check_result(parse_pod(document))
    wants_gpu(document)
    for shaped in (
        {"metadata": document, "spec": document},
        {"spec": {"containers": document}},
        {"spec": {"containers": [document]}},
        {"spec": {"containers": [{"resources": document}]}},
        {"spec": {"containers": [{"resources": {"limits": document}}]}},
    ):
        check_result(parse_pod(shaped))
        wants_gpu(shaped)


resource_value = st.text() | st.from_regex(r"[+-]?[0-9]{0,12}(\.[0-9]{0,4})?([kMGTPE]i?|m|e[0-9])?")


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from([GPU, MEM, PCT, CORES, PRIO]), resource_value, min_size=1),
    st.dictionaries(st.sampled_from([GPU, MEM, PCT, CORES]), resource_value),
    st.text(),
)
def test_parse_pod_never_raises_on_arbitrary_resource_strings(
    limits: dict[str, str], requests: dict[str, str], mode: str
) -> None:
    manifest = pod(container(limits=limits, requests=requests), annotations={MODE: mode})
    result = parse_pod(manifest)
    check_result(result)
    if isinstance(result, InvalidRequest):
        assert all(
            e.field.startswith(("spec.containers[0].resources.", "metadata.annotations["))
            for e in result.errors
        )
