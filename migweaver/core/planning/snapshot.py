"""The planner's typed input: every managed GPU, what is on it, and what holds it.

A `Snapshot` is a plain value built by the operator from the MigLayouts (spec + status),
the NodeConfigs and the pods it already placed, or by `migweaver plan` from a file. It
maps 1:1 from a MigLayout: one `GpuState` per layout, one `InstanceState` per instance of
the spec merged with the status (`snapshot_from_layouts`).

GPUs that a NodeConfig's `filterDevices` excludes are simply absent: migweaver never
plans for a GPU it does not manage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from migweaver.core.mig.catalog import GpuModel, match_model
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import (
    MigProfile,
    Placement,
    ProfileTable,
    normalize_profile_name,
    with_catalog_aliases,
)
from migweaver.core.resources.models import MigLayout, OperatingMode, Policy, ProfileStatus
from migweaver.core.resources.node_fit import NodeFacts, Taint

__all__ = [
    "GpuKey",
    "GpuMode",
    "GpuState",
    "InstanceState",
    "NodeState",
    "Share",
    "Snapshot",
    "fake_gpu_uuid",
    "snapshot_from_layouts",
    "table_from_status",
]

GpuKey: TypeAlias = tuple[str, int]
"""(node name, NVML GPU index): a GPU's identity in plans."""
GpuMode: TypeAlias = Literal["mig", "hami-core"]


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One GPU instance on a GPU: existing (status) or desired by an earlier plan (spec).

    `in_use`: a process or an allocated pod holds it. `reserved_by`: the pod (`ns/name`) a
    plan gave it to; the pod may not run yet. Either makes the instance *busy*: the planner
    never moves, destroys or reassigns it.
    """

    profile: str
    placement: Placement
    uuid: str | None = None
    in_use: bool = False
    reserved_by: str | None = None

    @property
    def busy(self) -> bool:
        """In use or reserved: untouchable."""
        return self.in_use or self.reserved_by is not None

    @property
    def placed(self) -> PlacedInstance:
        """The instance as a layout entry (profile at placement)."""
        return PlacedInstance(self.profile, self.placement)


@dataclass(frozen=True, slots=True)
class Share:
    """A hami-core share of a whole GPU held by a pod: MiB of memory and percent of SMs."""

    pod: str
    memory_mib: int
    cores: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuState:
    """One managed GPU as the planner sees it.

    `name` is NVML's device name (the use/nouse-gputype filters match it), `model` the
    catalog key when known. `mode` is how the GPU is to be shared (its node's operating
    mode); `mig_enabled` is whether MIG mode is on *now*. `table` holds the profiles NVML
    reported (or the catalog's, when built from files). `memory_mib` is the whole GPU's
    memory (hami-core shares are carved from it).
    """

    node: str
    index: int
    uuid: str
    name: str
    model: str | None = None
    mode: GpuMode = "mig"
    policy: Policy = "dynamic"
    mig_enabled: bool = True
    table: ProfileTable
    memory_mib: int
    instances: tuple[InstanceState, ...] = ()
    shares: tuple[Share, ...] = ()

    @property
    def key(self) -> GpuKey:
        """(node, index)."""
        return (self.node, self.index)

    @property
    def label(self) -> str:
        """`node-a/gpu1`, as messages name a GPU."""
        return f"{self.node}/gpu{self.index}"


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node: its operating mode, labels, managed GPUs, and whether it takes new pods
    (`core/resources/node_fit.py`): cordoned, Ready, taints. A cordoned or NotReady node keeps what
    is on it; the planner only places nothing new there."""

    name: str
    mode: OperatingMode
    gpus: tuple[GpuState, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    ready: bool = True
    taints: tuple[Taint, ...] = ()

    @property
    def facts(self) -> NodeFacts:
        """The node as `node_fit.node_refusal` judges it."""
        return NodeFacts(self.name, self.labels, self.unschedulable, self.ready, self.taints)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every managed node and GPU at one instant; `now` is seconds since the epoch."""

    nodes: tuple[NodeState, ...]
    now: float = 0.0

    def gpus(self) -> Iterator[GpuState]:
        """Every GPU of every node."""
        for node in self.nodes:
            yield from node.gpus


def fake_gpu_uuid(node: str, index: int) -> str:
    """A stable, UUID-shaped GPU id for GPUs described without one (files, simulations)."""
    digest = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


# --------------------------------------------------------------------------- from layouts


def table_from_status(profiles: Sequence[ProfileStatus]) -> ProfileTable | None:
    """The ProfileTable NVML reported in a MigLayout status, or None when it is empty."""
    built: list[MigProfile] = []
    slots = 0
    for status in profiles:
        placements = tuple(p.to_placement() for p in status.placements)
        if not placements or len({p.size for p in placements}) != 1:
            continue
        slots = max(slots, *(p.end for p in placements))
        built.append(
            MigProfile(
                name=status.name,
                profile_id=status.id,
                index=-1,
                compute_slices=status.slices,
                memory_mib=status.memory_mib,
                placements=placements,
                max_count=status.max_count if status.max_count is not None else len(placements),
                sm_count=status.sm_count,
                media_extensions="+me" in status.name,
            )
        )
    return ProfileTable(slots, tuple(built)) if built else None


def _merge_instances(
    layout: MigLayout, reservations: Mapping[PlacedInstance, str]
) -> list[InstanceState]:
    """Spec instances merged with status instances by (profile, placement).

    A spec instance without status is still to be created (busy only when reserved); a
    status instance the spec drops is about to be destroyed, unless it is busy, in which
    case the agent keeps it and so must the planner.
    """
    status = layout.status
    found: dict[tuple[str, Placement], InstanceState] = {}
    for inst in status.instances if status else []:
        key = (normalize_profile_name(inst.profile), inst.placement.to_placement())
        found[key] = InstanceState(
            profile=inst.profile,
            placement=key[1],
            uuid=inst.uuid,
            in_use=inst.in_use,
            reserved_by=inst.pod,
        )
    result: list[InstanceState] = []
    for spec in layout.spec.instances:
        placement = spec.placement.to_placement()
        key = (normalize_profile_name(spec.profile), placement)
        state = found.pop(key, None) or InstanceState(spec.profile, placement)
        pod = reservations.get(PlacedInstance(spec.profile, placement))
        if pod is not None and state.reserved_by is None:
            state = InstanceState(state.profile, placement, state.uuid, state.in_use, pod)
        result.append(state)
    result.extend(state for state in found.values() if state.busy)
    return sorted(result, key=lambda s: (s.placement, s.profile))


_ProfilesKey: TypeAlias = tuple[
    tuple[str, int, int, int, int | None, tuple[tuple[int, int], ...]], ...
]


def _profiles_key(profiles: Sequence[ProfileStatus]) -> _ProfilesKey:
    return tuple(
        (
            p.name,
            p.id,
            p.memory_mib,
            p.slices,
            p.max_count,
            tuple((pl.start, pl.size) for pl in p.placements),
        )
        for p in profiles
    )


def _build_table(model: GpuModel | None, profiles: Sequence[ProfileStatus]) -> ProfileTable | None:
    table = table_from_status(profiles)
    if table is None and model is not None:
        return model.table
    if table is not None and model is not None:
        return with_catalog_aliases(table, model.table)
    return table


_TABLES: dict[tuple[str, _ProfilesKey], ProfileTable | None] = {}
_MAX_TABLES = 64


def gpu_table(model: GpuModel | None, profiles: Sequence[ProfileStatus]) -> ProfileTable | None:
    """The GPU's profile table: NVML's (from its MigLayout status) with the catalog model's
    aliases, or the model's when NVML reported none; None when neither is known.

    Built once per distinct (model, profiles): a fleet has a few kinds of GPU, and building
    the same table for each of thousands of GPUs every plan cost seconds. A memo, not
    state: the same input gives the same table."""
    key = (model.key if model is not None else "", _profiles_key(profiles))
    if key not in _TABLES:
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        _TABLES[key] = _build_table(model, profiles)
    return _TABLES[key]


def snapshot_from_layouts(
    layouts: Iterable[MigLayout],
    node_modes: Mapping[str, OperatingMode],
    *,
    node_labels: Mapping[str, Mapping[str, str]] | None = None,
    node_facts: Mapping[str, NodeFacts] | None = None,
    reservations: Mapping[GpuKey, Mapping[PlacedInstance, str]] | None = None,
    shares: Mapping[GpuKey, Sequence[Share]] | None = None,
    now: float = 0.0,
) -> Snapshot:
    """A snapshot from MigLayouts (spec + status) and the operator's own records.

    `node_modes` gives each node's operating mode (nodes not listed run hami-core, as in
    docs/design.md); `node_facts` whether each node is cordoned, Ready and tainted (a node not
    listed takes new pods); `reservations` the pod each planned instance is reserved for,
    `shares` the hami-core shares already allocated. A layout whose GPU has not been
    described yet (no status profiles and a model the catalog does not know) is left out:
    it cannot be planned until its agent reports it.
    """
    labels = node_labels or {}
    facts = node_facts or {}
    reserved = reservations or {}
    shared = shares or {}
    by_node: dict[str, list[GpuState]] = {}
    for layout in layouts:
        spec, status = layout.spec, layout.status
        gpu_name = status.gpu.model if status and status.gpu else ""
        pci_id = status.gpu.pci_device_id if status and status.gpu else None
        model = match_model(gpu_name, pci_id) if gpu_name or pci_id else None
        table = gpu_table(model, status.profiles if status else ())
        if table is None:
            continue
        memory = status.gpu.memory_mib if status and status.gpu else 0
        if status and status.mig_mode is not None:
            mig_enabled = status.mig_mode.current == "Enabled"
        else:
            mig_enabled = spec.mig_enabled
        key = (spec.node_name, spec.gpu_index)
        by_node.setdefault(spec.node_name, []).append(
            GpuState(
                node=spec.node_name,
                index=spec.gpu_index,
                uuid=spec.gpu_uuid,
                name=gpu_name,
                model=model.key if model else None,
                mode=node_modes.get(spec.node_name, "hami-core"),
                policy=spec.policy,
                mig_enabled=mig_enabled,
                table=table,
                memory_mib=memory or (model.memory_mib if model else 0),
                instances=tuple(_merge_instances(layout, reserved.get(key, {}))),
                shares=tuple(shared.get(key, ())),
            )
        )
    nodes = tuple(
        NodeState(
            name=name,
            mode=node_modes.get(name, "hami-core"),
            gpus=tuple(sorted(gpus, key=lambda g: g.index)),
            labels=dict(labels.get(name, {})),
            unschedulable=name in facts and facts[name].unschedulable,
            ready=name not in facts or facts[name].ready,
            taints=facts[name].taints if name in facts else (),
        )
        for name, gpus in sorted(by_node.items())
    )
    return Snapshot(nodes=nodes, now=now)
