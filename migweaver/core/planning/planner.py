"""The planner: from pending GPU pods and a snapshot to placements and MigLayouts.

`plan(snapshot, pending, config)` places pods one at a time, in order of priority, then
age, then name. For each pod it picks the best node by a score (below), takes the devices
there, and updates the GPUs' states before the next pod. The rules (docs/planner.md):

- busy instances (in use or reserved) are never moved, destroyed or reassigned; `static`
  layouts never change; every new instance sits at one of NVML's placements;
- a pod's devices are all on one node; on hami-core each container's devices are on
  distinct GPUs;
- per device: an existing free instance first (the smallest that serves; on a GPU where
  nothing runs, only one no larger than a new instance would be, else the GPU is
  re-partitioned); otherwise a hami-core share or a new instance, whichever takes the
  smaller share of a GPU (a new instance: fewest idle instances destroyed, first
  configured geometry, smallest profile, least fragmentation); GPUs already in MIG mode
  and already partly used first (binpack; `spread` inverts it). The ranking is
  `gpu_options._rank`;
- a pod that has waited `starvation_after` seconds and still does not fit holds the GPUs
  it would fit on soonest against later pods (`starvation.py`);
- a pod goes only to a node kube-scheduler would accept for it (`node_fit.py`: its
  nodeSelector, required node affinity and tolerations; nodes cordoned or not Ready take
  no new pods, while what they hold stays);
- a pod that cannot be placed gets a reason naming the nearest miss (`plan_reasons.py`).

Speed comes from memoising by state, not by GPU: `GpuOptions` answers per distinct GPU
state, node evaluations are cached per (node state, demand), and for each distinct demand
a heap orders the nodes by score, re-scoring a node only when it reaches the top after it
changed. Pods with UUID filters, which defeat the sharing, scan every node. The nodes a
pod's node constraints refuse are found once per distinct constraint set and simply left
out of its heap (or scan).
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from migweaver.core.config import DeviceConfig, Geometry
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement, ProfileTable
from migweaver.core.planning._gpu_options import (
    KIND_EXISTING,
    KIND_NEW,
    KIND_SHARE,
    RANK_LENGTH,
    GpuOptions,
    GpuType,
    Inst,
    Option,
    View,
    resolve_geometries,
)
from migweaver.core.planning._placement_score import ProfileGeometry
from migweaver.core.planning._plan_reasons import (
    CODE_FILTERED,
    CODE_NO_ROOM,
    CODE_NOT_ON_ONE_NODE,
    explain,
    node_refusals,
)
from migweaver.core.planning._reservations import ReservedItem, match_reservations
from migweaver.core.planning._starvation import choose_hold
from migweaver.core.planning.pending import PendingPod, pending_pod
from migweaver.core.planning.plan import (
    Assignment,
    ContainerAssignment,
    Device,
    Plan,
    PlannerOptions,
    Unplaceable,
)
from migweaver.core.planning.snapshot import GpuKey, GpuState, Snapshot
from migweaver.core.resources.node_fit import NodeFacts, PodConstraints, refusal_phrase
from migweaver.core.resources.requests import PodDemand

__all__ = ["plan"]

_DEFAULT_CONFIG = DeviceConfig.model_validate({"nvidia": {}})
_CAN_FIT_LATER = (CODE_NO_ROOM, CODE_NOT_ON_ONE_NODE)


def plan(
    snapshot: Snapshot,
    pending: Sequence[PodDemand],
    config: DeviceConfig | None = None,
    options: PlannerOptions | None = None,
) -> Plan:
    """Plan `pending` pods on `snapshot` under the device `config`. Pure and deterministic.

    Pods without any GPU container get an `Assignment` with no node. A pod key that
    appears twice is planned once (its first occurrence in planning order).
    """
    config = config or _DEFAULT_CONFIG
    options = options or PlannerOptions()
    pods = _unique_in_order(pending_pod(d) for d in pending)
    best = _Planner(snapshot, config, options).run(pods)
    work = len(pods) * max(1, len(snapshot.nodes))
    if work > options.repair_max_work:
        return best
    trials = 0
    for pod in pods:
        result = best.pods[pod.key]
        if not isinstance(result, Unplaceable) or result.code not in _CAN_FIT_LATER:
            continue
        placed = set(best.assignments)
        for order in _repair_orders(pods, pod):
            if trials >= options.repair_trials:
                return best
            trials += 1
            trial = _Planner(snapshot, config, options).run(order)
            kept = placed | {pod.key} <= set(trial.assignments)
            if kept and trial.held == best.held and _respects_holds(trial, pods):
                best = replace(trial, pods={p.key: trial.pods[p.key] for p in pods})
                break
    return best


def _respects_holds(trial: Plan, pods: Sequence[PendingPod]) -> bool:
    """No pod after a holder in queue order got anything on the holder's GPUs (a retry in
    another order must not let a pod overtake a starving one)."""
    rank = {p.key: i for i, p in enumerate(pods)}
    for gpu, holder in trial.held.items():
        for key, assignment in trial.assignments.items():
            later = rank[key] > rank[holder] and not assignment.reused
            if later and any(d.gpu_key == gpu for d in assignment.devices):
                return False
    return True


def _repair_orders(pods: Sequence[PendingPod], failed: PendingPod) -> list[list[PendingPod]]:
    """Orders to retry a round in when `failed` found no place: `failed` first, then the
    others in queue order; and every pod largest first (first-fit decreasing). A retry is
    kept only if it places every pod the round placed *and* `failed`, so no pod ever loses
    its place to a later one: the queue order still decides who gets served."""
    rest = [p for p in pods if p.key != failed.key]
    return [[failed, *rest], sorted(pods, key=lambda p: (-_size(p), p.order_key))]


def _size(pod: PendingPod) -> int:
    """A pod's total demand in MiB (a percentage counts as that much of 80 GB)."""
    return sum(
        count * (req.memory_mib or req.memory_percentage * 819) for _, count, req in pod.containers
    )


