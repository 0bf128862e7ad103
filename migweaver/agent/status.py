"""MigLayout status from what the reconciler saw and did: pure functions, no I/O.

The agent's Kubernetes shell patches the result through the status subresource.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from migweaver.agent.backends.protocol import GiProfile, GpuDevice, MigModeState
from migweaver.agent.reconciler import GpuObservation, ReconcileResult
from migweaver.core.agent.diff import ActualInstance
from migweaver.core.mig.catalog_check import describe_mismatches
from migweaver.core.resources.models import (
    CONDITION_CATALOG_MISMATCH,
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
    "REASON_CATALOG_AGREES",
    "REASON_CATALOG_DIFFERS",
    "REASON_NOT_IN_CATALOG",
    "catalog_condition",
    "gpu_info",
    "instance_status",
    "layout_status",
    "mig_mode_status",
    "observed_status",
    "profile_status",
]


REASON_CATALOG_DIFFERS: Final = "NvmlDiffersFromCatalog"
REASON_CATALOG_AGREES: Final = "NvmlMatchesCatalog"
REASON_NOT_IN_CATALOG: Final = "ModelNotInCatalog"


def gpu_info(device: GpuDevice) -> GpuInfo:
    """`status.gpu`: the GPU as NVML names it."""
    return GpuInfo(
        model=device.name,
        memory_mib=device.memory_mib,
        mig_capable=device.mig_capable,
        pci_device_id=_pci_device(device.pci_device_id),
    )


def _pci_device(pci_device_id: int | None) -> int | None:
    # NVML's pciDeviceId packs (device << 16) | vendor; the status holds the device part.
    if pci_device_id is None:
        return None
    return pci_device_id >> 16 if pci_device_id > 0xFFFF else pci_device_id


def catalog_condition(observation: GpuObservation) -> Condition | None:
    """`CatalogMismatch`: whether NVML's profile table agrees with the catalog's entry.

    None when NVML listed no profiles (nothing to compare; the catalog stands in).
    """
    if not observation.profiles:
        return None
    if observation.fallback_table is None:
        return Condition(
            type=CONDITION_CATALOG_MISMATCH,
            status="Unknown",
            reason=REASON_NOT_IN_CATALOG,
            message=f"{observation.device.name}: the built-in catalog has no entry; "
            "NVML's profiles are used as reported",
        )
    mismatches = observation.catalog_mismatches
    if not mismatches:
        return Condition(
            type=CONDITION_CATALOG_MISMATCH,
            status="False",
            reason=REASON_CATALOG_AGREES,
            message="NVML's profile table matches the built-in catalog",
        )
    return Condition(
        type=CONDITION_CATALOG_MISMATCH,
        status="True",
        reason=REASON_CATALOG_DIFFERS,
        message=f"NVML differs from the built-in catalog ({len(mismatches)}): "
        f"{describe_mismatches(mismatches)}; NVML's values are used",
    )


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
        sm_count=profile.sm_count,
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
    catalog = catalog_condition(result.observation) if result.observation else None
    for condition in (*result.conditions, *([catalog] if catalog else [])):
        stamped = condition.model_copy(update={"observed_generation": generation})
        conditions = set_condition(conditions, stamped, now)
    return status.model_copy(
        update={"observed_generation": generation, "phase": result.phase, "conditions": conditions}
    )
