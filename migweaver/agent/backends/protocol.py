"""What the agent needs from a GPU, as a small typed interface.

Two implementations: `nvml.py` (real GPUs through `pynvml`) and `fake.py` (simulated GPUs
that behave as NVML does, for tests, the simulator and clusters without GPUs). Calls are
synchronous, like NVML itself; the agent runs them in a worker thread.

Every failure is a `BackendError` carrying the NVML error it came from, so the reconciler
can map it to a condition without knowing which backend raised it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable


class NvmlError(StrEnum):
    """The NVML return codes the agent distinguishes (docs/mig-reference.md section 1)."""

    UNINITIALIZED = "Uninitialized"
    INVALID_ARGUMENT = "InvalidArgument"
    NOT_SUPPORTED = "NotSupported"
    NO_PERMISSION = "NoPermission"
    NOT_FOUND = "NotFound"
    INSUFFICIENT_SIZE = "InsufficientSize"
    DRIVER_NOT_LOADED = "DriverNotLoaded"
    TIMEOUT = "Timeout"
    GPU_IS_LOST = "GpuIsLost"
    RESET_REQUIRED = "ResetRequired"
    IN_USE = "InUse"
    INSUFFICIENT_RESOURCES = "InsufficientResources"
    LIBRARY_NOT_FOUND = "LibraryNotFound"
    FUNCTION_NOT_FOUND = "FunctionNotFound"
    UNKNOWN = "Unknown"


class BackendError(Exception):
    """A GPU call failed. `call` names the NVML function, `error` the NVML code."""

    def __init__(self, call: str, error: NvmlError, detail: str = "") -> None:
        self.call = call
        self.error = error
        self.detail = detail
        text = f"{call}: NVML_ERROR_{error.name}"
        super().__init__(f"{text} ({detail})" if detail else text)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One physical GPU as NVML enumerates it."""

    index: int
    uuid: str
    name: str
    memory_mib: int
    mig_capable: bool
    pci_device_id: int | None = None
    minor_number: int | None = None
    """The GPU's device minor (`/dev/nvidia<minor>`, `gpu<minor>` in the MIG capability
    files); None when NVML does not say. It is not always the NVML index."""


@dataclass(frozen=True, slots=True)
class MigModeState:
    """`current` is in force; `pending` differs until the GPU is reset when a switch waits."""

    current: bool
    pending: bool

    @property
    def switching(self) -> bool:
        return self.current != self.pending


@dataclass(frozen=True, slots=True)
class GiProfile:
    """A GPU-instance profile as NVML reports it for one GPU (v2 profile info)."""

    profile_id: int
    index: int
    name: str
    slice_count: int
    memory_mib: int
    instance_count: int
    placements: tuple[Placement, ...]
    sm_count: int | None = None

    @property
    def media_extensions(self) -> bool:
        return "+me" in self.name

    def to_profile(self) -> MigProfile:
        return MigProfile(
            name=self.name,
            profile_id=self.profile_id,
            index=self.index,
            compute_slices=self.slice_count,
            memory_mib=self.memory_mib,
            placements=self.placements,
            max_count=self.instance_count,
            sm_count=self.sm_count,
            media_extensions=self.media_extensions,
        )


def profile_table(profiles: list[GiProfile] | tuple[GiProfile, ...]) -> ProfileTable:
    """The table core works with, from what NVML reported for one GPU."""
    slots = max((p.end for gp in profiles for p in gp.placements), default=0)
    return ProfileTable(memory_slots=slots, profiles=tuple(gp.to_profile() for gp in profiles))


@dataclass(frozen=True, slots=True)
class ComputeInstance:
    """A compute instance; `uuid` is the MIG device UUID (`MIG-...`) once NVML has one."""

    ci_id: int
    profile_id: int
    uuid: str | None


@dataclass(frozen=True, slots=True)
class GpuInstance:
    """A GPU instance with its placement and compute instances (none when half-created)."""

    gi_id: int
    profile_id: int
    placement: Placement
    compute_instances: tuple[ComputeInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process running on a GPU; gi/ci ids are None when MIG is off."""

    pid: int
    used_memory_mib: int
    gi_id: int | None = None
    ci_id: int | None = None


@runtime_checkable
class GpuBackend(Protocol):
    """The GPU operations of the agent. Every method may raise `BackendError`."""

    def list_gpus(self) -> list[GpuDevice]: ...

    def get_mig_mode(self, gpu: int) -> MigModeState: ...

    def set_mig_mode(self, gpu: int, enabled: bool) -> MigModeState:
        """Request a mode; returns the state after the call (pending when the GPU is busy)."""
        ...

    def list_profiles(self, gpu: int) -> list[GiProfile]:
        """The GI profiles this GPU supports, with all their placements.

        NVML answers with MIG mode off too (read on a real H200, docs/agent.md):
        a GPU's own table is known before MIG is switched on.
        """
        ...

    def list_gpu_instances(self, gpu: int) -> list[GpuInstance]: ...

    def create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> int:
        """Create a GI at exactly this placement; returns the driver's GI id."""
        ...

    def create_compute_instance(self, gpu: int, gi_id: int) -> int:
        """Create the full-size compute instance of a GI; returns its CI id."""
        ...

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None: ...

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None: ...

    def list_processes(self, gpu: int) -> list[GpuProcess]:
        """Compute processes on the GPU and on each of its MIG devices."""
        ...
