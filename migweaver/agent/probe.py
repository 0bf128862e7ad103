"""`migweaver probe`: what NVML reports for each GPU of this node, beside the catalog's entry.

Read-only by construction: on real GPUs the backend is given `ReadOnlyNvml`, which refuses
every NVML function outside `READ_ONLY_CALLS` before it reaches the driver, and the probe
itself calls only the backend's read methods. Each question is asked on its own: one
that NVML does not answer is shown as such, and the rest of the report still comes out
(a probe is for bug reports, where the odd answer is the interesting one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from migweaver.agent.backends.nvml import NvmlBackend
from migweaver.agent.backends.nvml_record import ReadOnlyNvml
from migweaver.agent.backends.protocol import (
    GiProfile,
    GpuBackend,
    GpuDevice,
    GpuInstance,
    GpuProcess,
    MigModeState,
    profile_table,
)
from migweaver.core.mig.catalog import GpuModel, match_model
from migweaver.core.mig.catalog_check import CatalogMismatch, catalog_mismatches
from migweaver.core.mig.profiles import MigProfile

__all__ = ["GpuReport", "probe_gpus", "probe_nvml", "render_json", "render_text"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """One question's answer, or why there is none."""

    value: T | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GpuReport:
    """Everything the probe learned about one GPU."""

    device: GpuDevice
    mig_mode: Answer[MigModeState]
    profiles: Answer[list[GiProfile]]
    instances: Answer[list[GpuInstance]]
    processes: Answer[list[GpuProcess]]
    model: GpuModel | None
    mismatches: tuple[CatalogMismatch, ...] = field(default=())


def _ask(question: Callable[[], T]) -> Answer[T]:
    try:
        return Answer(value=question())
    except Exception as exc:  # reported, never fatal: see the module docstring
        return Answer(error=f"{type(exc).__name__}: {exc}")


def probe_gpus(backend: GpuBackend) -> list[GpuReport]:
    """Read every GPU through the backend's read methods only."""
    reports = []
    for device in backend.list_gpus():
        gpu = device.index
        mode: Answer[MigModeState] = (
            _ask(lambda gpu=gpu: backend.get_mig_mode(gpu))  # type: ignore[misc]
            if device.mig_capable
            else Answer(error="not MIG capable (nvmlDeviceGetMigMode: NOT_SUPPORTED)")
        )
        profiles: Answer[list[GiProfile]] = (
            _ask(lambda gpu=gpu: backend.list_profiles(gpu))  # type: ignore[misc]
            if device.mig_capable
            else Answer(value=[])
        )
        mig_on = mode.value is not None and mode.value.current
        instances: Answer[list[GpuInstance]] = (
            _ask(lambda gpu=gpu: backend.list_gpu_instances(gpu))  # type: ignore[misc]
            if mig_on
            else Answer(value=[])
        )
        processes = _ask(lambda gpu=gpu: backend.list_processes(gpu))  # type: ignore[misc]
        model = match_model(device.name, device.pci_device_id)
        mismatches: tuple[CatalogMismatch, ...] = ()
        if model is not None and profiles.value:
            mismatches = catalog_mismatches(profile_table(profiles.value), model.table)
        reports.append(GpuReport(device, mode, profiles, instances, processes, model, mismatches))
    return reports


def probe_nvml(nvml: Any) -> list[GpuReport]:
    """Probe the GPUs of `nvml` (`pynvml`, or a stand-in) through `ReadOnlyNvml`."""
    with NvmlBackend(ReadOnlyNvml(nvml)) as backend:
        return probe_gpus(backend)


# ------------------------------------------------------------------------------- rendering


def _pci(device: GpuDevice) -> str:
    if device.pci_device_id is None:
        return "?"
    value = device.pci_device_id
    return f"0x{value >> 16:04X}" if value > 0xFFFF else f"0x{value:04X}"


def _mode(answer: Answer[MigModeState]) -> str:
    if answer.value is None:
        return f"not answered ({answer.error})"
    state = answer.value
    on = {True: "Enabled", False: "Disabled"}
    return f"current {on[state.current]}, pending {on[state.pending]}"


def _placements(placements: Sequence[Any]) -> str:
    return " ".join(str(p) for p in placements)


