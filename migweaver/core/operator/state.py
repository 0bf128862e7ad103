"""What the operator knows, rebuilt from API objects alone, and the planner's snapshot of it.

The operator is stateless (docs/design.md, "Safety rules"): every round it reads the MigLayouts, the
NodeConfigs, the Nodes and the pods that concern it, and `cluster_state` turns those raw
API dicts into a `ClusterState`:

- per node the NodeConfig settings in force (mode, filtered GPUs), the node's labels, and
  whether it takes new pods (cordoned, Ready, taints: `node_fit.NodeFacts`);
- the MigLayouts that parse (the others are listed with the reason);
- the pods waiting behind the `migweaver.io/placement` gate, parsed into demands (or the
  reasons they cannot be honoured), with the reservation a previous plan recorded on them;
- the allocations of released pods that still hold their devices.

`build_snapshot` gives the planner its `Snapshot`: every managed GPU on nodes that carry
their Node facts (so the planner skips nodes kube-scheduler would refuse), an instance reserved
for a waiting pod or allocated to a released one marked busy (so the planner never moves
or reassigns it), hami-core shares from the same two sources.

Pure: no I/O, no clock (`now` is passed in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement, normalize_profile_name
from migweaver.core.operator.metric_rows import short_error
from migweaver.core.operator.pod_reservation import (
    PodReservation,
    pod_reservation,
    reservation_problem,
)
from migweaver.core.planning.snapshot import GpuKey, Share, Snapshot, snapshot_from_layouts
from migweaver.core.resources.allocation import (
    BIND_FAILED,
    Allocation,
    bound_allocation,
    pod_is_terminal,
    pod_key,
)
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_RESERVATION,
    HOSTNAME_LABEL,
    PLACEMENT_GATE,
    annotations_of,
    metadata_of,
)
from migweaver.core.resources.bodies import MigLayoutBody, NodeBody, NodeConfigBody, PodBody
from migweaver.core.resources.models import MigLayout, NodeConfig, OperatingMode, layout_name
from migweaver.core.resources.node_fit import NodeFacts, node_facts
from migweaver.core.resources.nodeconfig import NodeSettings, settings_for
from migweaver.core.resources.requests import (
    DEFAULTS,
    InvalidRequest,
    PodDemand,
    RequestDefaults,
    parse_pod,
)

__all__ = [
    "allocated_rows",
    "ClusterState",
    "ParseMemo",
    "WaitingPod",
    "build_snapshot",
    "cluster_state",
    "concerns_operator",
    "gate_names",
    "has_placement_gate",
    "instance_owners",
    "is_deleting",
    "pod_trigger",
    "snapshot_parts",
    "wants_plan",
]


_T = TypeVar("_T")
_B = TypeVar("_B", bound=Mapping[str, Any])


def gate_names(pod: PodBody) -> list[str]:
    """The names of the pod's scheduling gates, in order."""
    spec = pod.get("spec")
    gates = spec.get("schedulingGates") if isinstance(spec, Mapping) else None
    if not isinstance(gates, list):
        return []
    return [str(g.get("name")) for g in gates if isinstance(g, Mapping)]


def has_placement_gate(pod: PodBody) -> bool:
    return PLACEMENT_GATE in gate_names(pod)


def is_deleting(obj: PodBody | MigLayoutBody) -> bool:
    return bool(metadata_of(obj).get("deletionTimestamp"))


def concerns_operator(pod: PodBody) -> bool:
    """Whether the operator must look at this pod: gated by migweaver, or holding (or
    having held) migweaver devices. Used to filter the pod watch."""
    annotations = annotations_of(pod)
    return (
        has_placement_gate(pod)
        or ANNOTATION_RESERVATION in annotations
        or ANNOTATION_ALLOCATION in annotations
    )


