"""HAMi's legacy dynamic-MIG policy (v2.5-v2.9), as a baseline for the simulator.

Not product logic: migweaver never plans this way. It is reproduced so that the simulator
can compare migweaver with what HAMi users run today. The rules, from HAMi's
`pkg/device/nvidia/device.go` (`CustomFilterRule`, `AddResourceUsage`, `migNeedsReset`,
`Fit`) and docs/mig-reference.md section 5:

- a MIG GPU always carries one *whole template* of `knownMigGeometries` (HAMi applies it
  with mig-parted): every instance of the geometry exists, in use or not;
- the GPU's usage list is the template's instances in config order (`PlatternMIG`); a
  device takes the **first free entry** whose configured `memory` is at least the request;
- a GPU with **no instance in use** is reset for the next request: it takes the **first
  geometry in config order** with an entry whose `memory` serves the request, and the
  first such entry of it. A GPU with an instance in use never changes template;
- memory is compared with the configured `memory` of the entries (as HAMi does), not
  NVML's size; `nvidia.com/gpucores` is not looked at on MIG;
- several devices of one container may land on one MIG GPU; hami-core shares follow
  HAMi's checks (split count, free memory, free cores, exclusive 100 % cores);
- the filters (`nvidia.com/vgpu-mode`, use/nouse-gputype, use/nouse-gpuuuid) apply.

Where HAMi's behaviour depends on things the simulator does not model, a simple rule
stands in, documented in docs/simulator.md: pods are taken in the same queue order as
migweaver's (priority, age, name); among the nodes where a pod fits, the most used one
wins (HAMi's default `binpack` node policy), ties by name; within a node, GPUs are tried
most used first, ties by index. HAMi places instances through mig-parted without naming
placements; here the template's instances sit where `geometry.fit_profiles` puts them
(largest first, lowest start), so the fake GPU can enforce NVML's rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache

from migweaver.core.config import DeviceConfig, Geometry
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, fit_profiles
from migweaver.core.mig.profiles import Placement, ProfileTable, normalize_profile_name
from migweaver.core.planning.pending import PendingPod, pending_pod
from migweaver.core.planning.plan import (
    Assignment,
    ContainerAssignment,
    Device,
    Plan,
    Unplaceable,
)
from migweaver.core.planning.snapshot import GpuKey, GpuState, NodeState, Snapshot
from migweaver.core.resources.requests import PodDemand

__all__ = ["TemplateSlot", "hami_legacy_plan", "template_slots"]


@dataclass(frozen=True, slots=True)
class TemplateSlot:
    """One entry of a GPU's usage list: a template instance with its configured memory."""

    profile: str
    """The profile's name in the GPU's table (an alias such as 7g.79gb resolved)."""
    placement: Placement
    memory: int
    """The configured `memory` (MiB) HAMi compares requests with."""
    physical_mib: int
    compute_slices: int


@cache
def _slots_cached(table: ProfileTable, geometry: Geometry) -> tuple[TemplateSlot, ...] | None:
    counts: dict[str, int] = {}
    for name, count in geometry.profiles:
        profile = table.get(name)
        if profile is None:
            return None
        counts[profile.name] = counts.get(profile.name, 0) + count
    placed = fit_profiles(table, counts)
    if placed is None:
        return None
    by_profile: dict[str, list[Placement]] = {}
    for inst in sorted(placed, key=lambda i: i.placement):
        by_profile.setdefault(inst.profile, []).append(inst.placement)
    slots: list[TemplateSlot] = []
    for i, (name, count) in enumerate(geometry.profiles):
        profile = table.get(name)
        assert profile is not None
        configured = geometry.memory[i] if geometry.memory else None
        for _ in range(count):
            slots.append(
                TemplateSlot(
                    profile=profile.name,
                    placement=by_profile[profile.name].pop(0),
                    memory=configured if configured is not None else profile.memory_mib,
                    physical_mib=profile.memory_mib,
                    compute_slices=profile.compute_slices,
                )
            )
    return tuple(slots)


def template_slots(table: ProfileTable, geometry: Geometry) -> tuple[TemplateSlot, ...] | None:
    """The usage list of a geometry on a GPU (HAMi's `PlatternMIG`): its entries in config
    order, `count` times each, with placements; None when the GPU cannot take it."""
    return _slots_cached(table, geometry)


# ------------------------------------------------------------------------- per GPU state


