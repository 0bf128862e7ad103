"""NodeConfig -> MIG mode of each GPU, and what each NodeConfig's status reports.

For every `dynamic` MigLayout that migweaver manages, the node's operating mode (the
NodeConfig in force, `core.nodeconfig.settings_for`) decides `spec.migEnabled`:

- `mig`: MIG on, unless a hami-core share is still allocated or reserved on the GPU (the
  pod on the whole GPU would lose it); the GPU switches when that pod ends.
- `hami-core`: MIG off and no instances, only when no instance of the GPU is in use or
  reserved; otherwise the GPU keeps MIG until they are all free, and the NodeConfig says
  which GPUs wait and for whom.

`static` layouts are never changed (a person owns them); filtered GPUs are left alone.

Each NodeConfig's status lists the nodes it is in force on (`matchedNodes`) and one
condition `Ready`: True once every GPU of those nodes has the mode in its spec and in its
status; False with reason `GpusBusy` (a switch waits for pods), `Switching` (the agent is
applying it) or `Conflict` (another NodeConfig wins on some node it selects). A NodeConfig
that does not parse gets no status (the CRD's schema and CEL rule keep them out of the API).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from migweaver.core.operator.state import ClusterState, snapshot_parts
from migweaver.core.resources.api import metadata_of
from migweaver.core.resources.models import (
    Condition,
    MigLayout,
    NodeConfig,
    NodeConfigStatus,
    find_condition,
    set_condition,
)

__all__ = [
    "ModeChange",
    "NodeConfigReport",
    "mode_changes",
    "nodeconfig_reports",
    "status_patch",
]


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A merge patch of one MigLayout's `spec.migEnabled` (and instances when turning off)."""

    name: str
    node: str
    gpu_index: int
    mig_enabled: bool
    patch: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeConfigReport:
    """What a NodeConfig's status says."""

    name: str
    matched_nodes: tuple[str, ...]
    ready: bool
    reason: str
    message: str
    waiting: tuple[str, ...] = field(default=())
    """GPUs that cannot switch yet, each with why."""


@dataclass(frozen=True, slots=True)
class _Holders:
    """Who holds something on one GPU, each described for a NodeConfig's status."""

    instances: tuple[str, ...] = ()
    """MIG instances reserved or allocated for pods, or in use: block turning MIG off."""
    shares: tuple[str, ...] = ()
    """hami-core shares of reserved or allocated pods: block turning MIG on."""


def _holders(state: ClusterState) -> dict[tuple[str, int], _Holders]:
    """Per GPU, who holds something on it: reserved or allocated pods, in-use instances."""
    reservations, shares = snapshot_parts(state)
    instances: dict[tuple[str, int], set[str]] = {}
    for gpu, per in reservations.items():
        for inst, pod in per.items():
            instances.setdefault(gpu, set()).add(f"{inst} reserved for {pod}")
    for layout in state.layouts.values():
        gpu = (layout.spec.node_name, layout.spec.gpu_index)
        for found in layout.status.instances if layout.status else []:
            if found.in_use or found.pod:
                who = found.pod or "a process"
                where = f"{found.placement.start}:{found.placement.size}"
                instances.setdefault(gpu, set()).add(f"{found.profile}@{where} used by {who}")
    return {
        gpu: _Holders(
            tuple(sorted(instances.get(gpu, ()))),
            tuple(sorted({f"a hami-core share of {share.pod}" for share in shares.get(gpu, ())})),
        )
        for gpu in set(instances) | set(shares)
    }