@dataclass(frozen=True, slots=True)
class WaitingPod:
    """A pod behind the placement gate: its demand (or why it is invalid) and reservation."""

    key: str
    body: PodBody
    demand: PodDemand | InvalidRequest
    reservation: PodReservation | None


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything the operator decides from, rebuilt from the API every round."""

    layouts: dict[str, MigLayout] = field(default_factory=dict)
    """Parsed MigLayouts by name."""
    layout_bodies: dict[str, MigLayoutBody] = field(default_factory=dict)
    """The same layouts as the API returned them (for resourceVersion and generation)."""
    invalid_layouts: dict[str, str] = field(default_factory=dict)
    """MigLayouts that do not parse: name -> the first problem (`spec.gpuIndex: ...`)."""
    settings: dict[str, NodeSettings] = field(default_factory=dict)
    """NodeConfig settings in force, per node (every node with a Node object or a layout)."""
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    node_facts: dict[str, NodeFacts] = field(default_factory=dict)
    """Per Node object: cordoned, Ready, taints (and labels), as the planner judges nodes."""
    configs: tuple[NodeConfig, ...] = ()
    config_bodies: dict[str, NodeConfigBody] = field(default_factory=dict)
    """The NodeConfigs as the API returned them, by name."""
    invalid_configs: dict[str, str] = field(default_factory=dict)
    waiting: tuple[WaitingPod, ...] = ()
    """Gated pods that are not being deleted, in name order."""
    allocations: dict[str, Allocation] = field(default_factory=dict)
    """Released pods that still hold their devices (not ended, bind-phase not failed)."""
    released_bodies: dict[str, PodBody] = field(default_factory=dict)
    """The same pods as the API returned them (`vanished`: a Node deleted under them)."""
    by_gpu: dict[GpuKey, str] = field(default_factory=dict)
    """(node, GPU index) -> MigLayout name (the first by name if two claim one GPU)."""
    ignored_reservations: dict[str, str] = field(default_factory=dict)
    """Waiting pods whose reservation annotation was dropped (pod -> why): it does not fit
    the pod's demand, or names an instance another waiting pod's reservation names too.
    The pod is planned afresh; such a reservation is never released."""

    def layout_at(self, node: str, gpu_index: int) -> tuple[str, MigLayout] | None:
        name = self.by_gpu.get((node, gpu_index))
        return None if name is None else (name, self.layouts[name])

    def mode(self, node: str) -> OperatingMode:
        found = self.settings.get(node)
        return found.mode if found is not None else "hami-core"

    def manages(self, layout: MigLayout) -> bool:
        """False for a GPU its node's NodeConfig lists in `filterDevices`."""
        found = self.settings.get(layout.spec.node_name)
        return found is None or found.manages(layout.spec.gpu_index, layout.spec.gpu_uuid)

    @property
    def reservations(self) -> dict[str, PodReservation]:
        return {w.key: w.reservation for w in self.waiting if w.reservation is not None}

    @property
    def demands(self) -> list[PodDemand]:
        """The waiting pods that parse, as the planner takes them."""
        return [w.demand for w in self.waiting if isinstance(w.demand, PodDemand)]

    @property
    def without_node(self) -> dict[str, str]:
        """MigLayouts whose Node object does not exist (name -> node): never planned on."""
        return {
            name: layout.spec.node_name
            for name, layout in sorted(self.layouts.items())
            if layout.spec.node_name not in self.node_facts
        }

    def hostname(self, node: str) -> str:
        """The node's `kubernetes.io/hostname` label (the node name when unknown)."""
        return self.node_labels.get(node, {}).get(HOSTNAME_LABEL) or node