@dataclass(slots=True)
class _Gpu:
    """A GPU while one plan is made (copied before a node is tried)."""

    state: GpuState
    templates: tuple[tuple[TemplateSlot, ...], ...]
    """The geometries this GPU may take, as usage lists (MIG GPUs only)."""
    template: int | None
    """The template on the GPU now, None when none (or an unknown layout)."""
    busy: list[bool]
    """Per usage-list entry: in use (or reserved)."""
    foreign: bool = False
    """Busy instances that form no known template: HAMi cannot use the GPU."""
    changed: bool = False
    mig_on: bool = False
    share_count: int = 0
    share_mem: int = 0
    share_cores: int = 0
    given: list[tuple[int, str]] = field(default_factory=list)
    """(usage-list entry, pod) given by this plan."""

    def copy(self) -> _Gpu:
        return replace(self, busy=list(self.busy), given=list(self.given))

    @property
    def in_use(self) -> bool:
        return any(self.busy)

    def used_fraction(self) -> float:
        if self.state.mode == "hami-core":
            return self.share_mem / max(1, self.state.memory_mib)
        if self.template is None:
            return 0.0
        slots = self.templates[self.template]
        used = sum(s.memory for s, b in zip(slots, self.busy, strict=True) if b)
        return used / max(1, self.state.memory_mib)


def _geometries(gpu: GpuState, config: DeviceConfig) -> list[Geometry]:
    model = get_model(gpu.model) if gpu.model else None
    return config.geometries_for(gpu.name, model) or []


def _gpu(gpu: GpuState, config: DeviceConfig) -> _Gpu:
    if gpu.mode == "hami-core":
        return _Gpu(
            gpu,
            (),
            None,
            [],
            share_count=len(gpu.shares),
            share_mem=sum(s.memory_mib for s in gpu.shares),
            share_cores=sum(s.cores for s in gpu.shares),
        )
    templates = tuple(
        slots
        for slots in (template_slots(gpu.table, g) for g in _geometries(gpu, config))
        if slots is not None
    )
    have = {
        PlacedInstance(normalize_profile_name(i.profile), i.placement): i for i in gpu.instances
    }
    any_busy = any(i.busy for i in gpu.instances)
    for t, slots in enumerate(templates):
        layout = {PlacedInstance(normalize_profile_name(s.profile), s.placement) for s in slots}
        if layout == set(have):
            busy = [have[PlacedInstance(normalize_profile_name(s.profile), s.placement)].busy
                    for s in slots]  # fmt: skip
            return _Gpu(gpu, templates, t, busy)
    return _Gpu(gpu, templates, None, [], foreign=any_busy)


def _memreq(gpu: GpuState, memory_mib: int, percentage: int) -> int:
    # HAMi: a percentage is of the whole device's memory, also on MIG.
    return memory_mib if memory_mib else gpu.memory_mib * percentage // 100


def _take_mig(work: _Gpu, memreq: int) -> int | None:
    """The usage-list entry HAMi gives a device of `memreq` MiB on this GPU, or None.

    Updates `work`: a GPU without an instance in use is reset to the first template that
    serves the request (`migNeedsReset` + `AddResourceUsage`).
    """
    gpu = work.state
    if work.foreign or gpu.policy == "static" or not work.templates:
        return None
    if not work.in_use:
        for t, slots in enumerate(work.templates):
            entry = next((k for k, s in enumerate(slots) if s.memory >= memreq), None)
            if entry is None:
                continue
            if t != work.template:
                work.template = t
                work.changed = True
                work.busy = [False] * len(slots)
            work.mig_on = not gpu.mig_enabled
            work.busy[entry] = True
            return entry
        return None
    assert work.template is not None
    slots = work.templates[work.template]
    used = sum(s.memory for s, b in zip(slots, work.busy, strict=True) if b)
    if gpu.memory_mib - used < memreq:
        return None
    for k, slot in enumerate(slots):
        if not work.busy[k] and slot.memory >= memreq:
            work.busy[k] = True
            return k
    return None


def _take_share(work: _Gpu, memreq: int, cores: int, split_count: int) -> bool:
    gpu = work.state
    if work.share_count >= split_count:
        return False
    if gpu.memory_mib - work.share_mem < memreq or 100 - work.share_cores < cores:
        return False
    if cores >= 100 and work.share_count > 0:
        return False
    if work.share_cores >= 100 and cores == 0:
        return False
    work.share_count += 1
    work.share_mem += memreq
    work.share_cores += cores
    return True


def _eligible(pod: PendingPod, gpu: GpuState) -> bool:
    if gpu.mode == "hami-core" and gpu.mig_enabled:
        return False  # a node switching modes: no shares until MIG is off
    return (
        pod.allows_mode(gpu.mode)
        and pod.allows_gpu_name(gpu.name.upper())
        and pod.allows_uuid(gpu.uuid)
    )


def _cores_of(work: _Gpu, slot: TemplateSlot) -> int:
    compute = max((p.compute_slices for p in work.state.table.profiles), default=1)
    return slot.compute_slices * 100 // compute


