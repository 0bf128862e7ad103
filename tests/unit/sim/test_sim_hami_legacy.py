"""HAMi's legacy dynamic-MIG rules, as the simulator's baseline reproduces them.

Templates come whole from knownMigGeometries; an idle GPU takes the first geometry in
config order with an entry that serves the request; a GPU with an instance in use keeps
its template; a device takes the first free entry whose configured memory serves it.
"""

from __future__ import annotations

import pytest

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.plan import Assignment, Unplaceable
from migweaver.sim.hami_legacy import hami_legacy_plan, template_slots
from tests.unit.planner_helpers import SEED_CONFIG, cluster, config, pod

GPU = ("node-a", 0)


def one_gpu(instances: str = "") -> str:
    text = """
nodes:
- name: node-a
  mode: mig
  gpus:
  - model: A100-SXM4-80GB
"""
    if instances:
        text += "    instances:\n" + instances
    return text


def devices(result: Assignment | Unplaceable) -> list[tuple[str | None, int | None, int]]:
    assert isinstance(result, Assignment), result
    return [
        (d.profile, d.placement.start if d.placement else None, d.memory_mib)
        for d in result.devices
    ]


def layout_text(instances: tuple[PlacedInstance, ...]) -> list[str]:
    return [str(i) for i in sorted(instances, key=lambda i: i.placement)]


@pytest.mark.parametrize(
    ("memory", "template", "device"),
    [
        pytest.param(8000, ["1g.10gb@0:1", "1g.10gb@1:1", "1g.10gb@2:1", "1g.10gb@3:1",
                            "1g.10gb@4:1", "1g.10gb@5:1", "1g.10gb@6:1"],
                     ("1g.10gb", 0, 9728), id="8000MiB-takes-geometry-1-1g-x7"),
        pytest.param(10240, ["1g.10gb@0:1", "1g.10gb@1:1", "1g.10gb@2:1", "1g.10gb@3:1",
                             "1g.10gb@4:1", "1g.10gb@5:1", "1g.10gb@6:1"],
                     ("1g.10gb", 0, 9728), id="configured-memory-not-nvml-size"),
        pytest.param(18000, ["2g.20gb@0:2", "2g.20gb@2:2", "2g.20gb@4:2", "1g.10gb@6:1"],
                     ("2g.20gb", 0, 19968), id="18000MiB-takes-geometry-2-2g-x3-1g"),
        pytest.param(30000, ["3g.40gb@0:4", "3g.40gb@4:4"],
                     ("3g.40gb", 0, 40192), id="30000MiB-takes-geometry-3-3g-x2"),
        pytest.param(70000, ["7g.80gb@0:8"],
                     ("7g.80gb", 0, 80896), id="70000MiB-takes-geometry-4-alias-7g.79gb"),
    ],
)  # fmt: skip
def test_an_empty_gpu_takes_the_first_geometry_in_config_order_that_serves(
    memory: int, template: list[str], device: tuple[str, int, int]
) -> None:
    plan = hami_legacy_plan(cluster(one_gpu()), [pod("p", mem=memory)], config())
    assert layout_text(plan.layouts[GPU]) == template
    assert devices(plan.pods["default/p"]) == [device]


@pytest.mark.parametrize(
    ("instances", "memory", "expected"),
    [
        pytest.param(
            "    - {profile: 3g.40gb, placement: 0, inUse: true}\n"
            "    - {profile: 3g.40gb, placement: 4}\n",
            8000, ("3g.40gb", 4, 40192), id="small-pod-takes-the-free-half-of-3g-x2",
        ),
        pytest.param(
            "    - {profile: 2g.20gb, placement: 0, inUse: true}\n"
            "    - {profile: 2g.20gb, placement: 2}\n"
            "    - {profile: 2g.20gb, placement: 4}\n"
            "    - {profile: 1g.10gb, placement: 6}\n",
            8000, ("2g.20gb", 2, 19968), id="first-free-entry-in-template-order-not-smallest",
        ),
        pytest.param(
            "    - {profile: 2g.20gb, placement: 0, inUse: true}\n"
            "    - {profile: 2g.20gb, placement: 2, inUse: true}\n"
            "    - {profile: 2g.20gb, placement: 4, inUse: true}\n"
            "    - {profile: 1g.10gb, placement: 6}\n",
            8000, ("1g.10gb", 6, 9728), id="last-free-entry-when-the-others-are-used",
        ),
        pytest.param(
            "    - {profile: 2g.20gb, placement: 0, inUse: true}\n"
            "    - {profile: 2g.20gb, placement: 2, pod: ml/reserved}\n"
            "    - {profile: 2g.20gb, placement: 4}\n"
            "    - {profile: 1g.10gb, placement: 6}\n",
            18000, ("2g.20gb", 4, 19968), id="reserved-entries-are-not-free",
        ),
    ],
)  # fmt: skip
def test_a_gpu_in_use_gives_the_first_free_entry_that_serves(
    instances: str, memory: int, expected: tuple[str, int, int]
) -> None:
    plan = hami_legacy_plan(cluster(one_gpu(instances)), [pod("p", mem=memory)], config())
    assert GPU not in plan.layouts  # the template stays
    assert devices(plan.pods["default/p"]) == [expected]
    assert plan.reservations[GPU][0][1] == "default/p"


