"""Every planning rule of issue 4, one table test each (docs/planner.md, "Rules")."""

from __future__ import annotations

import pytest

from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.plan import Assignment, PlannerOptions, Unplaceable
from migweaver.core.planning.planner import plan
from migweaver.core.planning.snapshot import Snapshot
from migweaver.core.resources.requests import PodDemand
from tests.unit.planner_helpers import SEED_CONFIG, check_plan, cluster, config, container, pod

A100 = "A100-SXM4-80GB"


def one_gpu(instances: str = "[]", *, model: str = A100, extra: str = "") -> Snapshot:
    return cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  gpus:
  - {{model: {model}, instances: {instances}{extra}}}
"""
    )


def placed(result: object) -> Assignment:
    assert isinstance(result, Assignment), result
    return result


def waiting(result: object) -> Unplaceable:
    assert isinstance(result, Unplaceable), result
    return result


def run(snapshot: Snapshot, pods: list[PodDemand], text: str | None = None, **options: float):
    device_config = config(text) if text is not None else None
    result = plan(snapshot, pods, device_config, PlannerOptions(**options))  # type: ignore[arg-type]
    check_plan(snapshot, pods, result, device_config)
    return result


# --------------------------------------------------------------------------- devices


def test_seed_pod_gets_two_instances_of_at_least_8000_mib_on_one_node() -> None:
    snapshot = cluster(f"nodes: [{{name: node-a, mode: mig, gpus: {{model: {A100}, count: 2}}}}]")
    result = run(snapshot, [pod("gpu-pod", gpu=2, mem=8000, mode="mig")])
    assignment = placed(result.pods["default/gpu-pod"])
    devices = assignment.devices
    assert len(devices) == 2
    assert assignment.node == "node-a"
    assert {d.profile for d in devices} == {"1g.10gb"}
    assert all(d.memory_mib >= 8000 and d.new_instance for d in devices)
    # Both on the same GPU: the other stays whole for a large pod.
    assert len({d.gpu_index for d in devices}) == 1


@pytest.mark.parametrize(
    ("mem", "pct", "cores", "geometries", "profile"),
    [
        (8000, None, None, None, "1g.10gb"),
        (15000, None, None, None, "1g.20gb"),
        (15000, None, None, SEED_CONFIG, "2g.20gb"),
        (30000, None, None, None, "3g.40gb"),
        (30000, None, None, SEED_CONFIG, "3g.40gb"),
        (50000, None, None, None, "7g.80gb"),
        (50000, None, None, SEED_CONFIG, "7g.80gb"),
        (8000, None, 50, None, "4g.40gb"),
        (8000, None, 50, SEED_CONFIG, "7g.80gb"),
        (None, 50, None, None, "3g.40gb"),
        (None, 25, None, None, "1g.20gb"),
        (None, 100, None, None, "7g.80gb"),
        (None, None, None, None, "7g.80gb"),
    ],
    ids=[
        "8000MiB-1g",
        "15000MiB-1g.20gb-without-config",
        "15000MiB-2g-in-seed-geometry",
        "30000MiB-3g",
        "30000MiB-3g-seed",
        "50000MiB-7g",
        "50000MiB-7g-seed",
        "cores-50pct-floor-4g",
        "cores-50pct-seed-has-no-4g-so-7g",
        "50pct-memory-is-half-the-slots-3g",
        "25pct-memory-2-slots",
        "100pct-memory-whole-gpu",
        "no-memory-means-100pct",
    ],
)
def test_smallest_profile_that_serves(
    mem: int | None, pct: int | None, cores: int | None, geometries: str | None, profile: str
) -> None:
    demand = pod("p", gpu=1, mem=mem, pct=pct, cores=cores, mode="mig")
    result = run(one_gpu(), [demand], geometries)
    (device,) = placed(result.pods["default/p"]).devices
    assert device.profile == profile


def test_memory_fit_uses_nvml_physical_mib_not_the_configured_rounded_value() -> None:
    # 1g.10gb is configured as 10240 MiB but NVML gives 9728: a 10000 MiB pod needs more.
    result = run(one_gpu(), [pod("p", mem=10000, mode="mig")], SEED_CONFIG)
    (device,) = placed(result.pods["default/p"]).devices
    assert device.profile == "2g.20gb"
    assert device.memory_mib == 19968


# --------------------------------------------------------------------------- safety


def test_in_use_instance_is_never_touched_and_the_free_half_is_repartitioned() -> None:
    snapshot = one_gpu("[{profile: 3g.40gb, placement: 0, inUse: true, pod: ml/train}]")
    pods = [pod(f"p{i}", mem=8000, mode="mig") for i in range(4)]
    result = run(snapshot, pods)
    layout = result.layouts[("node-a", 0)]
    assert layout[0].profile == "3g.40gb"
    assert layout[0].placement == Placement(0, 4)
    assert sorted(i.placement.start for i in layout[1:]) == [4, 5, 6]
    assert isinstance(result.pods["default/p3"], Unplaceable)


def test_reserved_instance_is_not_given_to_another_pod() -> None:
    snapshot = one_gpu("[{profile: 1g.10gb, placement: 6, pod: other/waiting}]")
    result = run(snapshot, [pod("p", mem=8000, mode="mig")])
    (device,) = placed(result.pods["default/p"]).devices
    assert device.placement != Placement(6, 1)
    assert device.new_instance


STATIC = """[{profile: 2g.20gb, placement: 0, uuid: MIG-2g},
             {profile: 1g.10gb, placement: 2, uuid: MIG-1g},
             {profile: 3g.40gb, placement: 4, inUse: true}]"""


def test_static_layout_never_changes_but_its_free_instances_are_assigned() -> None:
    snapshot = one_gpu(STATIC, extra=", policy: static")
    result = run(snapshot, [pod("small", mem=8000, mode="mig"), pod("big", mem=30000, mode="mig")])
    (device,) = placed(result.pods["default/small"]).devices
    assert (device.profile, device.instance_uuid, device.new_instance) == (
        "1g.10gb",
        "MIG-1g",
        False,
    )
    assert result.layouts == {}
    assert "largest free: 2g.20gb on node-a/gpu0" in waiting(result.pods["default/big"]).reason


def test_an_existing_free_instance_is_preferred_the_smallest_that_fits() -> None:
    snapshot = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  gpus:
  - model: {A100}
    instances:
    - {{profile: 3g.40gb, placement: 0}}
    - {{profile: 1g.10gb, placement: 6, uuid: MIG-small}}
  - {{model: {A100}}}
"""
    )
    result = run(snapshot, [pod("p", mem=8000, mode="mig")])
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.gpu_index, device.instance_uuid, device.new_instance) == (0, "MIG-small", False)
    assert result.layouts == {}
    assert result.reservations[("node-a", 0)][0][1] == "default/p"


