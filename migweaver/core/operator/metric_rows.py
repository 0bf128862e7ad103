"""What the operator's MIG metrics show, computed from MigLayouts (pure: no metrics library).

`metric_rows` turns MigLayouts, as the Kubernetes API returns them, into plain rows: one
`InstanceRow` per GPU instance that exists on a GPU (its status) and one `MemoryTotal` per
node and operating mode. `migweaver.operator.metrics` only formats these rows, so every
decision about *what* is exported (numbering, in use, de-duplication) is tested here.

Every label value comes from a MigLayout (node name, GPU index and UUID, profile, NVML ids),
that is from the API objects the agents write, never from a pod: the pod a status names is
deliberately not exported. The exposition format escapes whatever the strings contain.

`migname` follows HAMi's `<profile>-<n>` (`3g.20gb-0`, `3g.20gb-1` in the seed's example):
here `n` numbers the instances *of that profile* on the GPU in placement order, from 0, so
a new instance of another profile never renames existing series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydantic import ValidationError

from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.models import InstanceStatus, MigLayout

__all__ = [
    "InstanceRow",
    "InvalidLayout",
    "LayoutInput",
    "MemoryTotal",
    "MetricRows",
    "instance_rows",
    "layout_mode",
    "metric_rows",
    "parse_layouts",
    "short_error",
]

LayoutInput: TypeAlias = Mapping[str, Any] | MigLayout
"""A MigLayout as the API returns it (any Mapping, e.g. a kopf body) or already parsed."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One GPU instance that exists on a GPU, as the metrics show it."""

    node: str
    gpu_index: int
    gpu_uuid: str
    mig_name: str
    """`<profile>-<n>`: n numbers this profile's instances on the GPU in placement order."""
    profile: str
    placement: Placement
    in_use: bool
    """A process or a pod holds it (`inUse`), or the agent reports a pod for it."""
    mig_uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass(frozen=True, slots=True)
class MemoryTotal:
    """The memory of the GPUs of one node in one mode (mig or hami-core), in MiB."""

    node: str
    mode: str
    memory_mib: int


@dataclass(frozen=True, slots=True)
class InvalidLayout:
    """A MigLayout left out of the metrics, and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class MetricRows:
    """Everything the MIG metrics show, from one list of MigLayouts."""

    instances: tuple[InstanceRow, ...] = ()
    memory_totals: tuple[MemoryTotal, ...] = ()
    invalid: tuple[InvalidLayout, ...] = ()


def _object_name(obj: object, position: int) -> str:
    """metadata.name of a raw object, or `#<position>` when it has none."""
    if isinstance(obj, MigLayout):
        return obj.name or f"#{position}"
    if isinstance(obj, Mapping):
        metadata = obj.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
            return str(metadata["name"]) or f"#{position}"
    return f"#{position}"


def short_error(error: ValidationError) -> str:
    """The first problem of a validation error, in one line (`spec.gpuIndex: ...`)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "object"
    more = error.error_count() - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{where}: {first.get('msg', 'invalid')}{suffix}"


def parse_layouts(
    layouts: Iterable[LayoutInput],
) -> tuple[list[MigLayout], list[InvalidLayout]]:
    """The valid MigLayouts, one per GPU, sorted by (node, GPU index), and the rejected ones.

    Never raises on bad input: an object that does not parse is reported, and so is a
    second layout for a GPU (node and index) that an earlier one (by name) already claims,
    since two would export the same series twice.
    """
    parsed: list[tuple[str, MigLayout]] = []
    invalid: list[InvalidLayout] = []
    for position, obj in enumerate(layouts):
        name = _object_name(obj, position)
        if isinstance(obj, MigLayout):
            parsed.append((name, obj))
            continue
        if not isinstance(obj, Mapping):
            invalid.append(InvalidLayout(name, f"not an object: {type(obj).__name__}"))
            continue
        try:
            parsed.append((name, MigLayout.from_api(obj)))
        except ValidationError as error:
            invalid.append(InvalidLayout(name, short_error(error)))
        except (ValueError, TypeError) as error:
            invalid.append(InvalidLayout(name, str(error) or type(error).__name__))
    parsed.sort(key=lambda item: (item[1].spec.node_name, item[1].spec.gpu_index, item[0]))
    kept: list[MigLayout] = []
    owner: dict[tuple[str, int], str] = {}
    for name, layout in parsed:
        key = (layout.spec.node_name, layout.spec.gpu_index)
        if key in owner:
            invalid.append(
                InvalidLayout(
                    name, f"GPU {key[0]}/gpu{key[1]} is already described by MigLayout {owner[key]}"
                )
            )
            continue
        owner[key] = name
        kept.append(layout)
    return kept, invalid


def layout_mode(layout: MigLayout) -> str:
    """How the GPU is shared: the agent's `status.mode`, else the spec's `migEnabled`."""
    if layout.status is not None and layout.status.mode is not None:
        return layout.status.mode
    return "mig" if layout.spec.mig_enabled else "hami-core"


def _in_use(instance: InstanceStatus) -> bool:
    return instance.in_use or bool(instance.pod)


def instance_rows(layout: MigLayout) -> list[InstanceRow]:
    """The instances that exist on the layout's GPU (its status), in placement order.

    Two status entries with the same profile and placement (which an agent should never
    report) are shown once.
    """
    if layout.status is None:
        return []
    spec = layout.spec
    ordered = sorted(
        layout.status.instances,
        key=lambda i: (i.placement.start, i.placement.size, i.profile),
    )
    counts: dict[str, int] = {}
    seen: set[tuple[str, Placement]] = set()
    rows: list[InstanceRow] = []
    for instance in ordered:
        placement = instance.placement.to_placement()
        if (instance.profile, placement) in seen:
            continue
        seen.add((instance.profile, placement))
        n = counts.get(instance.profile, 0)
        counts[instance.profile] = n + 1
        rows.append(
            InstanceRow(
                node=spec.node_name,
                gpu_index=spec.gpu_index,
                gpu_uuid=spec.gpu_uuid,
                mig_name=f"{instance.profile}-{n}",
                profile=instance.profile,
                placement=placement,
                in_use=_in_use(instance),
                mig_uuid=instance.uuid,
                gpu_instance_id=instance.gpu_instance_id,
                compute_instance_id=instance.compute_instance_id,
            )
        )
    return rows


def metric_rows(layouts: Iterable[LayoutInput]) -> MetricRows:
    """Instance rows and per-node memory totals from MigLayouts; bad layouts are reported.

    A GPU counts towards its node's total once its agent has reported its memory
    (`status.gpu.memoryMiB`); before that it has no total, rather than a misleading 0.
    """
    layouts_ok, invalid = parse_layouts(layouts)
    instances: list[InstanceRow] = []
    totals: dict[tuple[str, str], int] = {}
    for layout in layouts_ok:
        instances.extend(instance_rows(layout))
        status = layout.status
        if status is not None and status.gpu is not None and status.gpu.memory_mib > 0:
            key = (layout.spec.node_name, layout_mode(layout))
            totals[key] = totals.get(key, 0) + status.gpu.memory_mib
    return MetricRows(
        instances=tuple(instances),
        memory_totals=tuple(
            MemoryTotal(node, mode, mib) for (node, mode), mib in sorted(totals.items())
        ),
        invalid=tuple(invalid),
    )