def mode_changes(state: ClusterState) -> tuple[list[ModeChange], dict[tuple[str, int], str]]:
    """The `migEnabled` patches to make now, and the GPUs that must wait (GPU -> why)."""
    holders = _holders(state)
    changes: list[ModeChange] = []
    waiting: dict[tuple[str, int], str] = {}
    for name, layout in sorted(state.layouts.items()):
        spec = layout.spec
        if spec.policy != "dynamic" or not state.manages(layout):
            continue
        want = state.mode(spec.node_name) == "mig"
        gpu = (spec.node_name, spec.gpu_index)
        if spec.mig_enabled == want:
            continue
        held = holders.get(gpu, _Holders())
        blocking = held.shares if want else held.instances
        if blocking:
            waiting[gpu] = "; ".join(blocking)
            continue
        rv = metadata_of(state.layout_bodies.get(name, {})).get("resourceVersion")
        patch_spec: dict[str, Any] = {"migEnabled": want}
        if not want:
            patch_spec["instances"] = []
        changes.append(
            ModeChange(
                name,
                spec.node_name,
                spec.gpu_index,
                want,
                {"metadata": {"resourceVersion": rv}, "spec": patch_spec},
            )
        )
    return changes, waiting


def _in_mode(layout: MigLayout, mig: bool) -> bool:
    status = layout.status
    current = status.mig_mode.current if status and status.mig_mode else None
    return layout.spec.mig_enabled == mig and current == ("Enabled" if mig else "Disabled")


def nodeconfig_reports(
    state: ClusterState, waiting: Mapping[tuple[str, int], str]
) -> list[NodeConfigReport]:
    """The status of every NodeConfig that parses (`state.configs`)."""
    reports: list[NodeConfigReport] = []
    for config in sorted(state.configs, key=lambda c: c.name):
        name = config.name
        matched = tuple(n for n, s in sorted(state.settings.items()) if s.source == name)
        lost = sorted(
            n
            for n, s in state.settings.items()
            if n not in matched
            and config.spec.applies_to(n, state.node_labels.get(n, {}))
            and s.source is not None
        )
        mig = config.spec.operating_mode == "mig"
        gpus = [
            layout
            for layout in state.layouts.values()
            if layout.spec.node_name in matched
            and layout.spec.policy == "dynamic"
            and state.manages(layout)
        ]
        blocked = sorted(
            f"{node}/gpu{index}: {why}" for (node, index), why in waiting.items() if node in matched
        )
        switching = sorted(
            f"{g.spec.node_name}/gpu{g.spec.gpu_index}" for g in gpus if not _in_mode(g, mig)
        )
        mode = config.spec.operating_mode
        if blocked:
            reason = "GpusBusy"
            message = f"{len(blocked)} GPU(s) wait to switch to {mode}: " + "; ".join(blocked)
        elif lost:
            winners = sorted({str(state.settings[n].source) for n in lost})
            reason = "Conflict"
            message = (
                f"NodeConfig {', '.join(winners)} is in force on {', '.join(lost)} "
                "(a nodeName config beats a nodeSelector one, then the oldest)"
            )
        elif switching:
            reason = "Switching"
            message = f"switching to {mode}: {', '.join(switching)}"
        else:
            reason = "Applied"
            count = len(gpus)
            message = f"{mode} on {len(matched)} node(s), {count} GPU(s)"
        reports.append(
            NodeConfigReport(name, matched, reason == "Applied", reason, message, tuple(blocked))
        )
    return reports


def status_patch(
    body: Mapping[str, Any], report: NodeConfigReport, now: str
) -> dict[str, Any] | None:
    """The `/status` merge patch for a NodeConfig, or None when its status already says it."""
    try:
        current = NodeConfig.from_api(body).status or NodeConfigStatus()
    except ValueError:
        current = NodeConfigStatus()
    condition = Condition(
        type="Ready",
        status="True" if report.ready else "False",
        reason=report.reason,
        message=report.message,
        observed_generation=metadata_of(body).get("generation"),
    )
    old = find_condition(current.conditions, "Ready")
    unchanged = (
        old is not None
        and (old.status, old.reason, old.message, old.observed_generation)
        == (condition.status, condition.reason, condition.message, condition.observed_generation)
        and current.matched_nodes == list(report.matched_nodes)
    )
    if unchanged:
        return None
    status = NodeConfigStatus(
        observed_generation=metadata_of(body).get("generation"),
        matched_nodes=list(report.matched_nodes),
        conditions=set_condition(current.conditions, condition, now),
    )
    return {"status": status.to_api()}