def test_idle_instances_are_destroyed_only_when_the_space_is_needed_and_fewest_first() -> None:
    snapshot = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  gpus:
  - model: {A100}
    instances: [{{profile: 1g.10gb, placement: 0}}, {{profile: 1g.10gb, placement: 1}}]
  - {{model: {A100}, instances: [{{profile: 1g.10gb, placement: 6}}]}}
"""
    )
    result = run(snapshot, [pod("whole", mem=60000, mode="mig")])
    (device,) = placed(result.pods["default/whole"]).devices
    assert device.gpu_index == 1
    assert [str(i) for i in result.layouts[("node-a", 1)]] == ["7g.80gb@0:8"]
    assert ("node-a", 0) not in result.layouts


IDLE_7G = "[{profile: 7g.80gb, placement: 0, uuid: MIG-whole}]"
BUSY_3G_IDLE_3G = (
    "[{profile: 3g.40gb, placement: 0, inUse: true},"
    " {profile: 3g.40gb, placement: 4, uuid: MIG-half}]"
)


@pytest.mark.parametrize(
    ("gpus", "geometries", "mem", "expected"),
    [
        ([IDLE_7G], SEED_CONFIG, 30000, (0, "3g.40gb", True)),
        ([IDLE_7G], None, 18000, (0, "1g.20gb", True)),
        ([IDLE_7G, "[]"], SEED_CONFIG, 30000, (1, "3g.40gb", True)),
        (["[{profile: 1g.10gb, placement: 6, uuid: MIG-small}]"], SEED_CONFIG, 8000,
         (0, "1g.10gb", False)),
        ([IDLE_7G], SEED_CONFIG, 70000, (0, "7g.80gb", False)),
        ([BUSY_3G_IDLE_3G], None, 8000, (0, "3g.40gb", False)),
    ],
    ids=[
        "oversized-idle-7g-on-an-unused-gpu-is-repartitioned-for-a-3g",
        "oversized-idle-7g-on-an-unused-gpu-is-repartitioned-without-geometries",
        "an-empty-gpu-before-repartitioning-an-unused-one",
        "a-right-sized-idle-instance-on-an-unused-gpu-is-still-reused",
        "the-idle-7g-still-serves-a-whole-gpu-pod",
        "on-a-gpu-where-something-runs-an-idle-instance-still-comes-first",
    ],
)  # fmt: skip
def test_an_unused_gpu_keeps_its_idle_instances_only_at_their_size(
    gpus: list[str], geometries: str | None, mem: int, expected: tuple[int, str, bool]
) -> None:
    # Nothing runs on the GPU with the idle 7g.80gb (a whole-GPU job just left). Reusing
    # it for a smaller pod (the old ranking: an existing free instance before anything
    # else) would give a half-GPU notebook the whole GPU and keep the GPU whole for every
    # such pod after it; it is re-partitioned like an empty GPU instead, and an empty GPU
    # comes first, which keeps the 7g for a whole-GPU pod.
    entries = ", ".join(f"{{model: {A100}, instances: {i}}}" for i in gpus)
    snapshot = cluster(f"nodes: [{{name: node-a, mode: mig, gpus: [{entries}]}}]")
    result = run(snapshot, [pod("p", mem=mem, mode="mig")], geometries)
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.gpu_index, device.profile, device.new_instance) == expected
    if expected[0] == 1:
        assert ("node-a", 0) not in result.layouts


# --------------------------------------------------------------------------- placement


def test_1g_on_an_empty_a100_goes_high_so_4g_and_3g_still_fit() -> None:
    pods = [pod("a", mem=8000, mode="mig"), pod("b", mem=8000, cores=50, mode="mig")]
    result = run(one_gpu(), pods)
    assert [str(i) for i in result.layouts[("node-a", 0)]] == ["4g.40gb@0:4", "1g.10gb@6:1"]


def test_2g_on_an_empty_a100_keeps_the_4g_placement() -> None:
    result = run(one_gpu(), [pod("p", mem=15000, cores=20, mode="mig")])
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.profile, device.placement) == ("2g.20gb", Placement(4, 2))


def test_binpack_prefers_the_partly_used_gpu_and_node() -> None:
    snapshot = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  gpus: [{{model: {A100}}}]
- name: node-b
  mode: mig
  gpus:
  - {{model: {A100}}}
  - {{model: {A100}, instances: [{{profile: 3g.40gb, placement: 0, inUse: true}}]}}
"""
    )
    result = run(snapshot, [pod("p", mem=8000, mode="mig")])
    (device,) = placed(result.pods["default/p"]).devices
    assert device.gpu_key == ("node-b", 1)