def _profile_row(profile: GiProfile, known: MigProfile | None, marks: set[str]) -> list[str]:
    def cell(field: str, ours: object, theirs: object) -> str:
        text = str(ours)
        if known is None:
            return text
        return f"{text} *({theirs})" if field in marks else text

    return [
        str(profile.index),
        str(profile.profile_id),
        cell("name", profile.name, known.name if known else ""),
        cell("slices", profile.slice_count, known.compute_slices if known else ""),
        cell("memory MiB", profile.memory_mib, known.memory_mib if known else ""),
        cell("max count", profile.instance_count, known.max_count if known else ""),
        cell("SMs", profile.sm_count or "-", known.sm_count if known else ""),
        cell(
            "placements",
            _placements(profile.placements),
            _placements(known.placements) if known else "",
        ),
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_text(reports: Sequence[GpuReport]) -> str:
    """The report for a person: NVML's values, `*(catalog value)` where they differ."""
    lines: list[str] = []
    for report in reports:
        device, model = report.device, report.model
        lines.append(f"GPU {device.index}: {device.name}  {device.uuid}")
        catalog = f"{model.key} ({model.description})" if model else "not in the catalog"
        lines.append(f"  PCI device id {_pci(device)}; catalog entry: {catalog}")
        memory = f"{device.memory_mib} MiB"
        if model is not None and model.memory_mib != device.memory_mib:
            memory += f" *(catalog {model.memory_mib})"
        lines.append(f"  memory {memory}; minor number {device.minor_number}")
        lines.append(f"  MIG mode: {_mode(report.mig_mode)}")
        if report.profiles.value is None:
            lines.append(f"  profiles: not answered ({report.profiles.error})")
        elif report.profiles.value:
            marks: dict[int, set[str]] = {}
            for m in report.mismatches:
                marks.setdefault(m.profile_id, set()).add(m.field)
            header = ["index", "id", "name", "slices", "MiB", "count", "SMs", "placements"]
            rows = [header] + [
                _profile_row(
                    p,
                    model.table.by_id(p.profile_id) if model else None,
                    marks.get(p.profile_id, set()),
                )
                for p in sorted(report.profiles.value, key=lambda p: p.index)
            ]
            lines.append("  profiles (NVML; *(catalog) where the catalog differs):")
            lines.extend("  " + row for row in _table(rows))
        for m in report.mismatches:
            if m.field == "profile":
                lines.append(f"  * {m.describe()}")
        if report.mismatches:
            lines.append(f"  catalog differences: {len(report.mismatches)}")
        elif model is not None and report.profiles.value:
            lines.append("  catalog differences: none")
        lines.extend(_instances(report))
        lines.extend(_processes(report))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _instances(report: GpuReport) -> list[str]:
    if report.instances.value is None:
        return [f"  instances: not answered ({report.instances.error})"]
    if not report.instances.value:
        return ["  instances: none"]
    lines = ["  instances:"]
    for gi in report.instances.value:
        cis = ", ".join(
            f"CI {ci.ci_id} (profile {ci.profile_id}) {ci.uuid or 'no UUID'}"
            for ci in gi.compute_instances
        )
        lines.append(
            f"    GI {gi.gi_id} profile id {gi.profile_id} at {gi.placement}: {cis or 'no CI'}"
        )
    return lines


def _processes(report: GpuReport) -> list[str]:
    if report.processes.value is None:
        return [f"  processes: not answered ({report.processes.error})"]
    if not report.processes.value:
        return ["  processes: none"]
    return ["  processes:"] + [
        f"    pid {p.pid} {p.used_memory_mib} MiB"
        + (f" GI {p.gi_id} CI {p.ci_id}" if p.gi_id is not None else "")
        for p in report.processes.value
    ]


def render_json(reports: Sequence[GpuReport]) -> list[dict[str, Any]]:
    """The report for machines: the same facts, catalog values beside NVML's."""
    return [_gpu_json(report) for report in reports]


def _answer_json(answer: Answer[Any], render: Callable[[Any], Any]) -> Any:
    if answer.value is None:
        return {"error": answer.error}
    return render(answer.value)


def _gpu_json(report: GpuReport) -> dict[str, Any]:
    device, model = report.device, report.model
    return {
        "index": device.index,
        "uuid": device.uuid,
        "name": device.name,
        "pciDeviceId": _pci(device),
        "memoryMiB": device.memory_mib,
        "minorNumber": device.minor_number,
        "migCapable": device.mig_capable,
        "migMode": _answer_json(
            report.mig_mode, lambda m: {"current": m.current, "pending": m.pending}
        ),
        "profiles": _answer_json(
            report.profiles,
            lambda ps: [
                {
                    "index": p.index,
                    "id": p.profile_id,
                    "name": p.name,
                    "slices": p.slice_count,
                    "memoryMiB": p.memory_mib,
                    "maxCount": p.instance_count,
                    "smCount": p.sm_count,
                    "placements": [[pl.start, pl.size] for pl in p.placements],
                }
                for p in sorted(ps, key=lambda p: p.index)
            ],
        ),
        "instances": _answer_json(
            report.instances,
            lambda gis: [
                {
                    "gpuInstanceId": gi.gi_id,
                    "profileId": gi.profile_id,
                    "placement": [gi.placement.start, gi.placement.size],
                    "computeInstances": [
                        {"id": ci.ci_id, "profileId": ci.profile_id, "uuid": ci.uuid}
                        for ci in gi.compute_instances
                    ],
                }
                for gi in gis
            ],
        ),
        "processes": _answer_json(
            report.processes,
            lambda ps: [
                {
                    "pid": p.pid,
                    "usedMemoryMiB": p.used_memory_mib,
                    "gpuInstanceId": p.gi_id,
                    "computeInstanceId": p.ci_id,
                }
                for p in ps
            ],
        ),
        "catalog": None
        if model is None
        else {
            "model": model.key,
            "memoryMiB": model.memory_mib,
            "profiles": [
                {
                    "id": p.profile_id,
                    "name": p.name,
                    "slices": p.compute_slices,
                    "memoryMiB": p.memory_mib,
                    "maxCount": p.max_count,
                    "smCount": p.sm_count,
                    "placements": [[pl.start, pl.size] for pl in p.placements],
                }
                for p in model.profiles
            ],
        },
        "differences": [
            {
                "profileId": m.profile_id,
                "profile": m.profile,
                "field": m.field,
                "nvml": m.nvml,
                "catalog": m.catalog,
            }
            for m in report.mismatches
        ],
    }