@pytest.mark.parametrize(
    ("instances", "memory"),
    [
        pytest.param("    - {profile: 1g.10gb, placement: 6, inUse: true}\n", 30000,
                     id="1g-in-use-of-1g-x7-blocks-a-3g"),
        pytest.param("    - {profile: 3g.40gb, placement: 0, inUse: true}\n"
                     "    - {profile: 3g.40gb, placement: 4, inUse: true}\n", 8000,
                     id="full-template"),
        pytest.param("    - {profile: 3g.40gb, placement: 4, pod: ml/reserved}\n", 8000,
                     id="foreign-layout-in-use-is-left-alone"),
    ],
)  # fmt: skip
def test_no_geometry_switch_while_an_instance_is_in_use(instances: str, memory: int) -> None:
    text = one_gpu(instances)
    if "1g.10gb, placement: 6" in instances:
        # The rest of the 1g x7 template exists, idle.
        text += "".join(f"    - {{profile: 1g.10gb, placement: {s}}}\n" for s in range(6))
    plan = hami_legacy_plan(cluster(text), [pod("p", mem=memory)], config())
    result = plan.pods["default/p"]
    assert isinstance(result, Unplaceable)
    assert result.code == "NoRoom"
    assert not plan.layouts


def test_an_idle_gpu_switches_template_for_the_next_request() -> None:
    idle = "".join(f"    - {{profile: 1g.10gb, placement: {s}}}\n" for s in range(7))
    plan = hami_legacy_plan(cluster(one_gpu(idle)), [pod("p", mem=30000)], config())
    assert layout_text(plan.layouts[GPU]) == ["3g.40gb@0:4", "3g.40gb@4:4"]
    result = plan.pods["default/p"]
    assert isinstance(result, Assignment)
    assert result.devices[0].new_instance


def test_an_idle_gpu_keeps_its_template_when_it_serves_and_reuses_the_instance() -> None:
    idle = "".join(f"    - {{profile: 1g.10gb, placement: {s}, uuid: MIG-{s}}}\n" for s in range(7))
    plan = hami_legacy_plan(cluster(one_gpu(idle)), [pod("p", mem=8000)], config())
    assert not plan.layouts
    result = plan.pods["default/p"]
    assert isinstance(result, Assignment)
    assert (result.devices[0].instance_uuid, result.devices[0].new_instance) == ("MIG-0", False)


def test_pods_of_one_plan_share_the_template_the_first_one_chose() -> None:
    pods = [
        pod("a", mem=8000, created="2024-05-01T00:00:00Z"),
        pod("b", mem=30000, created="2024-05-01T00:00:01Z"),
    ]
    plan = hami_legacy_plan(cluster(one_gpu()), pods, config())
    assert devices(plan.pods["default/a"]) == [("1g.10gb", 0, 9728)]
    assert isinstance(plan.pods["default/b"], Unplaceable)


def test_several_devices_of_one_container_may_share_a_mig_gpu() -> None:
    plan = hami_legacy_plan(cluster(one_gpu()), [pod("p", gpu=2, mem=8000)], config())
    assert devices(plan.pods["default/p"]) == [("1g.10gb", 0, 9728), ("1g.10gb", 1, 9728)]


def test_too_large_and_filtered_reasons() -> None:
    snapshot = cluster(one_gpu())
    plan = hami_legacy_plan(
        snapshot, [pod("big", mem=90000), pod("shared", mem=1000, mode="hami-core")], config()
    )
    big, shared = plan.pods["default/big"], plan.pods["default/shared"]
    assert isinstance(big, Unplaceable)
    assert big.code == "TooLarge"
    assert "80896 MiB" in big.reason
    assert isinstance(shared, Unplaceable)
    assert shared.code == "Filtered"