# --------------------------------------------------------------------------- state


@dataclass(eq=False, slots=True)
class _Gpu:
    """One GPU during planning: its snapshot state, current view, and what changed."""

    state: GpuState
    vid: int
    names: dict[Inst, str]
    uuids: dict[Inst, str | None]
    changed: bool = False
    switched: bool = False
    reservations: list[tuple[PlacedInstance, str]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Node:
    """A node during planning. `sig` (its GPUs' view ids) is the memo key of node
    evaluations; `version` changes whenever a GPU of the node does."""

    name: str
    gpus: list[_Gpu]
    tids: tuple[int, ...]
    sig: tuple[int, ...] = ()
    distinct: tuple[int, ...] = ()
    """The distinct view ids of `sig`: a one-device pod's score needs only these."""
    fullness: float = 0.0
    """Mean fullness of the node's GPUs (its packing term)."""
    version: int = 0

    def refresh(self, opts: GpuOptions) -> None:
        """Recompute the derived fields after a GPU's view changed; bump the version."""
        self.sig = tuple(g.vid for g in self.gpus)
        self.distinct = tuple(sorted(set(self.sig)))
        self.fullness = sum(opts.fullness(v) for v in self.sig) / max(len(self.sig), 1)
        self.version += 1


class _Choice(NamedTuple):
    """A node's best allocation for a pod: its score and (container, GPU position, option)."""

    score: tuple[float, ...]
    steps: tuple[tuple[int, int, Option], ...]


class _Heap(NamedTuple):
    """Nodes by score for one demand: (score, node, node version, exact score?), and the
    version each node was last pushed with."""

    entries: list[tuple[tuple[float, ...], str, int, bool]]
    pushed: dict[str, int]


class _Planner:
    def __init__(self, snapshot: Snapshot, config: DeviceConfig, options: PlannerOptions) -> None:
        self.snapshot = snapshot
        self.config = config
        self.options = options
        self.opts = GpuOptions()
        self.nodes: list[_Node] = []
        self.by_name: dict[str, _Node] = {}
        self.result = Plan()
        self._type_ids: dict[Hashable, int] = {}
        self._shapes: dict[int, tuple[ProfileTable, ProfileGeometry]] = {}
        self._shape_values: dict[ProfileTable, ProfileGeometry] = {}
        self._geometries: dict[tuple[str, str | None], list[Geometry] | None] = {}
        self._eligible: dict[tuple[tuple[int, ...], Hashable], tuple[bool, ...]] = {}
        self._node_memo: dict[Hashable, _Choice | None] = {}
        self._heaps: dict[Hashable, _Heap] = {}
        self._holders = 0
        self._members: dict[int, dict[GpuKey, GpuState]] = {}
        """GPUs per current view id: what reasons iterate instead of every GPU."""
        self._changes = 0
        self._reasons: dict[Hashable, tuple[str, str]] = {}
        self._facts: list[NodeFacts] = []
        self._refusals: dict[PodConstraints, dict[str, str]] = {}
        """Per distinct constraint set: the nodes that refuse it, with the reason."""

    # ------------------------------------------------------------------ setup

    def _shape(self, table: ProfileTable) -> ProfileGeometry:
        entry = self._shapes.get(id(table))
        if entry is not None:
            return entry[1]
        shape = self._shape_values.get(table)
        if shape is None:
            shape = self._shape_values[table] = ProfileGeometry(table)
        self._shapes[id(table)] = (table, shape)
        return shape

    def _type_id(self, gpu: GpuState) -> int:
        shape = self._shape(gpu.table)
        key = (id(shape), gpu.name, gpu.model, gpu.mode, gpu.policy, gpu.memory_mib)
        tid = self._type_ids.get(key)
        if tid is not None:
            return tid
        gkey = (gpu.name, gpu.model)
        if gkey not in self._geometries:
            model = get_model(gpu.model) if gpu.model else None
            self._geometries[gkey] = self.config.geometries_for(gpu.name, model)
        vectors, texts = resolve_geometries(shape.table, self._geometries[gkey])
        n = self.config.nvidia
        tid = len(self.opts.types)
        self.opts.types.append(
            GpuType(
                tid=tid,
                table=shape.table,
                shape=shape,
                name=gpu.name,
                mode=gpu.mode,
                static=gpu.policy == "static",
                memory_mib=gpu.memory_mib,
                geometries=vectors,
                geometry_text=texts,
                hami_memory=int(gpu.memory_mib * n.device_memory_scaling),
                hami_cores=int(100 * n.device_core_scaling),
                split=n.device_split_count,
            )
        )
        self._type_ids[key] = tid
        return tid

    def _make_gpu(
        self, gpu: GpuState, released: set[tuple[GpuKey, Placement]], pending: set[str]
    ) -> _Gpu:
        tid = self._type_id(gpu)
        table = gpu.table
        index = {p.name: i for i, p in enumerate(table.profiles)}
        busy: list[Inst] = []
        idle: list[Inst] = []
        names: dict[Inst, str] = {}
        uuids: dict[Inst, str | None] = {}
        for inst in gpu.instances:
            profile = table.get(inst.profile)
            pidx = index[profile.name] if profile is not None else -1
            item = (inst.placement.start, inst.placement.size, pidx)
            names[item] = inst.profile
            uuids[item] = inst.uuid
            # An instance reserved for a pending pod that is planned afresh is free again,
            # unless a process holds it.
            released_now = (gpu.key, inst.placement) in released
            (busy if inst.in_use or (inst.busy and not released_now) else idle).append(item)
        shares = [s for s in gpu.shares if s.pod not in pending]
        view = View(
            tid=tid,
            mig_enabled=gpu.mig_enabled,
            busy=tuple(sorted(busy)),
            idle=tuple(sorted(idle)),
            share_mem=sum(s.memory_mib for s in shares),
            share_cores=sum(s.cores for s in shares),
            share_count=len(shares),
            share_exclusive=any(s.cores >= 100 for s in shares),
            held=False,
        )
        return _Gpu(state=gpu, vid=self.opts.intern(view), names=names, uuids=uuids)

    # ------------------------------------------------------------------ main loop

    def run(self, pods: Sequence[PendingPod]) -> Plan:
        """Plan `pods` in the given order (unique keys)."""
        keys = {p.key for p in pods}
        reused, released = self._reuse_reservations(pods)
        for node in sorted(self.snapshot.nodes, key=lambda n: n.name):
            gpus = [
                self._make_gpu(g, released, keys - set(reused))
                for g in sorted(node.gpus, key=lambda g: g.index)
            ]
            tids = tuple(self.opts.views[g.vid].tid for g in gpus)
            built = _Node(node.name, gpus, tids)
            built.refresh(self.opts)
            self.nodes.append(built)
            for gpu in gpus:
                self._members.setdefault(gpu.vid, {})[gpu.state.key] = gpu.state
            self._facts.append(node.facts)
        self.by_name = {n.name: n for n in self.nodes}
        remaining: dict[Hashable, int] = {}
        for pod in pods:
            remaining[pod.demand_key] = remaining.get(pod.demand_key, 0) + 1
        for pod in pods:
            remaining[pod.demand_key] -= 1
            if pod.key in reused:
                self.result.pods[pod.key] = reused[pod.key]
            elif not pod.containers:
                self.result.pods[pod.key] = Assignment(pod.key, None, ())
            else:
                self._place(pod)
            if not remaining[pod.demand_key]:
                self._heaps.pop(pod.demand_key, None)
        self._write_layouts()
        return self.result

    def _place(self, pod: PendingPod) -> None:
        found = self._best_node(pod)
        if found is not None:
            node, choice = found
            self.result.pods[pod.key] = self._commit(node, pod, choice)
            return
        code, reason = self._explain(pod)
        holds: tuple[GpuKey, ...] = ()
        waited = self.snapshot.now - pod.created
        if (
            code in _CAN_FIT_LATER
            and waited >= self.options.starvation_after
            and self._holders < self.options.max_holds
        ):
            holds = self._hold(pod)
            if holds:
                shown = ", ".join(f"{n}/gpu{i}" for n, i in holds)
                reason += f"; waiting {int(waited)} s, it now holds {shown} until they drain"
        self.result.pods[pod.key] = Unplaceable(pod.key, reason, holds, code)

    # ------------------------------------------------------------------ choosing a node

    def _refused(self, pod: PendingPod) -> dict[str, str]:
        """The nodes kube-scheduler would refuse for the pod: name -> why (a phrase after
        the name). Computed once per distinct constraint set; the nodes that take any pod
        asking nothing (the usual case) cost one check each, once."""
        constraints = pod.constraints
        found = self._refusals.get(constraints)
        if found is None:
            found = {}
            for facts in self._facts:
                if constraints.empty and facts.open:
                    continue
                phrase = refusal_phrase(constraints, facts)
                if phrase is not None:
                    found[facts.name] = phrase
            self._refusals[constraints] = found
        return found

    def _eligible_positions(self, node: _Node, pod: PendingPod) -> tuple[bool, ...]:
        """Which of the node's GPUs the pod's filters allow (memoised per GPU types)."""
        key = (node.tids, pod.filter_key)
        eligible = self._eligible.get(key)
        if eligible is None:
            types = self.opts.types
            eligible = tuple(_type_passes(types[tid], pod) for tid in node.tids)
            self._eligible[key] = eligible
        if pod.has_uuid_filter:
            eligible = tuple(
                ok and pod.allows_uuid(g.state.uuid)
                for ok, g in zip(eligible, node.gpus, strict=True)
            )
        return eligible

    def _evaluate(self, node: _Node, pod: PendingPod) -> _Choice | None:
        """The node's best allocation for the pod (memoised per node state and demand)."""
        if pod.has_uuid_filter:
            eligible = self._eligible_positions(node, pod)
            key: Hashable = (node.sig, pod.demand_key, eligible)
        else:
            key = (node.sig, pod.demand_key)
        if key in self._node_memo:
            return self._node_memo[key]
        if not pod.has_uuid_filter:
            eligible = self._eligible_positions(node, pod)
        if pod.total_devices == 1:
            choice = self._allocate_one(node, eligible, pod)
        else:
            choice = self._allocate(node, eligible, pod)
        self._node_memo[key] = choice
        return choice

    def _allocate_one(
        self, node: _Node, eligible: tuple[bool, ...], pod: PendingPod
    ) -> _Choice | None:
        """`_allocate` for the common one-device pod: the best option on the node."""
        _, _, req = pod.containers[0]
        best_fn = self.opts.best
        best: Option | None = None
        best_pos = -1
        for pos, vid in enumerate(node.sig):
            if eligible[pos]:
                option = best_fn(vid, req, pod.allow_mig, pod.allow_hami, pod.spread_gpu)
                if option is not None and (best is None or option.rank < best.rank):
                    best, best_pos = option, pos
        if best is None:
            return None
        return _Choice(_node_score(best.rank, node, pod), ((0, best_pos, best),))

    def _allocate(self, node: _Node, eligible: tuple[bool, ...], pod: PendingPod) -> _Choice | None:
        """Greedy device by device on one node: each takes the best option there is.

        GPUs are visited per distinct view (ties go to the lowest GPU index), since most
        GPUs of a node are usually in the same state.
        """
        opts = self.opts
        where: dict[int, list[int]] = {}
        for pos, vid in enumerate(node.sig):
            if eligible[pos]:
                where.setdefault(vid, []).append(pos)
        steps: list[tuple[int, int, Option]] = []
        totals = [0.0] * RANK_LENGTH
        for ci, (_, count, req) in enumerate(pod.containers):
            shared: set[int] = set()
            for _ in range(count):
                best: tuple[tuple[float, ...], int, int, Option] | None = None
                for vid, positions in where.items():
                    option = opts.best(vid, req, pod.allow_mig, pod.allow_hami, pod.spread_gpu)
                    if option is None:
                        continue
                    if option.kind == KIND_SHARE:
                        pos = next((p for p in positions if p not in shared), -1)
                        if pos < 0:
                            continue
                    else:
                        pos = positions[0]
                    if best is None or (option.rank, pos) < (best[0], best[1]):
                        best = (option.rank, pos, vid, option)
                if best is None:
                    return None
                _, pos, vid, option = best
                if option.kind == KIND_SHARE:
                    shared.add(pos)
                where[vid].remove(pos)
                if not where[vid]:
                    del where[vid]
                insort(where.setdefault(opts.apply(vid, option), []), pos)
                steps.append((ci, pos, option))
                for i, value in enumerate(option.rank):
                    totals[i] += value
        return _Choice(_node_score(totals, node, pod), tuple(steps))

    def _best_node(self, pod: PendingPod) -> tuple[_Node, _Choice] | None:
        """The node with the best score for the pod, from the pod's demand heap.

        An entry is trusted only when it is exact and its node has not changed since it
        was pushed; otherwise the node is re-scored and pushed again. Scores of changed
        nodes are refreshed lazily (when their entry reaches the top), so a node whose
        score *improved* because of another pod can be seen late: that only affects
        which of several feasible nodes wins, never what is feasible or safe.
        """
        if pod.has_uuid_filter:
            return self._scan(pod)
        heap = self._heaps.get(pod.demand_key)
        if heap is None:
            heap = self._heaps[pod.demand_key] = self._build_heap(pod)
        entries, pushed = heap
        while entries:
            _, name, version, exact = entries[0]
            node = self.by_name[name]
            current = version == node.version
            if current and exact:
                choice = self._evaluate(node, pod)
                assert choice is not None
                return node, choice
            heapq.heappop(entries)
            if not current and pushed.get(name) == node.version:
                continue  # a current entry for this node is already in the heap
            pushed[name] = node.version
            choice = self._evaluate(node, pod)
            if choice is not None:
                heapq.heappush(entries, (choice.score, name, node.version, True))
        return None

    def _build_heap(self, pod: PendingPod) -> _Heap:
        """Every node that may take the pod, ordered by score.

        A one-device pod's score is computed from the node's *distinct* GPU views (most
        GPUs of a node share the view of an empty GPU), which keeps the first pod of each
        new demand cheap on thousands of nodes. A multi-device pod's node is first
        ranked by an estimate (its first device's best option, times the device count)
        and scored exactly only when it reaches the top.
        """
        entries = []
        pushed = {}
        ranks: dict[int, tuple[float, ...] | None] = {}
        exact = pod.total_devices == 1
        refused = self._refused(pod)
        for node in self.nodes:
            if refused and node.name in refused:
                continue
            pushed[node.name] = node.version
            score = self._score_one(node, pod, ranks)
            if score is not None:
                if not exact:
                    n = pod.total_devices
                    score = (*(x * n for x in score[:-1]), score[-1])
                entries.append((score, node.name, node.version, exact))
        heapq.heapify(entries)
        return _Heap(entries, pushed)

    def _scan(self, pod: PendingPod) -> tuple[_Node, _Choice] | None:
        best: tuple[tuple[float, ...], str] | None = None
        found: tuple[_Node, _Choice] | None = None
        refused = self._refused(pod)
        for node in self.nodes:
            if node.name in refused:
                continue
            choice = self._evaluate(node, pod)
            if choice is not None and (best is None or (choice.score, node.name) < best):
                best, found = (choice.score, node.name), (node, choice)
        return found

    def _score_one(
        self, node: _Node, pod: PendingPod, ranks: dict[int, tuple[float, ...] | None]
    ) -> tuple[float, ...] | None:
        """The score `_allocate_one` gives the node for the pod's first request, from a
        per-view cache of option ranks."""
        best: tuple[float, ...] | None = None
        for vid in node.distinct:
            if vid in ranks:
                rank = ranks[vid]
            else:
                rank = ranks[vid] = self._rank_one(vid, pod)
            if rank is not None and (best is None or rank < best):
                best = rank
        if best is None:
            return None
        return _node_score(best, node, pod)

    def _rank_one(self, vid: int, pod: PendingPod) -> tuple[float, ...] | None:
        view = self.opts.views[vid]
        key = ((view.tid,), pod.filter_key)
        eligible = self._eligible.get(key)
        if eligible is None:
            eligible = self._eligible[key] = (_type_passes(self.opts.types[view.tid], pod),)
        if not eligible[0]:
            return None
        _, _, req = pod.containers[0]
        option = self.opts.best(vid, req, pod.allow_mig, pod.allow_hami, pod.spread_gpu)
        return None if option is None else option.rank

    def _commit(self, node: _Node, pod: PendingPod, choice: _Choice) -> Assignment:
        per_container: list[list[Device]] = [[] for _ in pod.containers]
        for ci, pos, option in choice.steps:
            gpu = node.gpus[pos]
            per_container[ci].append(self._take(gpu, pod.key, option))
        node.refresh(self.opts)
        containers = tuple(
            ContainerAssignment(name, tuple(devices))
            for (name, _, _), devices in zip(pod.containers, per_container, strict=True)
        )
        return Assignment(pod.key, node.name, containers)

    def _take(self, gpu: _Gpu, pod: str, option: Option) -> Device:
        state = gpu.state
        t = self.opts.type_of(gpu.vid)
        view = self.opts.views[gpu.vid]
        self._move(gpu, self.opts.apply(gpu.vid, option))
        if option.kind == KIND_SHARE:
            return Device(
                node=state.node,
                gpu_index=state.index,
                gpu_uuid=state.uuid,
                mode="hami-core",
                profile=None,
                placement=None,
                memory_mib=option.share_mem,
                cores=option.share_cores,
            )
        inst = option.inst
        assert inst is not None
        placed = t.placed(inst, gpu.names)
        gpu.reservations.append((placed, pod))
        if option.kind == KIND_NEW:
            gpu.changed = True
            gpu.names[inst] = placed.profile
            if not view.mig_enabled:
                gpu.switched = True
        profile = t.table.profiles[inst[2]]
        return Device(
            node=state.node,
            gpu_index=state.index,
            gpu_uuid=state.uuid,
            mode="mig",
            profile=placed.profile,
            placement=placed.placement,
            memory_mib=profile.memory_mib,
            cores=t.instance_cores(inst[2]),
            instance_uuid=gpu.uuids.get(inst) if option.kind == KIND_EXISTING else None,
            new_instance=option.kind == KIND_NEW,
        )

    def _write_layouts(self) -> None:
        for node in self.nodes:
            for gpu in node.gpus:
                key = gpu.state.key
                if gpu.changed:
                    view = self.opts.views[gpu.vid]
                    t = self.opts.types[view.tid]
                    self.result.layouts[key] = tuple(
                        sorted(
                            (t.placed(i, gpu.names) for i in (*view.busy, *view.idle)),
                            key=lambda p: (p.placement, p.profile),
                        )
                    )
                if gpu.switched:
                    self.result.mig_enabled[key] = True
                if gpu.reservations:
                    self.result.reservations[key] = tuple(gpu.reservations)

    # ------------------------------------------------------------------ reservations

    def _reuse_reservations(
        self, pods: Sequence[PendingPod]
    ) -> tuple[dict[str, Assignment], set[tuple[GpuKey, Placement]]]:
        """Pending pods that an earlier plan already served keep their devices.

        A pod whose reserved devices (instances and shares) sit on one node and serve all
        its containers is assigned them again (`reused=True`). Otherwise its reservations
        are released, and it is planned afresh with the others.
        """
        by_pod: dict[str, list[ReservedItem]] = {}
        wanted = {p.key for p in pods}
        for gpu in self.snapshot.gpus():
            for inst in gpu.instances:
                if inst.reserved_by in wanted:
                    by_pod.setdefault(inst.reserved_by, []).append(ReservedItem(gpu, inst, None))
            scaled = int(gpu.memory_mib * self.config.nvidia.device_memory_scaling)
            for share in gpu.shares:
                if share.pod in wanted:
                    item = ReservedItem(gpu, None, share, share_total=scaled)
                    by_pod.setdefault(share.pod, []).append(item)
        reused: dict[str, Assignment] = {}
        released: set[tuple[GpuKey, Placement]] = set()
        for pod in pods:
            items = by_pod.get(pod.key)
            if not items:
                continue
            assignment = match_reservations(pod, items)
            if assignment is not None:
                reused[pod.key] = assignment
                continue
            for item in items:
                if item.instance is not None:
                    released.add((item.gpu.key, item.instance.placement))
        return reused, released

    # ------------------------------------------------------------------ reasons, holds

    def _move(self, gpu: _Gpu, vid: int) -> None:
        """Give a GPU a new view, keeping the per-view membership up to date."""
        key = gpu.state.key
        members = self._members[gpu.vid]
        del members[key]
        if not members:
            del self._members[gpu.vid]
        self._members.setdefault(vid, {})[key] = gpu.state
        gpu.vid = vid
        self._changes += 1

    def _explain(self, pod: PendingPod) -> tuple[str, str]:
        """The pod's (code, reason), cached while nothing changed (pods of one demand in a
        row get the same)."""
        uuids = (pod.use_uuid, pod.nouse_uuid) if pod.has_uuid_filter else None
        key = (pod.demand_key, uuids, self._changes)
        found = self._reasons.get(key)
        if found is None:
            refused = self._refused(pod)
            if refused and all(n.name in refused or not n.gpus for n in self.nodes):
                found = (CODE_FILTERED, f"no node can take the pod: {node_refusals(refused)}")
            else:
                groups = [
                    (vid, gpus)
                    for vid, members in sorted(self._members.items())
                    if (
                        gpus := [g for g in members.values() if g.node not in refused]
                        if refused
                        else list(members.values())
                    )
                ]
                code, reason = explain(
                    self.opts, pod, groups, lambda: self._best_offer(pod), self.result.held
                )
                if refused:
                    reason += f"; other nodes excluded: {node_refusals(refused)}"
                found = (code, reason)
            self._reasons[key] = found
        return found

    def _best_offer(self, pod: PendingPod) -> tuple[str, int] | None:
        """The node that can take the most of the pod's devices, and how many."""
        best: tuple[int, str] | None = None
        seen: dict[tuple[tuple[int, ...], tuple[bool, ...]], int] = {}
        refused = self._refused(pod)
        for node in self.nodes:
            if node.name in refused:
                continue
            eligible = self._eligible_positions(node, pod)
            key = (node.sig, eligible)
            if key not in seen:
                seen[key] = self._count_devices(node.sig, eligible, pod)
            count = seen[key]
            if count and (best is None or (-count, node.name) < (-best[0], best[1])):
                best = (count, node.name)
        return None if best is None else (best[1], best[0])

    def _count_devices(
        self, sig: tuple[int, ...], eligible: tuple[bool, ...], pod: PendingPod
    ) -> int:
        opts = self.opts
        vids = list(sig)
        placed = 0
        for _, count, req in pod.containers:
            shared: set[int] = set()
            for _ in range(count):
                options = [
                    (option.rank, pos, option)
                    for pos, vid in enumerate(vids)
                    if eligible[pos]
                    and (
                        option := opts.best(vid, req, pod.allow_mig, pod.allow_hami, pod.spread_gpu)
                    )
                    and not (option.kind == KIND_SHARE and pos in shared)
                ]
                if not options:
                    break
                _, pos, option = min(options)
                if option.kind == KIND_SHARE:
                    shared.add(pos)
                vids[pos] = opts.apply(vids[pos], option)
                placed += 1
        return placed

    def _hold(self, pod: PendingPod) -> tuple[GpuKey, ...]:
        candidates = []
        refused = self._refused(pod)
        for node in self.nodes:
            if node.name in refused:
                continue
            eligible = self._eligible_positions(node, pod)
            candidates.append(
                (node.name, [(g.vid, ok) for g, ok in zip(node.gpus, eligible, strict=True)])
            )
        chosen = choose_hold(self.opts, candidates, pod)
        if chosen is None:
            return ()
        name, positions = chosen
        node = self.by_name[name]
        keys = []
        for pos in positions:
            gpu = node.gpus[pos]
            self._move(gpu, self.opts.hold(gpu.vid))
            self.result.held[gpu.state.key] = pod.key
            keys.append(gpu.state.key)
        node.refresh(self.opts)
        self._holders += 1
        return tuple(keys)


def _node_score(rank: Sequence[float], node: _Node, pod: PendingPod) -> tuple[float, ...]:
    """A node's score from its devices' summed option ranks and its own fullness.

    By default the GPU packing term (in the rank) comes before the node's: a partly used
    GPU anywhere beats an empty GPU on a fuller node, so empty GPUs stay whole. A pod that
    names a node policy (`hami.io/node-scheduler-policy`) gets the node term first, as in
    HAMi, where the node is chosen before the GPUs.
    """
    pack = node.fullness if pod.spread_node else -node.fullness
    if pod.demand.node_scheduler_policy is None:
        return (*rank, pack)
    return (*rank[:5], pack, *rank[5:])


def _unique_in_order(pods: Iterable[PendingPod]) -> list[PendingPod]:
    ordered = sorted(pods, key=lambda p: p.order_key)
    seen: set[str] = set()
    result = []
    for pod in ordered:
        if pod.key not in seen:
            seen.add(pod.key)
            result.append(pod)
    return result


def _type_passes(t: GpuType, pod: PendingPod) -> bool:
    return pod.allows_mode(t.mode) and pod.allows_gpu_name(t.name_upper)
