"""The planner's output: where each pod goes, or why it cannot go anywhere yet, and the
MigLayouts that must change for it.

Everything here is a frozen value so two plans compare with `==` (the determinism tests
rely on it) and can be handed between threads or serialised without copying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.snapshot import GpuKey, GpuMode

__all__ = [
    "Assignment",
    "ContainerAssignment",
    "Device",
    "Plan",
    "PlannerOptions",
    "Unplaceable",
    "plan_to_json",
]


@dataclass(frozen=True, slots=True)
class PlannerOptions:
    """Knobs of the planner; the defaults are what the operator uses.

    `starvation_after`: seconds a pod may wait unplaced before it holds the GPUs it would
    fit on soonest (see docs/planner.md, "Anti-starvation"). `max_holds`: how many
    starving pods may hold GPUs at once, so a flood of impossible-now pods cannot freeze
    the whole cluster for everyone else.
    """

    starvation_after: float = 300.0
    max_holds: int = 4
    repair_trials: int = 16
    """How many times one plan may be retried in another order after a pod found no place
    (docs/planner.md, "Repair"); 0 turns repair off."""
    repair_max_work: int = 50_000
    """Repair only when pods x nodes is at most this: retries replan the whole batch."""


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a container: a MIG instance (existing or to be created) or a
    hami-core share of a whole GPU.

    `memory_mib` is what the container gets: the profile's physical MiB on MIG, the share
    on hami-core. `cores` is the percent of the GPU's compute: the instance's share of
    compute slices on MIG (rounded down), the share's limit on hami-core.
    `instance_uuid` is the MIG UUID of an existing instance (None for a new one, or for
    an instance whose compute instance has no UUID yet).
    """

    node: str
    gpu_index: int
    gpu_uuid: str
    mode: GpuMode
    profile: str | None
    placement: Placement | None
    memory_mib: int
    cores: int
    instance_uuid: str | None = None
    new_instance: bool = False

    @property
    def gpu_key(self) -> GpuKey:
        return (self.node, self.gpu_index)


@dataclass(frozen=True, slots=True)
class ContainerAssignment:
    """The devices of one container, in the order the container will see them."""

    name: str
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class Assignment:
    """A pod placed on `node`. `reused` is True when the devices are the ones an earlier
    plan reserved for this pod (nothing new was decided). `node` is None only for a pod
    that asks for no device at all (nothing to place: it can be released as is)."""

    pod: str
    node: str | None
    containers: tuple[ContainerAssignment, ...]
    reused: bool = False

    @property
    def devices(self) -> tuple[Device, ...]:
        """Every device of every container."""
        return tuple(d for c in self.containers for d in c.devices)


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """A pod that cannot be placed now, with a reason a person can act on.

    `holds` lists the GPUs the pod holds against later pods because it has waited longer
    than `PlannerOptions.starvation_after` (anti-starvation).
    """

    pod: str
    reason: str
    holds: tuple[GpuKey, ...] = ()
    code: str = "NoRoom"
    """`Filtered` or `TooLarge`: waiting will not help (the pod or the cluster must
    change); `NoRoom` or `NotOnOneNode`: the pod fits once capacity frees up."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The result of one planning round.

    - `pods`: per pod key, in planning order, an `Assignment` or an `Unplaceable`.
    - `layouts`: the new desired instances of every GPU whose MigLayout changes (sorted by
      placement), including every busy instance unchanged.
    - `mig_enabled`: GPUs whose MIG mode must be switched on for the plan.
    - `reservations`: per GPU, the instances this plan gives to pods (existing or new).
    - `held`: GPUs held by starving pods (GPU -> pod key).
    """

    pods: dict[str, Assignment | Unplaceable] = field(default_factory=dict)
    layouts: dict[GpuKey, tuple[PlacedInstance, ...]] = field(default_factory=dict)
    mig_enabled: dict[GpuKey, bool] = field(default_factory=dict)
    reservations: dict[GpuKey, tuple[tuple[PlacedInstance, str], ...]] = field(default_factory=dict)
    held: dict[GpuKey, str] = field(default_factory=dict)

    @property
    def assignments(self) -> dict[str, Assignment]:
        """The placed pods."""
        return {k: v for k, v in self.pods.items() if isinstance(v, Assignment)}

    @property
    def unplaceable(self) -> dict[str, Unplaceable]:
        """The pods that wait, with their reasons."""
        return {k: v for k, v in self.pods.items() if isinstance(v, Unplaceable)}


def _placement_json(placement: Placement | None) -> dict[str, int] | None:
    return None if placement is None else {"start": placement.start, "size": placement.size}


def _device_json(device: Device) -> dict[str, Any]:
    return {
        "node": device.node,
        "gpuIndex": device.gpu_index,
        "gpuUUID": device.gpu_uuid,
        "mode": device.mode,
        "profile": device.profile,
        "placement": _placement_json(device.placement),
        "memoryMiB": device.memory_mib,
        "cores": device.cores,
        "instanceUUID": device.instance_uuid,
        "newInstance": device.new_instance,
    }


def _instances_json(instances: tuple[PlacedInstance, ...]) -> list[dict[str, Any]]:
    return [{"profile": i.profile, "placement": _placement_json(i.placement)} for i in instances]


def plan_to_json(
    plan: Plan, before: Mapping[GpuKey, tuple[PlacedInstance, ...]] | None = None
) -> dict[str, Any]:
    """The plan as JSON-ready data (camelCase, as the API and the allocation annotation).

    `before`, when given, adds each changed GPU's current instances next to the new ones.
    """
    pods: dict[str, Any] = {}
    for key, result in plan.pods.items():
        if isinstance(result, Assignment):
            pods[key] = {
                "placed": True,
                "node": result.node,
                "reused": result.reused,
                "containers": [
                    {"name": c.name, "devices": [_device_json(d) for d in c.devices]}
                    for c in result.containers
                ],
            }
        else:
            pods[key] = {
                "placed": False,
                "code": result.code,
                "reason": result.reason,
                "holds": [f"{n}/gpu{i}" for n, i in result.holds],
            }
    gpu_keys = sorted(set(plan.layouts) | set(plan.mig_enabled) | set(plan.reservations))
    layouts = []
    for gpu in gpu_keys:
        entry: dict[str, Any] = {"node": gpu[0], "gpuIndex": gpu[1]}
        if before is not None:
            entry["before"] = _instances_json(before.get(gpu, ()))
        if gpu in plan.layouts:
            entry["instances"] = _instances_json(plan.layouts[gpu])
        if gpu in plan.mig_enabled:
            entry["migEnabled"] = plan.mig_enabled[gpu]
        entry["reservations"] = [
            {"profile": i.profile, "placement": _placement_json(i.placement), "pod": pod}
            for i, pod in plan.reservations.get(gpu, ())
        ]
        layouts.append(entry)
    return {
        "pods": pods,
        "layouts": layouts,
        "held": [
            {"node": n, "gpuIndex": i, "pod": pod} for (n, i), pod in sorted(plan.held.items())
        ],
    }