def test_too_large_compares_with_the_largest_entry_of_every_eligible_gpu() -> None:
    # Both GPUs keep their 1g x7 template (one instance in use): a 30000 MiB pod waits for
    # room, and the A100-80GB's 3g.40gb template proves it is not too large, although the
    # GPU looked at last (an A100-40GB with only 1g.5gb entries) has nothing that size.
    def node(name: str, model: str, profile: str) -> str:
        instances = "".join(
            f"    - {{profile: {profile}, placement: {slot}, inUse: {str(slot == 0).lower()}}}\n"
            for slot in range(7)
        )
        return (
            f"- name: {name}\n  mode: mig\n  gpus:\n  - model: {model}\n    instances:\n{instances}"
        )

    snapshot = cluster(
        "nodes:\n"
        + node("node-a", "A100-SXM4-80GB", "1g.10gb")
        + node("node-b", "A100-SXM4-40GB", "1g.5gb")
    )
    device_config = config(
        SEED_CONFIG
        + "  - models: [A100-SXM4-40GB]\n"
        + "    allowedGeometries: [[{name: 1g.5gb, memory: 5120, count: 7}]]\n"
    )
    plan = hami_legacy_plan(snapshot, [pod("p", mem=30000)], device_config)
    result = plan.pods["default/p"]
    assert isinstance(result, Unplaceable)
    assert (result.code, result.reason) == (
        "NoRoom",
        "no free template entry of >= 30000 MiB on an eligible GPU (a GPU with an instance "
        "in use keeps its template) and no hami-core GPU with room",
    )


def test_a_model_without_geometries_takes_no_mig_pods() -> None:
    plan = hami_legacy_plan(cluster(one_gpu()), [pod("p", mem=8000)], None)
    assert isinstance(plan.pods["default/p"], Unplaceable)


HAMI_NODE = """
nodes:
- name: node-h
  mode: hami-core
  gpus:
  - model: A100-SXM4-80GB
    shares:
{shares}
"""


@pytest.mark.parametrize(
    ("shares", "request_", "fits"),
    [
        pytest.param("    - {pod: a/x, memoryMiB: 70000, cores: 10}", {"mem": 10000}, True,
                     id="memory-left"),
        pytest.param("    - {pod: a/x, memoryMiB: 75000, cores: 10}", {"mem": 10000}, False,
                     id="memory-exhausted"),
        pytest.param("    - {pod: a/x, memoryMiB: 1000, cores: 80}", {"mem": 1000, "cores": 30},
                     False, id="cores-exhausted"),
        pytest.param("    - {pod: a/x, memoryMiB: 1000, cores: 0}", {"mem": 1000, "cores": 100},
                     False, id="exclusive-needs-an-empty-gpu"),
        pytest.param("    - {pod: a/x, memoryMiB: 1000, cores: 100}", {"mem": 1000},
                     False, id="no-zero-core-pod-on-a-full-gpu"),
        pytest.param("\n".join(f"    - {{pod: a/x{i}, memoryMiB: 100, cores: 0}}"
                               for i in range(10)), {"mem": 100}, False,
                     id="split-count-10"),
    ],
)  # fmt: skip
def test_hami_core_shares_follow_hamis_checks(
    shares: str, request_: dict[str, int], fits: bool
) -> None:
    snapshot = cluster(HAMI_NODE.format(shares=shares))
    plan = hami_legacy_plan(snapshot, [pod("p", **request_)], config())
    assert isinstance(plan.pods["default/p"], Assignment) is fits


def test_template_slots_follow_config_order_with_configured_memory() -> None:
    geometries = config().geometries_for("NVIDIA A100-SXM4-80GB", None)
    assert geometries is not None
    from migweaver.core.mig.catalog import get_model

    model = get_model("A100-SXM4-80GB")
    assert model is not None
    slots = template_slots(model.table, geometries[1])
    assert slots is not None
    assert [(s.profile, s.placement, s.memory) for s in slots] == [
        ("2g.20gb", Placement(0, 2), 20480),
        ("2g.20gb", Placement(2, 2), 20480),
        ("2g.20gb", Placement(4, 2), 20480),
        ("1g.10gb", Placement(6, 1), 10240),
    ]
