"""Properties of plans over random snapshots and demands (docs/design.md, "Safety rules").

Every plan obeys `check_plan` (valid layouts; busy, reserved and static instances
untouched; geometries, max counts and filters respected; one node per pod; hami-core never
over-committed), and planning is deterministic, whatever the order of the input.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migweaver.core.config import DeviceConfig, load_device_config
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, valid_layouts
from migweaver.core.planning.plan import PlannerOptions
from migweaver.core.planning.planner import plan
from migweaver.core.planning.snapshot import (
    GpuState,
    InstanceState,
    NodeState,
    Share,
    Snapshot,
    fake_gpu_uuid,
)
from migweaver.core.resources.requests import ContainerDemand, PodDemand, VgpuMode
from tests.unit.planner_helpers import check_plan

MODELS = ("A100-SXM4-80GB", "A100-SXM4-40GB", "H100-SXM5-80GB", "A30-24GB")
ROOT = Path(__file__).resolve().parents[3]


@cache
def layouts(model: str) -> list[tuple[PlacedInstance, ...]]:
    found = get_model(model)
    assert found is not None
    return valid_layouts(found.table, include_media_extensions=True)


@cache
def shipped() -> DeviceConfig:
    result = load_device_config((ROOT / "manifests" / "device-config.yaml").read_text())
    assert result.config is not None
    return result.config


@st.composite
def gpu_states(draw: Any, node: str, index: int, mode: str) -> GpuState:
    model_key = draw(st.sampled_from(MODELS))
    model = get_model(model_key)
    assert model is not None
    instances: list[InstanceState] = []
    shares: list[Share] = []
    if mode == "mig":
        options = layouts(model_key)
        for placed in options[draw(st.integers(0, len(options) - 1))]:
            state = draw(st.sampled_from(["idle", "in-use", "reserved", "pending"]))
            instances.append(
                InstanceState(
                    placed.profile,
                    placed.placement,
                    uuid=draw(st.sampled_from([None, f"MIG-{node}-{index}-{placed.placement}"])),
                    in_use=state == "in-use",
                    reserved_by={"reserved": "run/other", "pending": "default/p0"}.get(state),
                )
            )
    else:
        for k in range(draw(st.integers(0, 3))):
            shares.append(
                Share(
                    f"run/{node}-{index}-{k}", draw(st.integers(0, 30000)), draw(st.integers(0, 50))
                )
            )
    return GpuState(
        node=node,
        index=index,
        uuid=fake_gpu_uuid(node, index),
        name=f"NVIDIA {model.key}",
        model=model.key,
        mode="mig" if mode == "mig" else "hami-core",
        policy=draw(st.sampled_from(["dynamic", "dynamic", "dynamic", "static"])),
        mig_enabled=bool(instances) or (mode == "mig" and draw(st.booleans())),
        table=model.table,
        memory_mib=model.memory_mib,
        instances=tuple(instances),
        shares=tuple(shares),
    )


@st.composite
def snapshots(draw: Any) -> Snapshot:
    nodes = []
    for n in range(draw(st.integers(1, 3))):
        name = f"node-{n}"
        mode = draw(st.sampled_from(["mig", "mig", "hami-core"]))
        gpus = tuple(draw(gpu_states(name, i, mode)) for i in range(draw(st.integers(1, 3))))
        nodes.append(NodeState(name, "mig" if mode == "mig" else "hami-core", gpus))
    return Snapshot(tuple(nodes), now=draw(st.sampled_from([0.0, 1e10])))


@st.composite
def containers(draw: Any, i: int) -> ContainerDemand:
    kind = draw(st.sampled_from(["mib", "mib", "pct"]))
    return ContainerDemand(
        name=f"c{i}",
        count=draw(st.integers(1, 3)),
        memory_mib=draw(st.integers(1000, 90000)) if kind == "mib" else None,
        memory_percentage=draw(st.integers(1, 100)) if kind == "pct" else None,
        cores=draw(st.sampled_from([0, 0, 10, 30, 50, 100])),
        priority=None,
    )


@st.composite
def pods(draw: Any, snapshot: Snapshot) -> list[PodDemand]:
    uuids = [g.uuid for g in snapshot.gpus()]
    result = []
    for i in range(draw(st.integers(1, 8))):
        types = st.lists(st.sampled_from(["A100", "h100", "A30", "40GB"]), max_size=2)
        some_uuids = st.lists(st.sampled_from(uuids), max_size=2)
        result.append(
            PodDemand(
                namespace="default",
                name=f"p{i}",
                uid=str(i),
                containers=tuple(draw(containers(k)) for k in range(draw(st.integers(1, 2)))),
                mode=draw(st.sampled_from([None, None, VgpuMode.MIG, VgpuMode.HAMI_CORE])),
                use_gputype=tuple(draw(types)) if draw(st.integers(0, 4)) == 0 else (),
                nouse_gputype=tuple(draw(types)) if draw(st.integers(0, 4)) == 0 else (),
                use_gpuuuid=tuple(draw(some_uuids)) if draw(st.integers(0, 6)) == 0 else (),
                nouse_gpuuuid=tuple(draw(some_uuids)) if draw(st.integers(0, 6)) == 0 else (),
                pod_priority=draw(st.integers(0, 2)),
                created=draw(
                    st.sampled_from([None, "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"])
                ),
                gpu_scheduler_policy=draw(st.sampled_from([None, "binpack", "spread"])),
                node_scheduler_policy=draw(st.sampled_from([None, "binpack", "spread"])),
            )
        )
    return result


@st.composite
def problems(draw: Any) -> tuple[Snapshot, list[PodDemand], DeviceConfig | None]:
    snapshot = draw(snapshots())
    return snapshot, draw(pods(snapshot)), draw(st.sampled_from([None, shipped()]))


def shuffled(snapshot: Snapshot) -> Snapshot:
    return Snapshot(
        tuple(
            NodeState(n.name, n.mode, tuple(reversed(n.gpus)), n.labels)
            for n in reversed(snapshot.nodes)
        ),
        snapshot.now,
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_plans_obey_every_safety_rule(problem: tuple[Snapshot, list[PodDemand], Any]) -> None:
    snapshot, pending, device_config = problem
    options = PlannerOptions(starvation_after=0.0, max_holds=2)
    result = plan(snapshot, pending, device_config, options)
    check_plan(snapshot, pending, result, device_config)
    assert set(result.pods) == {p.key for p in pending}
    # A held GPU is never given to a pod planned after its holder.
    order = list(result.pods)
    for key, holder in result.held.items():
        for later in order[order.index(holder) + 1 :]:
            assignment = result.assignments.get(later)
            if assignment is not None and not assignment.reused:
                assert all(d.gpu_key != key for d in assignment.devices)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_plans_are_deterministic_whatever_the_input_order(
    problem: tuple[Snapshot, list[PodDemand], Any],
) -> None:
    snapshot, pending, device_config = problem
    first = plan(snapshot, pending, device_config)
    assert plan(snapshot, pending, device_config) == first
    again = plan(shuffled(snapshot), list(reversed(pending)), device_config)
    assert again == first
    assert list(again.pods) == list(first.pods)
    assert list(again.layouts) == list(first.layouts)