def test_gpus_already_in_mig_mode_are_preferred_and_others_are_switched_on_when_needed() -> None:
    snapshot = one_gpu(extra=", migEnabled: false")
    result = run(snapshot, [pod("p", mem=8000, mode="mig")])
    assert result.mig_enabled == {("node-a", 0): True}
    two = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  gpus: [{{model: {A100}, migEnabled: false}}, {{model: {A100}}}]
"""
    )
    result = run(two, [pod("p", mem=8000, mode="mig")])
    (device,) = placed(result.pods["default/p"]).devices
    assert device.gpu_index == 1
    assert result.mig_enabled == {}


def test_a_mig_gpu_still_holding_hami_core_shares_is_not_switched() -> None:
    snapshot = one_gpu(extra=", migEnabled: false, shares: [{pod: old/x, memoryMiB: 1000}]")
    result = run(snapshot, [pod("p", mem=8000, mode="mig")])
    assert isinstance(result.pods["default/p"], Unplaceable)
    assert result.mig_enabled == {}


# --------------------------------------------------------------------------- geometries


def test_geometry_the_first_that_serves_in_config_order() -> None:
    pods = [pod("small", mem=8000, mode="mig"), pod("mid", mem=15000, mode="mig")]
    snapshot = cluster(f"nodes: [{{name: node-a, mode: mig, gpus: {{model: {A100}, count: 2}}}}]")
    result = run(snapshot, pods, SEED_CONFIG)
    # 15000 MiB: no 1g.20gb in any geometry, so the first that serves is 2g x3 + 1g.
    mid = placed(result.pods["default/mid"]).devices[0]
    assert mid.profile == "2g.20gb"
    small = placed(result.pods["default/small"]).devices[0]
    assert small.profile == "1g.10gb"
    # The GPU now in 2g x3 + 1g still has that 1g free at slot 6: the small pod takes it
    # (binpack) rather than putting the other GPU in 1g x7, which stays whole.
    assert (small.gpu_index, small.placement) == (mid.gpu_index, Placement(6, 1))
    assert list(result.layouts) == [("node-a", mid.gpu_index)]


def test_geometry_new_instance_placed_so_the_rest_of_the_geometry_still_fits() -> None:
    snapshot = one_gpu("[{profile: 2g.20gb, placement: 0, inUse: true}]")
    result = run(snapshot, [pod("p", mem=8000, mode="mig")], SEED_CONFIG)
    (device,) = placed(result.pods["default/p"]).devices
    # 2g x3 + 1g: the 2g at 0 is busy, 2g at 2 and 4 must stay possible, so the 1g is at 6.
    assert (device.profile, device.placement) == ("1g.10gb", Placement(6, 1))


def test_geometry_switch_allowed_when_busy_instances_fit_the_new_geometry_in_place() -> None:
    snapshot = one_gpu("[{profile: 1g.10gb, placement: 6, inUse: true}]")
    result = run(snapshot, [pod("p", mem=15000, mode="mig")], SEED_CONFIG)
    (device,) = placed(result.pods["default/p"]).devices
    assert device.profile == "2g.20gb"


def test_geometry_switch_refused_when_a_busy_instance_sits_in_the_way() -> None:
    # 2g x3 + 1g needs slots 0-5 for the 2g's: a busy 1g at slot 0 rules it out.
    snapshot = one_gpu("[{profile: 1g.10gb, placement: 0, inUse: true}]")
    result = run(snapshot, [pod("p", mem=15000, mode="mig")], SEED_CONFIG)
    reason = waiting(result.pods["default/p"]).reason
    assert reason == (
        "no eligible GPU has a free placement for 2g.20gb; largest free: 1g.10gb on node-a/gpu0"
    )


def test_geometry_with_a_busy_3g_small_pod_gets_the_other_3g() -> None:
    snapshot = one_gpu("[{profile: 3g.40gb, placement: 0, inUse: true}]")
    result = run(snapshot, [pod("p", mem=8000, mode="mig")], SEED_CONFIG)
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.profile, device.placement) == ("3g.40gb", Placement(4, 4))


# --------------------------------------------------------------------------- hami-core

HAMI = """
nodes:
- name: node-h
  mode: hami-core
  gpus:
  - {model: A100-SXM4-80GB, shares: [{pod: run/a, memoryMiB: 10000, cores: 20}]}
  - {model: A100-SXM4-80GB}
