"""Builders for planner tests, and `check_plan`: every safety rule a plan must obey."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from migweaver.core.config import DeviceConfig, load_device_config
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, fit_profiles, layout_problems
from migweaver.core.planning.cluster_file import load_cluster
from migweaver.core.planning.plan import Assignment, Device, Plan
from migweaver.core.planning.snapshot import GpuState, InstanceState, Snapshot
from migweaver.core.resources.requests import ContainerDemand, InvalidRequest, PodDemand, parse_pod
from tests import builders

SEED_CONFIG = """
nvidia:
  knownMigGeometries:
  - models: ["A100-SXM4-80GB"]
    allowedGeometries:
    - [{name: 1g.10gb, memory: 10240, count: 7}]
    - [{name: 2g.20gb, memory: 20480, count: 3}, {name: 1g.10gb, memory: 10240, count: 1}]
    - [{name: 3g.40gb, memory: 40960, count: 2}]
    - [{name: 7g.79gb, memory: 80896, count: 1}]
"""


def cluster(text: str, now: float = 0.0) -> Snapshot:
    """A snapshot from CLUSTER.yaml text (the `migweaver plan` format)."""
    snapshot = load_cluster(text, "test-cluster.yaml")
    return Snapshot(snapshot.nodes, now or snapshot.now)


def config(text: str = SEED_CONFIG) -> DeviceConfig:
    result = load_device_config(text)
    assert result.config is not None, result.errors
    return result.config


def pod(
    name: str,
    *,
    gpu: int | None = None,
    mem: int | None = None,
    pct: int | None = None,
    cores: int | None = None,
    mode: str | None = None,
    priority: int | None = None,
    created: str | None = None,
    annotations: dict[str, str] | None = None,
    containers: Sequence[dict[str, Any]] | None = None,
    namespace: str = "default",
) -> PodDemand:
    """A parsed pod; one container from the keyword limits unless `containers` is given."""
    notes = dict(annotations or {})
    if mode is not None:
        notes["nvidia.com/vgpu-mode"] = mode
    if containers is None:
        containers = [builders.container(limits=builders.gpu_limits(gpu, mem, pct, cores))]
    extra = {} if priority is None else {"priority": priority}
    body = builders.pod(
        name, namespace, annotations=notes, created=created, containers=containers, **extra
    )
    demand = parse_pod(body)
    assert not isinstance(demand, InvalidRequest), demand
    return demand


def container(name: str, **limits: Any) -> dict[str, Any]:
    names = {"gpu": "nvidia.com/gpu", "mem": "nvidia.com/gpumem", "cores": "nvidia.com/gpucores"}
    return {"name": name, "resources": {"limits": {names[k]: v for k, v in limits.items()}}}


def gpus(snapshot: Snapshot) -> dict[tuple[str, int], GpuState]:
    return {gpu.key: gpu for gpu in snapshot.gpus()}


def final_layout(
    snapshot: Snapshot, plan: Plan, key: tuple[str, int]
) -> tuple[PlacedInstance, ...]:
    """The GPU's instances after the plan (unchanged layouts: as in the snapshot)."""
    if key in plan.layouts:
        return plan.layouts[key]
    return tuple(i.placed for i in gpus(snapshot)[key].instances)


def check_plan(
    snapshot: Snapshot,
    pending: Sequence[PodDemand],
    plan: Plan,
    device_config: DeviceConfig | None = None,
) -> None:
    """Assert every rule a plan must obey (the safety properties of docs/design.md, "Safety rules").

    - each changed layout is valid on its GPU (placements, overlaps, counts);
    - busy instances (in use or reserved) are all still there, where they were, and never
      given to another pod; static and hami-core GPUs never change layout;
    - a configured model's layout is a sub-multiset of one geometry, the rest of which fits;
    - each pod's devices are on one node, match its containers' counts and serve them;
      hami-core devices of one container are on distinct GPUs;
    - hami-core memory, cores and split count are never over-committed;
    - filters (mode, gputype, gpuuuid) hold for every device.
    """
    device_config = device_config or DeviceConfig.model_validate({"nvidia": {}})
    by_key = gpus(snapshot)
    for key, layout in plan.layouts.items():
        _check_layout(by_key[key], layout, plan, pending, device_config)
    for key in plan.mig_enabled:
        gpu = by_key[key]
        assert gpu.mode == "mig", key
        assert gpu.policy == "dynamic", key
        assert not gpu.shares, key
    taken: dict[tuple[tuple[str, int], PlacedInstance], str] = {}
    share_use: dict[tuple[str, int], list[tuple[int, int]]] = {}
    demands = {d.key: d for d in pending}
    for key, result in plan.pods.items():
        if not isinstance(result, Assignment) or result.node is None:
            continue
        demand = demands[key]
        assert [len(c.devices) for c in result.containers] == [c.count for c in demand.containers]
        for c_demand, c_assigned in zip(demand.containers, result.containers, strict=True):
            hami_gpus = [d.gpu_index for d in c_assigned.devices if d.mode == "hami-core"]
            assert len(hami_gpus) == len(set(hami_gpus)), f"{key}: hami-core devices share a GPU"
            for device in c_assigned.devices:
                assert device.node == result.node, f"{key} spans nodes"
                gpu = by_key[device.gpu_key]
                _check_filters(demand, gpu)
                if device.mode == "hami-core":
                    _check_share(gpu, device, c_demand, device_config)
                    if result.reused:  # the pod's own share, already counted in gpu.shares
                        assert any(
                            s.pod == key and s.memory_mib == device.memory_mib for s in gpu.shares
                        ), f"{key}: reused a share it does not hold"
                    else:
                        share_use.setdefault(gpu.key, []).append((device.memory_mib, device.cores))
                else:
                    _check_instance(snapshot, plan, pending, result, device, c_demand, taken)
    nvidia = device_config.nvidia
    for key, uses in share_use.items():
        gpu = by_key[key]
        mem = sum(s.memory_mib for s in gpu.shares) + sum(m for m, _ in uses)
        cores = sum(s.cores for s in gpu.shares) + sum(c for _, c in uses)
        assert mem <= int(gpu.memory_mib * nvidia.device_memory_scaling), key
        assert cores <= int(100 * nvidia.device_core_scaling), key
        assert len(gpu.shares) + len(uses) <= nvidia.device_split_count, key


