"""What the operator's health metrics show, from one round's `ClusterState` (pure).

- `waiting_rows`: GPU pods behind the placement gate, per reason code, with the longest
  wait. The reason is the code of the pod's `migweaver.io/Placement` condition
  (`MigUnschedulable`, `InvalidRequest`, `MigPlanned`), `InvalidRequest` for a request
  that does not parse, `MigPlanned` for a pod with a reservation whose instances are not
  there yet, and `Batching` for a pod no plan has looked at yet. Every reason is listed,
  0 included, so panels and alerts see a 0 rather than no series.
- `layout_rows`: per MigLayout its phase and whether it converged (the agent reports
  `Ready` for the spec's current generation).
- `share_rows`: per hami-core GPU the containers sharing it and their memory, the facts
  HAMi's scheduler exports as `GPUDeviceSharedNum` / `GPUDeviceMemoryAllocated`.

No label value comes from a pod: reasons are migweaver's own codes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from migweaver.core.operator.pod_condition import current_condition
from migweaver.core.operator.state import ClusterState, WaitingPod
from migweaver.core.resources.api import metadata_of, parse_timestamp
from migweaver.core.resources.models import MigLayout
from migweaver.core.resources.requests import InvalidRequest

__all__ = [
    "LAYOUT_PHASES",
    "WAITING_REASONS",
    "LayoutRow",
    "ShareRow",
    "WaitingRow",
    "layout_rows",
    "share_rows",
    "waiting_reason",
    "waiting_rows",
]

WAITING_REASONS: Final = ("Batching", "MigPlanned", "MigUnschedulable", "InvalidRequest")
LAYOUT_PHASES: Final = ("Unknown", "Pending", "Applying", "Ready", "Degraded", "Failed")
"""A layout's phase; `Unknown` until its agent has reported a status."""


@dataclass(frozen=True, slots=True)
class WaitingRow:
    reason: str
    pods: int
    longest_s: float
    """The longest wait among them, from the pod's creation (0 when none waits)."""


@dataclass(frozen=True, slots=True)
class LayoutRow:
    node: str
    gpu: int
    layout: str
    phase: str
    converged: bool


@dataclass(frozen=True, slots=True)
class ShareRow:
    node: str
    gpu_index: int
    gpu_uuid: str
    containers: int
    memory_mib: int
    total_mib: int | None
    """The GPU's memory as its agent reports it; None before the first report."""


def waiting_reason(pod: WaitingPod) -> str:
    """The reason code a waiting pod is counted under (see the module docstring)."""
    if isinstance(pod.demand, InvalidRequest):
        return "InvalidRequest"
    condition = current_condition(pod.body)
    reason = condition.get("reason") if condition is not None else None
    if reason in {"MigUnschedulable", "InvalidRequest"}:
        return str(reason)
    if pod.reservation is not None or reason == "MigPlanned":
        return "MigPlanned"
    return "Batching"


def _created(body: Mapping[str, Any]) -> float:
    stamp = metadata_of(body).get("creationTimestamp")
    return parse_timestamp(stamp if isinstance(stamp, str) else None)


def waiting_rows(state: ClusterState, now: float) -> tuple[WaitingRow, ...]:
    """Pods and longest wait per reason, every reason listed (clock skew counts as 0)."""
    counts = dict.fromkeys(WAITING_REASONS, 0)
    longest = dict.fromkeys(WAITING_REASONS, 0.0)
    for pod in state.waiting:
        reason = waiting_reason(pod)
        counts[reason] += 1
        created = _created(pod.body)
        if math.isfinite(created):
            longest[reason] = max(longest[reason], now - created)
    return tuple(WaitingRow(r, counts[r], longest[r]) for r in WAITING_REASONS)


def _generation(body: Mapping[str, Any] | None) -> int | None:
    value = metadata_of(body).get("generation") if body is not None else None
    return value if isinstance(value, int) else None


def _layout_row(name: str, layout: MigLayout, body: Mapping[str, Any] | None) -> LayoutRow:
    status = layout.status
    phase = status.phase if status is not None and status.phase is not None else "Unknown"
    generation = _generation(body)
    observed = status.observed_generation if status is not None else None
    # Without a generation (an API that sets none) the phase alone says it.
    current = generation is None or observed == generation
    return LayoutRow(
        node=layout.spec.node_name,
        gpu=layout.spec.gpu_index,
        layout=name,
        phase=phase,
        converged=phase == "Ready" and current,
    )


def layout_rows(state: ClusterState) -> tuple[LayoutRow, ...]:
    """One row per parsed MigLayout, by (node, GPU)."""
    rows = [
        _layout_row(name, layout, state.layout_bodies.get(name))
        for name, layout in state.layouts.items()
    ]
    return tuple(sorted(rows, key=lambda r: (r.node, r.gpu, r.layout)))


def share_rows(state: ClusterState) -> tuple[ShareRow, ...]:
    """Per hami-core GPU in use: containers sharing it and the memory they were given.

    A GPU whose layout says hami-core but that no pod uses has a row with 0 containers.
    """
    totals: dict[str, tuple[str, int, int | None]] = {}
    for layout in state.layouts.values():
        status = layout.status
        mode = status.mode if status is not None and status.mode is not None else None
        hami = mode == "hami-core" if mode is not None else not layout.spec.mig_enabled
        if not hami:
            continue
        memory = status.gpu.memory_mib if status is not None and status.gpu else None
        totals[layout.spec.gpu_uuid] = (layout.spec.node_name, layout.spec.gpu_index, memory)
    containers: dict[str, int] = {}
    memory_mib: dict[str, int] = {}
    places: dict[str, tuple[str, int]] = {}
    for allocation in state.allocations.values():
        for device in allocation.devices:
            if device.mode != "hami-core":
                continue
            containers[device.gpu_uuid] = containers.get(device.gpu_uuid, 0) + 1
            memory_mib[device.gpu_uuid] = memory_mib.get(device.gpu_uuid, 0) + device.memory_mib
            places[device.gpu_uuid] = (allocation.node, device.gpu_index)
    rows = []
    for uuid in sorted(totals.keys() | containers.keys()):
        node, index, total = totals.get(uuid, (*places.get(uuid, ("", 0)), None))
        rows.append(
            ShareRow(node, index, uuid, containers.get(uuid, 0), memory_mib.get(uuid, 0), total)
        )
    return tuple(sorted(rows, key=lambda r: (r.node, r.gpu_index, r.gpu_uuid)))
