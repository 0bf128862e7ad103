"""A plan as a person reads it (`migweaver plan`): tables of placements, layout changes
and reasons; or as JSON. Pure formatting, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.planning.cluster_file import PodsFile
from migweaver.core.planning.plan import Assignment, Device, Plan, plan_to_json
from migweaver.core.planning.snapshot import GpuKey, GpuState, InstanceState, Snapshot

__all__ = ["render_json", "render_text"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _device_text(device: Device) -> str:
    if device.profile is None:
        return "hami-core share"
    state = "new" if device.new_instance else "existing"
    return f"{device.profile}@{device.placement} ({state})"


def _placement_rows(plan: Plan) -> list[list[str]]:
    rows = []
    for key, result in plan.pods.items():
        if not isinstance(result, Assignment):
            continue
        first = True
        for container in result.containers:
            for device in container.devices:
                rows.append(
                    [
                        key if first else "",
                        (result.node or "-") if first else "",
                        container.name,
                        f"gpu{device.gpu_index}",
                        _device_text(device),
                        str(device.memory_mib),
                        str(device.cores),
                    ]
                )
                first = False
        if first:  # a pod without devices
            rows.append([key, "-", "-", "-", "nothing to place", "-", "-"])
    return rows


def _instance_text(inst: InstanceState) -> str:
    holder = inst.reserved_by or ("in use" if inst.in_use else "")
    return f"{inst.placed}" + (f" ({holder})" if holder else "")


def _after_text(placed: PlacedInstance, gpu: GpuState, reserved: dict[PlacedInstance, str]) -> str:
    existing = next(
        (
            i
            for i in gpu.instances
            if i.placement == placed.placement and i.profile == placed.profile
        ),
        None,
    )
    if existing is not None and existing.busy:
        return _instance_text(existing)
    pod = reserved.get(placed)
    new = existing is None
    if pod is not None:
        return f"{placed} ({'new, ' if new else ''}{pod})"
    return f"{placed}{' (new)' if new else ''}"


def _layout_rows(snapshot: Snapshot, plan: Plan) -> list[list[str]]:
    gpus = {gpu.key: gpu for gpu in snapshot.gpus()}
    rows = []
    for key in sorted(set(plan.layouts) | set(plan.mig_enabled)):
        gpu = gpus[key]
        before = ", ".join(_instance_text(i) for i in gpu.instances) or "-"
        if not gpu.mig_enabled:
            before = "MIG off" if before == "-" else f"MIG off; {before}"
        reserved = dict(plan.reservations.get(key, ()))
        after = ", ".join(_after_text(p, gpu, reserved) for p in plan.layouts.get(key, ())) or "-"
        rows.append([gpu.label, gpu.model or gpu.name, before, after])
    return rows


def render_text(snapshot: Snapshot, plan: Plan, pods: PodsFile) -> str:
    """The plan as tables: placed pods, layout changes, pods that wait, invalid pods."""
    lines: list[str] = []
    placed = _placement_rows(plan)
    count = len(plan.assignments)
    lines.append(f"PLACED: {count} pod{'s' * (count != 1)}")
    if placed:
        headers = ["POD", "NODE", "CONTAINER", "GPU", "DEVICE", "MiB", "CORES%"]
        lines += _table(headers, placed)
    layouts = _layout_rows(snapshot, plan)
    lines += ["", f"LAYOUT CHANGES: {len(layouts)} GPU{'s' * (len(layouts) != 1)}"]
    if layouts:
        lines += _table(["GPU", "MODEL", "BEFORE", "AFTER"], layouts)
    waiting = plan.unplaceable
    lines += ["", f"UNPLACEABLE: {len(waiting)} pod{'s' * (len(waiting) != 1)}"]
    lines += [f"{key}: {result.reason}" for key, result in waiting.items()]
    if pods.invalid:
        lines += ["", f"INVALID: {len(pods.invalid)} pod{'s' * (len(pods.invalid) != 1)}"]
        lines += [f"{bad.pod}: {bad.message}" for bad in pods.invalid]
    if pods.no_gpu:
        lines += ["", f"SKIPPED (no GPU asked): {', '.join(pods.no_gpu)}"]
    return "\n".join(lines)


def render_json(snapshot: Snapshot, plan: Plan, pods: PodsFile) -> dict[str, Any]:
    """The plan as JSON data, with each changed GPU's instances before the plan."""
    before: dict[GpuKey, tuple[PlacedInstance, ...]] = {
        gpu.key: tuple(i.placed for i in gpu.instances) for gpu in snapshot.gpus()
    }
    data = plan_to_json(plan, before)
    data["invalid"] = {
        bad.pod: [{"field": e.field, "value": e.value, "reason": e.reason} for e in bad.errors]
        for bad in pods.invalid
    }
    data["skipped"] = list(pods.no_gpu)
    return data