"""


@pytest.mark.parametrize(
    ("annotations", "gpu_index"),
    [({}, 0), ({"hami.io/gpu-scheduler-policy": "spread"}, 1)],
    ids=["binpack-default", "gpu-spread"],
)
def test_hami_core_binpack_or_spread(annotations: dict[str, str], gpu_index: int) -> None:
    result = run(cluster(HAMI), [pod("p", mem=8000, mode="hami-core", annotations=annotations)])
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.mode, device.gpu_index, device.memory_mib) == ("hami-core", gpu_index, 8000)


@pytest.mark.parametrize(
    ("annotations", "node"),
    [({}, "node-h"), ({"hami.io/node-scheduler-policy": "spread"}, "node-i")],
    ids=["node-binpack", "node-spread"],
)
def test_hami_core_node_policy(annotations: dict[str, str], node: str) -> None:
    text = HAMI + "- {name: node-i, mode: hami-core, gpus: {model: A100-SXM4-80GB, count: 2}}\n"
    result = run(cluster(text), [pod("p", mem=8000, mode="hami-core", annotations=annotations)])
    assert placed(result.pods["default/p"]).node == node


@pytest.mark.parametrize(
    ("config_text", "demand", "fits"),
    [
        ("nvidia: {}", {"mem": 72000}, False),
        ("nvidia: {deviceMemoryScaling: 2}", {"mem": 72000}, True),
        ("nvidia: {deviceSplitCount: 1}", {"mem": 1000}, False),
        ("nvidia: {}", {"mem": 1000, "cores": 90}, False),
        ("nvidia: {deviceCoreScaling: 2}", {"mem": 1000, "cores": 90}, True),
        ("nvidia: {}", {"mem": 1000, "cores": 100}, False),
        ("nvidia: {}", {"pct": 80}, True),
        ("nvidia: {}", {"pct": 90}, False),
    ],
    ids=[
        "memory-full",
        "memory-scaling",
        "split-count",
        "cores-full",
        "core-scaling",
        "exclusive-needs-an-unshared-gpu",
        "percentage-of-memory-fits",
        "percentage-of-memory-too-much",
    ],
)
def test_hami_core_limits(config_text: str, demand: dict[str, int], fits: bool) -> None:
    text = """