def _check_layout(
    gpu: GpuState,
    layout: tuple[PlacedInstance, ...],
    plan: Plan,
    pending: Sequence[PodDemand],
    device_config: DeviceConfig,
) -> None:
    assert gpu.policy == "dynamic", f"static layout {gpu.key} changed"
    assert gpu.mode == "mig", f"hami-core GPU {gpu.key} got a MIG layout"
    assert layout_problems(gpu.table, layout) == [], (gpu.key, layout)
    for inst in gpu.instances:
        if inst.busy and not _released(inst, plan, pending):
            assert inst.placed in layout, f"busy {inst.placed} on {gpu.key} was removed"
    geometries = device_config.geometries_for(gpu.name, get_model(gpu.model or ""))
    if geometries is not None:
        counts = Counter(gpu.table.get(i.profile).name for i in layout)  # type: ignore[union-attr]
        fits = [_in_geometry(gpu, counts, g.profiles, layout) for g in geometries]
        assert any(fits), (gpu.key, layout)


def _check_share(
    gpu: GpuState, device: Device, demand: ContainerDemand, device_config: DeviceConfig
) -> None:
    assert gpu.mode == "hami-core"
    assert not gpu.mig_enabled
    scaled = int(gpu.memory_mib * device_config.nvidia.device_memory_scaling)
    wanted = demand.memory_mib or scaled * (demand.memory_percentage or 0) // 100
    assert device.memory_mib >= wanted
    assert device.cores >= demand.cores


def _check_instance(
    snapshot: Snapshot,
    plan: Plan,
    pending: Sequence[PodDemand],
    result: Assignment,
    device: Device,
    demand: ContainerDemand,
    taken: dict[tuple[tuple[str, int], PlacedInstance], str],
) -> None:
    gpu = gpus(snapshot)[device.gpu_key]
    key = result.pod
    assert device.profile is not None
    assert device.placement is not None
    placed = PlacedInstance(device.profile, device.placement)
    assert placed in final_layout(snapshot, plan, gpu.key), (key, placed)
    holder = taken.setdefault((gpu.key, placed), key)
    assert holder == key, f"{placed} on {gpu.key} given to {holder} and {key}"
    existing = next((i for i in gpu.instances if i.placed == placed), None)
    if existing is not None and existing.busy and not _released(existing, plan, pending):
        assert existing.reserved_by == key, f"busy {placed} given to {key}"
        assert result.reused, f"busy {placed} given to {key}"
    profile = gpu.table.get(device.profile)
    assert profile is not None
    if demand.memory_mib:
        assert profile.memory_mib >= demand.memory_mib
    else:  # a percentage of the GPU's memory slices (docs/planner.md)
        percentage = demand.memory_percentage or 100
        assert profile.memory_slices * 100 >= percentage * gpu.table.memory_slots, (key, placed)
    compute = max(p.compute_slices for p in gpu.table.profiles)
    assert profile.compute_slices * 100 >= demand.cores * compute


def _released(inst: InstanceState, plan: Plan, pending: Sequence[PodDemand]) -> bool:
    """An instance reserved for a pending pod that did not keep it is free again (unless in
    use): the pod was planned afresh."""
    if inst.in_use or inst.reserved_by not in {p.key for p in pending}:
        return False
    result = plan.pods.get(inst.reserved_by)
    return not (isinstance(result, Assignment) and result.reused)


def _in_geometry(
    gpu: GpuState,
    counts: Counter[str],
    geometry: tuple[tuple[str, int], ...],
    layout: Sequence[PlacedInstance],
) -> bool:
    want: Counter[str] = Counter()
    for name, count in geometry:
        profile = gpu.table.get(name)
        if profile is None:
            return False
        want[profile.name] += count
    if any(counts[n] > want[n] for n in counts):
        return False
    return fit_profiles(gpu.table, want - counts, layout) is not None


def _check_filters(demand: PodDemand, gpu: GpuState) -> None:
    if demand.mode is not None:
        assert gpu.mode == demand.mode.value, (demand.key, gpu.key)
    name = gpu.name.upper()
    if demand.use_gputype:
        assert any(t.upper() in name for t in demand.use_gputype), (demand.key, gpu.key)
    assert not any(t.upper() in name for t in demand.nouse_gputype), (demand.key, gpu.key)
    if demand.use_gpuuuid:
        assert gpu.uuid in demand.use_gpuuuid
    assert gpu.uuid not in demand.nouse_gpuuuid
