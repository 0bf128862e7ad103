"""MigLayout status from what the reconciler saw and did: pure functions, no I/O.

The agent's Kubernetes shell patches the result through the status subresource.
"""

from __future__ import annotations

from collections.abc import Sequence

from migweaver.agent.backends.protocol import GiProfile, GpuDevice, MigModeState
from migweaver.agent.reconciler import GpuObservation, ReconcileResult
from migweaver.core.agent.diff import ActualInstance
from migweaver.core.resources.models import (
    Condition,
    GpuInfo,
    InstanceStatus,
    MigLayoutStatus,
    MigModeStatus,
    PlacementModel,
    ProfileStatus,
    set_condition,
)

__all__ = [
    "gpu_info",
    "instance_status",
    "layout_status",
    "mig_mode_status",
    "observed_status",
    "profile_status",
]


def gpu_info(device: GpuDevice) -> GpuInfo:
    """`status.gpu`: the GPU as NVML names it."""
    return GpuInfo(model=device.name, memory_mib=device.memory_mib, mig_capable=device.mig_capable)


def mig_mode_status(mode: MigModeState) -> MigModeStatus:
    """`status.migMode`: current and pending mode."""
    return MigModeStatus(
        current="Enabled" if mode.current else "Disabled",
        pending="Enabled" if mode.pending else "Disabled",
    )


def profile_status(profile: GiProfile) -> ProfileStatus:
    """One entry of `status.profiles`, as NVML reported it."""
    return ProfileStatus(
        name=profile.name,
        id=profile.profile_id,
        memory_mib=profile.memory_mib,
        slices=profile.slice_count,
        placements=[PlacementModel.from_placement(p) for p in profile.placements],
        max_count=profile.instance_count,
    )


def instance_status(instance: ActualInstance) -> InstanceStatus:
    """One entry of `status.instances`: ids, MIG UUID, and whether it is in use."""
    return InstanceStatus(
        profile=instance.profile,
        placement=PlacementModel.from_placement(instance.placement),
        gpu_instance_id=instance.gi_id,
        compute_instance_id=instance.ci_ids[0] if instance.ci_ids else None,
        uuid=instance.uuid,
        in_use=instance.busy,
        pod=instance.pod,
    )


def observed_status(observation: GpuObservation) -> MigLayoutStatus:
    """The observed half of a status (gpu, migMode, profiles, instances, summaries).

    Without phase or conditions: what the shell can report for a GPU it has only read,
    e.g. when it adopts a GPU at start-up.
    """
    status = MigLayoutStatus(
        gpu=gpu_info(observation.device),
        mig_mode=mig_mode_status(observation.mig_mode),
        profiles=[profile_status(p) for p in sorted(observation.profiles, key=lambda p: p.index)],
        instances=[
            instance_status(i) for i in sorted(observation.instances, key=lambda i: i.placement)
        ],
        mode="mig" if observation.mig_mode.current else "hami-core",
    )
    return status.with_summaries()


def layout_status(
    result: ReconcileResult,
    *,
    generation: int | None,
    now: str,
    previous_conditions: Sequence[Condition] = (),
) -> MigLayoutStatus:
    """The full status after a reconcile of the spec of `generation`.

    `now` (RFC 3339) stamps conditions whose status changed; `previous_conditions` keep
    their transition time otherwise (and conditions of other types are kept as they are).
    When the GPU could not be read, the observed fields are left empty: the conditions
    say why, and a status must never claim instances nobody saw.
    """
    if result.observation is not None:
        status = observed_status(result.observation)
    else:
        status = MigLayoutStatus().with_summaries()
    conditions = list(previous_conditions)
    for condition in result.conditions:
        stamped = condition.model_copy(update={"observed_generation": generation})
        conditions = set_condition(conditions, stamped, now)
    return status.model_copy(
        update={"observed_generation": generation, "phase": result.phase, "conditions": conditions}
    )