nodes:
- name: node-h
  mode: hami-core
  gpus: [{model: A100-SXM4-80GB, shares: [{pod: run/a, memoryMiB: 10000, cores: 20}]}]
"""
    result = run(cluster(text), [pod("p", mode="hami-core", **demand)], config_text)  # type: ignore[arg-type]
    assert isinstance(result.pods["default/p"], Assignment) is fits


def test_hami_core_devices_of_a_container_are_on_distinct_gpus() -> None:
    result = run(cluster(HAMI), [pod("p", gpu=2, mem=1000, mode="hami-core")])
    devices = placed(result.pods["default/p"]).devices
    assert sorted(d.gpu_index for d in devices) == [0, 1]
    result = run(cluster(HAMI), [pod("p", gpu=3, mem=1000, mode="hami-core")])
    assert waiting(result.pods["default/p"]).reason == (
        "needs 3 devices on one node; the best node (node-h) can offer 2"
    )


# --------------------------------------------------------------------------- mode tie-break

MIXED = f"""
nodes:
- name: node-a
  mode: mig
  gpus: [{{model: {A100}, instances: [{{profile: 1g.10gb, placement: 6}}]}}]
- name: node-h
  mode: hami-core
  gpus: [{{model: {A100}}}]
"""


def test_a_pod_without_mode_takes_an_existing_free_instance_first() -> None:
    result = run(cluster(MIXED), [pod("p", mem=8000)])
    (device,) = placed(result.pods["default/p"]).devices
    assert (device.mode, device.profile, device.new_instance) == ("mig", "1g.10gb", False)


def test_a_pod_without_mode_then_takes_the_smaller_share_of_a_gpu() -> None:
    pods = [pod("first", mem=8000, mode="mig"), pod("p", mem=8000)]
    result = run(cluster(MIXED), pods)
    # A new 1g instance is 1/8 of the memory and 1/7 of the compute; a share is 8000 MiB.
    assert placed(result.pods["default/p"]).devices[0].mode == "hami-core"
    small_hami = MIXED.replace(f"gpus: [{{model: {A100}}}]", "gpus: [{model: A100-SXM4-40GB}]")
    big = run(cluster(small_hami), [pods[0], pod("p", mem=40000, cores=42)])
    # 40000 MiB and 42 % of an A100-40GB is more of a GPU than a 3g.40gb of an A100-80GB.
    assert placed(big.pods["default/p"]).devices[0].profile == "3g.40gb"


# --------------------------------------------------------------------------- filters

FILTERS = f"""
nodes:
- name: node-a
  mode: mig
  gpus: {{model: {A100}, count: 8}}
- name: node-b
  mode: mig
  gpus: [{{model: H100-SXM5-80GB, uuid: GPU-h100-0}}, {{model: H100-SXM5-80GB, uuid: GPU-h100-1}}]