class ParseMemo:
    """Parsed objects by (kind, name, uid, resourceVersion), kept from one round to the next.

    Parsing every MigLayout with pydantic every round was most of a round's CPU time on a
    large fleet; an object whose resourceVersion did not change parses to the same model,
    so it is parsed once. Entries not seen in the latest round are forgotten (`sweep`).
    Objects without a resourceVersion (made by hand) are always parsed."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str, str], Any] = {}
        self._seen: dict[tuple[str, str, str, str], Any] = {}

    def parse(
        self, kind: str, body: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], _T]
    ) -> _T:
        meta = metadata_of(body)
        version = meta.get("resourceVersion")
        if not version:
            return parse(body)
        key = (kind, str(meta.get("name", "")), str(meta.get("uid", "")), str(version))
        found = self._seen.get(key)
        if found is None:
            found = self._entries.get(key)
            if found is None:
                found = parse(body)
            self._seen[key] = found
        return cast(_T, found)

    def sweep(self) -> None:
        """End of a round: keep only what it saw."""
        self._entries, self._seen = self._seen, {}

    def __len__(self) -> int:
        return len(self._entries) + len(self._seen)


def _parse_each(
    objects: Iterable[_B],
    parse: Callable[[Mapping[str, Any]], _T],
    memo: ParseMemo | None = None,
    kind: str = "",
) -> tuple[dict[str, _T], dict[str, _B], dict[str, str]]:
    """(parsed by name, the same objects as the API returned them, invalid name -> why)."""
    parsed: dict[str, _T] = {}
    bodies: dict[str, _B] = {}
    invalid: dict[str, str] = {}
    for body in objects:
        name = str(metadata_of(body).get("name") or "")
        try:
            parsed[name] = parse(body) if memo is None else memo.parse(kind, body, parse)
            bodies[name] = body
        except ValidationError as exc:
            invalid[name] = short_error(exc)
    return parsed, bodies, invalid


def cluster_state(
    *,
    pods: Iterable[PodBody],
    layouts: Iterable[MigLayoutBody],
    nodeconfigs: Iterable[NodeConfigBody],
    nodes: Iterable[NodeBody],
    defaults: RequestDefaults = DEFAULTS,
    memo: ParseMemo | None = None,
) -> ClusterState:
    """The operator's state from raw API objects (as lists return them); `memo` spares
    parsing again what an earlier round parsed (the caller sweeps it after each round)."""
    parsed, bodies, invalid = _parse_each(layouts, MigLayout.from_api, memo, "MigLayout")
    by_name, config_bodies, invalid_configs = _parse_each(
        nodeconfigs, NodeConfig.from_api, memo, "NodeConfig"
    )
    configs = tuple(by_name.values())
    facts = {f.name: f for f in (node_facts(n) for n in nodes)}
    labels = {name: dict(f.labels) for name, f in facts.items()}
    node_names = set(labels) | {layout.spec.node_name for layout in parsed.values()}
    settings = {n: settings_for(n, labels.get(n, {}), configs) for n in sorted(node_names)}

    waiting: list[WaitingPod] = []
    allocations: dict[str, Allocation] = {}
    released: dict[str, PodBody] = {}
    ignored: dict[str, str] = {}
    for pod in sorted(pods, key=pod_key):
        key = pod_key(pod)
        if has_placement_gate(pod):
            if is_deleting(pod) or pod_is_terminal(pod):
                continue
            demand = parse_pod(pod, defaults)
            reservation = pod_reservation(pod)
            if reservation is not None:
                problem = (
                    reservation_problem(demand, reservation)
                    if isinstance(demand, PodDemand)
                    else "the pod's request is invalid"
                )
                if problem is not None:
                    ignored[key] = problem
                    reservation = None
            waiting.append(WaitingPod(key, pod, demand, reservation))
            continue
        if pod_is_terminal(pod) or annotations_of(pod).get(ANNOTATION_BIND_PHASE) == BIND_FAILED:
            continue
        # Only an allocation written for this pod, which asks for a GPU, holds anything.
        allocation = bound_allocation(pod)
        if isinstance(allocation, Allocation):
            allocations[key] = allocation
            released[key] = pod
    waiting = _drop_contested(waiting, ignored)
    by_gpu: dict[GpuKey, str] = {}
    # The MigLayout named for its GPU (`<node>-gpu<index>`, the one its agent applies)
    # first: another that claims the GPU is the agent's conflict, never planned on.
    for name in sorted(parsed, key=lambda n: (n != _own_name(parsed[n]), n)):
        spec = parsed[name].spec
        by_gpu.setdefault((spec.node_name, spec.gpu_index), name)
    return ClusterState(
        by_gpu=by_gpu,
        layouts=parsed,
        layout_bodies=bodies,
        invalid_layouts=invalid,
        settings=settings,
        node_labels=labels,
        node_facts=facts,
        configs=configs,
        config_bodies=config_bodies,
        invalid_configs=invalid_configs,
        waiting=tuple(waiting),
        allocations=allocations,
        released_bodies=released,
        ignored_reservations=ignored,
    )


def _own_name(layout: MigLayout) -> str:
    return layout_name(layout.spec.node_name, layout.spec.gpu_index)


def _drop_contested(waiting: list[WaitingPod], ignored: dict[str, str]) -> list[WaitingPod]:
    """Drop the reservations of waiting pods that name one MIG instance between them.

    A plan never reserves one instance for two pods, so a second claim comes from a
    forged annotation (or a hand-over gone wrong): neither pod is released with it, both
    are planned afresh, and no pod order (names are the tenant's choice) decides who wins.
    """
    claims: dict[tuple[str, int, str, int, int], list[str]] = {}
    for pod in waiting:
        if pod.reservation is None:
            continue
        for d in pod.reservation.devices:
            if d.mode == "mig" and d.placement is not None:
                where = (pod.reservation.node, d.gpu_index, d.gpu_uuid)
                claim = (*where, d.placement.start, d.placement.size)
                claims.setdefault(claim, []).append(pod.key)
    contested: dict[str, str] = {}
    for (node, index, _, start, size), pods in claims.items():
        owners = sorted(set(pods))
        if len(owners) > 1:
            for key in owners:
                others = ", ".join(k for k in owners if k != key)
                contested.setdefault(
                    key, f"names the instance at {start}:{size} of {node}/gpu{index}, as {others}"
                )
    if not contested:
        return waiting
    ignored.update(contested)
    return [WaitingPod(w.key, w.body, w.demand, None) if w.key in contested else w for w in waiting]


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class _Held:
    """A device held by a pod (reserved or allocated), as the snapshot needs it."""

    pod: str
    gpu: GpuKey
    gpu_uuid: str
    mode: str
    profile: str | None
    placement: Placement | None
    memory_mib: int
    cores: int


def _held_devices(state: ClusterState) -> list[_Held]:
    """Allocated devices first, then reserved ones: when two pods name one instance (a
    hand-over between replicas), the pod that already has it keeps it."""
    held: list[_Held] = []
    sources: list[tuple[str, str, Any]] = [
        (pod, allocation.node, allocation.devices) for pod, allocation in state.allocations.items()
    ]
    sources += [
        (pod, reservation.node, reservation.devices)
        for pod, reservation in state.reservations.items()
    ]
    for pod, node, devices in sources:
        for d in devices:
            held.append(
                _Held(
                    pod,
                    (node, d.gpu_index),
                    d.gpu_uuid,
                    d.mode,
                    d.profile,
                    d.placement.to_placement() if d.placement else None,
                    d.memory_mib,
                    d.cores,
                )
            )
    return held


def _spec_name(layout: MigLayout, profile: str, placement: Placement) -> str | None:
    """The spec's spelling of `profile` at `placement`, or None when the spec lacks it."""
    wanted = normalize_profile_name(profile)
    for inst in layout.spec.instances:
        if (
            inst.placement.to_placement() == placement
            and normalize_profile_name(inst.profile) == wanted
        ):
            return inst.profile
    return None


def snapshot_parts(
    state: ClusterState,
) -> tuple[dict[GpuKey, dict[PlacedInstance, str]], dict[GpuKey, list[Share]]]:
    """Per GPU: the instances reserved or allocated (instance -> pod) and the shares."""
    reservations: dict[GpuKey, dict[PlacedInstance, str]] = {}
    shares: dict[GpuKey, list[Share]] = {}
    for device in _held_devices(state):
        found = state.layout_at(*device.gpu)
        if found is None or found[1].spec.gpu_uuid != device.gpu_uuid:
            continue  # the GPU is gone or is another GPU now: nothing to protect there
        layout = found[1]
        if device.mode == "hami-core":
            shares.setdefault(device.gpu, []).append(
                Share(device.pod, device.memory_mib, device.cores)
            )
            continue
        if device.profile is None or device.placement is None:
            continue
        name = _spec_name(layout, device.profile, device.placement)
        if name is not None:
            per_gpu = reservations.setdefault(device.gpu, {})
            per_gpu.setdefault(PlacedInstance(name, device.placement), device.pod)
    return reservations, shares


def instance_owners(state: ClusterState) -> dict[tuple[str, int, Placement], str]:
    """(node, GPU index, placement) -> the pod an instance belongs to (allocated first)."""
    reservations, _ = snapshot_parts(state)
    return {
        (gpu[0], gpu[1], inst.placement): pod
        for gpu, per_gpu in reservations.items()
        for inst, pod in per_gpu.items()
    }


def build_snapshot(state: ClusterState, now: float) -> Snapshot:
    """The planner's snapshot: managed GPUs of Nodes that exist only (a layout left over
    from a deleted Node would send pods to a node that is gone), reserved and allocated
    devices busy."""
    reservations, shares = snapshot_parts(state)
    managed = [
        layout
        for layout in state.layouts.values()
        if state.manages(layout) and layout.spec.node_name in state.node_facts
    ]
    node_modes = {node: settings.mode for node, settings in state.settings.items()}
    return snapshot_from_layouts(
        managed,
        node_modes,
        node_labels=state.node_labels,
        node_facts=state.node_facts,
        reservations=reservations,
        shares={k: tuple(v) for k, v in shares.items()},
        now=now,
    )


def wants_plan(pod: PodBody) -> bool:
    """A pod whose arrival opens (or extends) a batch: gated, not being deleted, and not
    reserved yet. Any other change of a pod the operator watches only asks for a round
    (a release check, or capacity that freed up)."""
    return (
        has_placement_gate(pod)
        and not is_deleting(pod)
        and ANNOTATION_RESERVATION not in annotations_of(pod)
    )


def allocated_rows(state: ClusterState) -> list[tuple[str, str, int]]:
    """(node, mode, MiB) of GPU memory held by released pods, per node and device mode."""
    totals: dict[tuple[str, str], int] = {}
    for allocation in state.allocations.values():
        for device in allocation.devices:
            key = (allocation.node, device.mode)
            totals[key] = totals.get(key, 0) + device.memory_mib
    return [(node, mode, mib) for (node, mode), mib in sorted(totals.items())]


def pod_trigger(event_type: str | None, pod: PodBody) -> str | None:
    """What a watch event of a pod asks of the operator.

    - `"plan"`: a gated pod without a reservation (new, or changed): it opens a batch;
    - `"round"`: a pod that may free capacity (deleted, being deleted, ended, refused by
      the kubelet) or that is reserved (its release is checked);
    - None: nothing (a running pod's routine status updates).
    `event_type` is the watch's (`ADDED`, `MODIFIED`, `DELETED`), None for a listing.
    """
    if event_type == "DELETED":
        return "round" if concerns_operator(pod) else None
    if wants_plan(pod):
        return "plan"
    if has_placement_gate(pod) or event_type is None:
        return "round"
    if is_deleting(pod) or pod_is_terminal(pod):
        return "round"
    if annotations_of(pod).get(ANNOTATION_BIND_PHASE) == BIND_FAILED:
        return "round"
    return None