def _try_node(
    pod: PendingPod, gpus: list[_Gpu], split_count: int
) -> tuple[list[_Gpu], list[list[Device]]] | None:
    """Every container's devices on this node, or None; works on copies of the GPUs."""
    work = [g.copy() for g in gpus]
    chosen: list[list[Device]] = []
    for _, count, req in pod.containers:
        devices: list[Device] = []
        order = sorted(
            (w for w in work if _eligible(pod, w.state)),
            key=lambda w: (-w.used_fraction(), w.state.index),
        )
        used_shares: set[int] = set()
        for _ in range(count):
            device = None
            for w in order:
                gpu = w.state
                memreq = _memreq(gpu, req.memory_mib, req.memory_percentage)
                if gpu.mode == "hami-core":
                    if gpu.index in used_shares or not _take_share(
                        w, memreq, req.cores, split_count
                    ):
                        continue
                    used_shares.add(gpu.index)
                    device = Device(
                        gpu.node, gpu.index, gpu.uuid, "hami-core", None, None, memreq, req.cores
                    )
                    break
                entry = _take_mig(w, memreq)
                if entry is None:
                    continue
                assert w.template is not None
                slot = w.templates[w.template][entry]
                w.given.append((entry, pod.key))
                existing = next(
                    (i for i in gpu.instances if i.placement == slot.placement and not w.changed),
                    None,
                )
                device = Device(
                    node=gpu.node,
                    gpu_index=gpu.index,
                    gpu_uuid=gpu.uuid,
                    mode="mig",
                    profile=slot.profile,
                    placement=slot.placement,
                    memory_mib=slot.physical_mib,
                    cores=_cores_of(w, slot),
                    instance_uuid=existing.uuid if existing else None,
                    new_instance=existing is None,
                )
                break
            if device is None:
                return None
            devices.append(device)
        chosen.append(devices)
    return work, chosen


def _reason(pod: PendingPod, gpus: Sequence[_Gpu]) -> tuple[str, str]:
    eligible = [g for g in gpus if _eligible(pod, g.state)]
    if not eligible:
        return "Filtered", "no GPU passes the pod's filters"
    largest = 0
    need = 0
    for g in eligible:
        for _, _, req in pod.containers:
            need = max(need, _memreq(g.state, req.memory_mib, req.memory_percentage))
        if g.state.mode == "hami-core":
            largest = max(largest, g.state.memory_mib)
        else:
            largest = max([largest, *(s.memory for t in g.templates for s in t)])
    if need > largest:
        return (
            "TooLarge",
            f"asks {need} MiB per device; the largest template entry or hami-core GPU of any "
            f"eligible GPU has {largest} MiB",
        )
    return (
        "NoRoom",
        f"no free template entry of >= {need} MiB on an eligible GPU (a GPU with an instance "
        "in use keeps its template) and no hami-core GPU with room",
    )


def hami_legacy_plan(
    snapshot: Snapshot, pending: Sequence[PodDemand], config: DeviceConfig | None
) -> Plan:
    """Place `pending` pods as HAMi's legacy dynamic-MIG scheduler would (module doc)."""
    config = config or DeviceConfig.model_validate({"nvidia": {}})
    split_count = config.nvidia.device_split_count
    state: dict[str, list[_Gpu]] = {
        node.name: [_gpu(g, config) for g in node.gpus] for node in snapshot.nodes
    }
    nodes: dict[str, NodeState] = {node.name: node for node in snapshot.nodes}
    pods = sorted({p.key: p for p in map(pending_pod, reversed(pending))}.values(),
                  key=lambda p: p.order_key)  # fmt: skip
    results: dict[str, Assignment | Unplaceable] = {}
    for pod in pods:
        best: tuple[float, str, list[_Gpu], list[list[Device]]] | None = None
        for name in sorted(nodes):
            tried = _try_node(pod, state[name], split_count)
            if tried is None:
                continue
            work, devices = tried
            gpus = state[name]
            score = sum(g.used_fraction() for g in gpus) / max(1, len(gpus))
            if best is None or score > best[0]:
                best = (score, name, work, devices)
        if best is None:
            every = [g for gpus in state.values() for g in gpus]
            code, reason = _reason(pod, every)
            results[pod.key] = Unplaceable(pod.key, reason, code=code)
            continue
        _, name, work, devices = best
        state[name] = work
        containers = tuple(
            ContainerAssignment(cname, tuple(devs))
            for (cname, _, _), devs in zip(pod.containers, devices, strict=True)
        )
        results[pod.key] = Assignment(pod.key, name, containers)
    return _plan(results, state)


def _plan(results: dict[str, Assignment | Unplaceable], state: dict[str, list[_Gpu]]) -> Plan:
    layouts: dict[GpuKey, tuple[PlacedInstance, ...]] = {}
    mig_enabled: dict[GpuKey, bool] = {}
    reservations: dict[GpuKey, tuple[tuple[PlacedInstance, str], ...]] = {}
    for gpus in state.values():
        for w in gpus:
            key = w.state.key
            if w.template is None:
                continue
            slots = w.templates[w.template]
            if w.changed:
                layouts[key] = tuple(sorted(PlacedInstance(s.profile, s.placement) for s in slots))
            if w.mig_on:
                mig_enabled[key] = True
            if w.given:
                reservations[key] = tuple(
                    (PlacedInstance(slots[k].profile, slots[k].placement), pod)
                    for k, pod in w.given
                )
    return Plan(pods=results, layouts=layouts, mig_enabled=mig_enabled, reservations=reservations)