- name: node-h
  mode: hami-core
  gpus: {{model: A100-SXM4-40GB, count: 4}}
"""


@pytest.mark.parametrize(
    ("annotations", "mode", "gpus"),
    [
        ({"nvidia.com/use-gputype": "h100"}, None, {("node-b", 0)}),
        ({"nvidia.com/nouse-gputype": "A100"}, None, {("node-b", 0)}),
        ({"nvidia.com/use-gputype": "A100-SXM4-40"}, None, {("node-h", 0)}),
        ({"nvidia.com/use-gpuuuid": "GPU-h100-1"}, None, {("node-b", 1)}),
        ({"nvidia.com/nouse-gpuuuid": "GPU-h100-0", "nvidia.com/use-gputype": "H100"}, None,
         {("node-b", 1)}),
        ({}, "hami-core", {("node-h", 0)}),
    ],
    ids=["use-gputype-case-insensitive", "nouse-gputype", "use-gputype-substring",
         "use-gpuuuid", "nouse-gpuuuid", "vgpu-mode"],
)  # fmt: skip
def test_filters(annotations: dict[str, str], mode: str | None, gpus: set[tuple[str, int]]) -> None:
    result = run(
        cluster(FILTERS), [pod("p", mem=30000, cores=40, mode=mode, annotations=annotations)]
    )
    assert {d.gpu_key for d in placed(result.pods["default/p"]).devices} == gpus


# --------------------------------------------------------------------------- reasons


USE_A100 = {"nvidia.com/use-gputype": "A100"}
USE_H100 = {"nvidia.com/use-gputype": "H100"}


@pytest.mark.parametrize(
    ("demand", "reason"),
    [
        (
            {"gpu": 1, "mode": "mig", "annotations": {"nvidia.com/nouse-gputype": "A100,H100"}},
            "no GPU passes the pod's filters: nvidia.com/nouse-gputype=A100,H100 excludes "
            "8 GPUs; nvidia.com/vgpu-mode=mig excludes 4 hami-core GPUs",
        ),
        (
            {"mem": 200000},
            "asks 200000 MiB per device; the largest profile of any eligible GPU is 7g.80gb "
            "(81152 MiB) and the largest eligible hami-core GPU shares 40960 MiB",
        ),
        (
            {"mem": 8000, "cores": 100, "mode": "mig", "annotations": USE_A100},
            "no eligible GPU has a free placement for 7g.80gb; "
            "largest free: 4g.40gb on node-a/gpu0",
        ),
        (
            {"gpu": 5, "mem": 30000, "mode": "mig", "annotations": USE_H100},
            "needs 5 devices on one node; the best node (node-b) can offer 4",
        ),
    ],
    ids=["filters", "too-big-for-any-gpu", "no-free-placement-now", "not-enough-on-one-node"],
)  # fmt: skip
def test_reasons_name_the_nearest_miss(demand: dict[str, object], reason: str) -> None:
    code = {"no GPU": "Filtered", "asks": "TooLarge", "no eligible": "NoRoom"}
    busy = (
        f"gpus: [{{model: {A100}, instances: [{{profile: 3g.40gb, placement: 4, inUse: true}}]}},"
        f" {{model: {A100}, instances: [{{profile: 7g.80gb, placement: 0, inUse: true}}]}}]"
    )
    snapshot = cluster(FILTERS.replace(f"gpus: {{model: {A100}, count: 8}}", busy))
    result = run(snapshot, [pod("p", **demand)])  # type: ignore[arg-type]
    assert waiting(result.pods["default/p"]).reason == reason
    expected = next((c for start, c in code.items() if reason.startswith(start)), "NotOnOneNode")
    assert waiting(result.pods["default/p"]).code == expected


def test_reason_for_a_too_big_pod_on_h200() -> None:
    snapshot = one_gpu(model="H200-141GB")
    result = run(snapshot, [pod("p", mem=200000)])
    assert waiting(result.pods["default/p"]).reason == (
        "asks 200000 MiB per device; the largest profile of any eligible GPU is 7g.141gb "
        "(143360 MiB)"
    )


# --------------------------------------------------------------------------- pods


def test_all_containers_of_a_pod_on_one_node() -> None:
    half = f"{{model: {A100}, instances: [{{profile: 3g.40gb, placement: 0, inUse: true}}]}}"
    snapshot = cluster(
        f"nodes: [{{name: node-a, mode: mig, gpus: [{half}]}},"
        f" {{name: node-b, mode: mig, gpus: [{half}]}}]"
    )
    two = [container("one", mem=30000), container("two", mem=30000)]
    result = run(snapshot, [pod("p", containers=two, mode="mig")])
    assert waiting(result.pods["default/p"]).reason == (
        "needs 2 devices on one node; the best node (node-a) can offer 1"
    )
    result = run(one_gpu(), [pod("p", containers=two, mode="mig")])
    assignment = placed(result.pods["default/p"])
    assert [c.name for c in assignment.containers] == ["one", "two"]


def test_order_priority_then_creation_time() -> None:
    pods = [
        pod("a-young", mem=60000, mode="mig", created="2024-01-01T00:00:10Z"),
        pod("b-old", mem=60000, mode="mig", created="2024-01-01T00:00:00Z"),
        pod("c-important", mem=60000, mode="mig", created="2024-01-01T00:00:20Z", priority=100),
    ]
    result = run(one_gpu(), pods)
    assert list(result.pods) == ["default/c-important", "default/b-old", "default/a-young"]
    assert isinstance(result.pods["default/c-important"], Assignment)
    result = run(one_gpu(), pods[:2])
    assert isinstance(result.pods["default/b-old"], Assignment)
    assert isinstance(result.pods["default/a-young"], Unplaceable)


def test_pods_without_gpu_and_duplicates() -> None:
    pods = [pod("none", gpu=0), pod("p", mem=8000), pod("p", mem=8000)]
    result = run(one_gpu(), pods)
    assert result.pods["default/none"] == Assignment("default/none", None, ())
    assert len(result.pods) == 2


# --------------------------------------------------------------------------- starvation

STARVING = f"""
nodes:
- name: node-a
  mode: mig
  gpus:
  - {{model: {A100}, instances: [{{profile: 1g.10gb, placement: 6, inUse: true}}]}}
  - {{model: {A100}, instances: [{{profile: 7g.80gb, placement: 0, inUse: true}}]}}
"""


def starving_pods() -> list[PodDemand]:
    return [
        pod("big", mem=60000, mode="mig", created="2024-01-01T00:00:00Z"),
        pod("small", mem=8000, mode="mig", created="2024-01-01T00:09:00Z"),
    ]


def test_a_pod_that_waited_long_holds_the_gpu_it_fits_on_soonest() -> None:
    now = 1704067200.0 + 600  # 2024-01-01T00:10:00Z
    result = run(cluster(STARVING, now=now), starving_pods(), starvation_after=300)
    big = waiting(result.pods["default/big"])
    assert big.holds == (("node-a", 0),)
    assert "waiting 600 s, it now holds node-a/gpu0 until they drain" in big.reason
    assert result.held == {("node-a", 0): "default/big"}
    small = waiting(result.pods["default/small"])
    assert "1 eligible GPU held for starving pod(s) default/big" in small.reason


@pytest.mark.parametrize(
    ("now", "max_holds"), [(1704067200.0 + 100, 4), (1704067200.0 + 600, 0)],
    ids=["not-waited-long-enough", "holds-disabled"],
)  # fmt: skip
def test_no_hold_before_the_wait_or_beyond_max_holds(now: float, max_holds: int) -> None:
    result = run(
        cluster(STARVING, now=now), starving_pods(), starvation_after=300, max_holds=max_holds
    )
    assert waiting(result.pods["default/big"]).holds == ()
    assert isinstance(result.pods["default/small"], Assignment)


# --------------------------------------------------------------------------- reservations


def test_a_pending_pod_keeps_the_reservation_an_earlier_plan_made() -> None:
    snapshot = one_gpu("[{profile: 1g.10gb, placement: 6, pod: default/p}]")
    result = run(snapshot, [pod("p", mem=8000, mode="mig"), pod("q", mem=8000, mode="mig")])
    mine = placed(result.pods["default/p"])
    assert mine.reused
    assert mine.devices[0].placement == Placement(6, 1)
    other = placed(result.pods["default/q"])
    assert other.devices[0].placement != Placement(6, 1)


def test_a_reservation_that_no_longer_serves_the_pod_is_released() -> None:
    snapshot = one_gpu("[{profile: 1g.10gb, placement: 6, pod: default/p}]")
    result = run(snapshot, [pod("p", mem=30000, mode="mig")])
    mine = placed(result.pods["default/p"])
    assert not mine.reused
    assert mine.devices[0].profile == "3g.40gb"


@pytest.mark.parametrize("scaling", [0.5, 1, 2], ids=["scaled-down", "unscaled", "scaled-up"])
def test_a_reserved_share_of_a_percentage_is_kept_under_memory_scaling(scaling: float) -> None:
    # The share was planned as 60 % of the *scaled* memory; the next plan must see that it
    # still serves the pod (else the pod is planned afresh every round).
    share = int(81920 * scaling) * 60 // 100
    snapshot = cluster(
        f"""
nodes:
- name: node-h
  mode: hami-core
  gpus: [{{model: A100-SXM4-80GB, shares: [{{pod: default/p, memoryMiB: {share}, cores: 0}}]}}]
"""
    )
    result = run(
        snapshot,
        [pod("p", pct=60, mode="hami-core")],
        f"nvidia: {{deviceMemoryScaling: {scaling}}}",
    )
    mine = placed(result.pods["default/p"])
    assert mine.reused
    assert mine.devices[0].memory_mib == share


# --------------------------------------------------------------------------- determinism


def test_same_input_same_plan_and_gpu_order_does_not_matter() -> None:
    snapshot = cluster(FILTERS)
    pods = [pod(f"p{i}", mem=5000 * (i % 5 + 1), gpu=1 + i % 2) for i in range(12)]
    first = plan(snapshot, pods)
    assert plan(snapshot, pods) == first
    shuffled = Snapshot(
        tuple(
            type(n)(n.name, n.mode, tuple(reversed(n.gpus)), n.labels)
            for n in reversed(snapshot.nodes)
        ),
        snapshot.now,
    )
    again = plan(shuffled, list(reversed(pods)))
    assert again == first
    assert list(again.pods) == list(first.pods)


# --------------------------------------------------------------------------- repair

REPAIR = f"""
nodes:
- name: node-a
  mode: mig
  gpus:
  - {{model: {A100}, instances: [{{profile: 3g.40gb, placement: 0, inUse: true}}]}}
  - {{model: {A100}}}
  - model: {A100}
    instances:
    - {{profile: 1g.10gb, placement: 0, inUse: true}}
    - {{profile: 1g.10gb, placement: 4, inUse: true}}
"""


def repair_pods() -> list[PodDemand]:
    return [
        pod("a", mem=8000, mode="mig", created="2024-01-01T00:00:00Z"),
        pod("b", mem=60000, mode="mig", created="2024-01-01T00:00:01Z"),
        pod("c", mem=30000, mode="mig", created="2024-01-01T00:00:02Z"),
    ]


def test_repair_retries_a_round_so_a_pod_that_found_no_place_fits_too() -> None:
    # In queue order the 1g takes the free half of gpu0 (the fuller GPU) and the 3g then
    # fits nowhere; placing the 3g first fits all three.
    without = run(cluster(REPAIR), repair_pods(), repair_trials=0)
    assert isinstance(without.pods["default/c"], Unplaceable)
    result = run(cluster(REPAIR), repair_pods())
    assert list(result.pods) == ["default/a", "default/b", "default/c"]
    assert placed(result.pods["default/c"]).devices[0].gpu_index == 0
    assert placed(result.pods["default/a"]).devices[0].gpu_index == 2
    assert placed(result.pods["default/b"]).devices[0].gpu_index == 1


def test_repair_never_lets_a_pod_overtake_a_starving_one() -> None:
    now = 1704067200.0 + 600
    result = run(cluster(STARVING, now=now), starving_pods(), starvation_after=300)
    assert result.held == {("node-a", 0): "default/big"}
    assert isinstance(result.pods["default/small"], Unplaceable)
