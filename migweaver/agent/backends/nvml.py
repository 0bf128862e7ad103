"""The GPU backend for real GPUs: NVML through `pynvml` (PyPI distribution `nvidia-ml-py`).

Every NVML call goes through `NvmlBackend._call`, which turns a `pynvml.NVMLError` into
`BackendError(<NVML function>, <NvmlError>, detail)`, so the reconciler never sees a pynvml
type. The NVML facts this module relies on are in `docs/mig-reference.md` section 1:

- GI profiles are *looked up* by index constant (`NVML_GPU_INSTANCE_PROFILE_*`) but every
  other call takes the profile **id** the lookup returns (index 9 is id 15, index 4 is id 0).
- GPU instances are always created with an explicit placement, passed by reference.
- A GPU instance without a compute instance has no MIG device handle and no UUID, so
  listing and clean-up walk GPU instances; MIG handles only supply UUIDs and processes.

`pynvml` is untyped: values it returns are read into typed values at once, and NVML handles
are carried around as opaque `object`s.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeAlias

import pynvml

from migweaver.agent.backends.protocol import (
    BackendError,
    ComputeInstance,
    GiProfile,
    GpuDevice,
    GpuInstance,
    GpuProcess,
    MigModeState,
    NvmlError,
)
from migweaver.core.mig.catalog import match_model
from migweaver.core.mig.profiles import Placement, normalize_profile_name

Handle: TypeAlias = object
"""An opaque NVML handle (`nvmlDevice_t`, `nvmlGpuInstance_t`, `nvmlComputeInstance_t`)."""

_MIB: Final = 1 << 20
# nvmlProcessInfo_t: gpuInstanceId / computeInstanceId are 0xFFFFFFFF when MIG is off.
_NO_MIG_ID: Final = 0xFFFFFFFF

_ERRORS: Final[Mapping[int, NvmlError]] = {
    pynvml.NVML_ERROR_UNINITIALIZED: NvmlError.UNINITIALIZED,
    pynvml.NVML_ERROR_INVALID_ARGUMENT: NvmlError.INVALID_ARGUMENT,
    pynvml.NVML_ERROR_NOT_SUPPORTED: NvmlError.NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION: NvmlError.NO_PERMISSION,
    pynvml.NVML_ERROR_NOT_FOUND: NvmlError.NOT_FOUND,
    pynvml.NVML_ERROR_INSUFFICIENT_SIZE: NvmlError.INSUFFICIENT_SIZE,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: NvmlError.DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_TIMEOUT: NvmlError.TIMEOUT,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: NvmlError.LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_GPU_IS_LOST: NvmlError.GPU_IS_LOST,
    pynvml.NVML_ERROR_RESET_REQUIRED: NvmlError.RESET_REQUIRED,
    pynvml.NVML_ERROR_IN_USE: NvmlError.IN_USE,
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES: NvmlError.INSUFFICIENT_RESOURCES,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: NvmlError.FUNCTION_NOT_FOUND,
}

_INIT_HINTS: Final[Mapping[NvmlError, str]] = {
    NvmlError.LIBRARY_NOT_FOUND: (
        "libnvidia-ml.so.1 not found: install the NVIDIA driver, run the agent with the "
        "NVIDIA container runtime, or use --backend fake"
    ),
    NvmlError.DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded on this node",
    NvmlError.NO_PERMISSION: "no permission to open the NVIDIA devices: the agent needs root",
}

# "Try every index and skip NotSupported" (docs/mig-reference.md section 1): a profile index or CI
# profile this GPU / GPU instance does not have answers NotSupported or InvalidArgument.
_ABSENT_PROFILE: Final = frozenset({NvmlError.NOT_SUPPORTED, NvmlError.INVALID_ARGUMENT})
# A question this driver or GPU cannot answer (the answer is optional).
_NO_ANSWER: Final = frozenset({NvmlError.NOT_SUPPORTED, NvmlError.FUNCTION_NOT_FOUND})
# An empty MIG device slot answers NotFound.
_EMPTY_SLOT: Final = frozenset({NvmlError.NOT_FOUND})
# A GPU without MIG answers NotSupported to nvmlDeviceGetMigMode.
_NO_MIG: Final = frozenset({NvmlError.NOT_SUPPORTED})

# Name suffixes of the GI profile index constants, used only when the binding is too old to
# return profile names (v1 info): 1_SLICE_REV1 / 2_SLICE_REV1 are the +me profiles, GFX
# variants 10-12 and 17, NO_ME 13-14, ALL_ME 15-16.
_V1_NAME_SUFFIX: Final[Mapping[int, str]] = {
    7: "+me", 8: "+me", 10: "+gfx", 11: "+gfx", 12: "+gfx", 17: "+gfx",
    13: "-me", 14: "-me", 15: "+me.all", 16: "+me.all",
}  # fmt: skip


def nvml_error(code: int) -> NvmlError:
    """The protocol's error for an NVML return code (`NVMLError.value`); Unknown otherwise."""
    return _ERRORS.get(code, NvmlError.UNKNOWN)


@dataclass(frozen=True, slots=True)
class _GiProfileInfo:
    """What `nvmlDeviceGetGpuInstanceProfileInfo(device, index)` said about one profile."""

    index: int
    profile_id: int
    name: str
    slice_count: int
    memory_mib: int
    instance_count: int
    sm_count: int


@dataclass(frozen=True, slots=True)
class _CiProfileInfo:
    """What `nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, shared)` said."""

    profile_id: int
    slice_count: int
    instance_count: int


@dataclass(frozen=True, slots=True)
class _Gi:
    handle: Handle
    gi_id: int
    profile_id: int
    slice_count: int
    placement: Placement


@dataclass(frozen=True, slots=True)
class _Ci:
    handle: Handle
    ci_id: int
    profile_id: int


@dataclass(frozen=True, slots=True)
class _MigDevice:
    """A MIG device handle: one per compute instance, identified by its GI and CI ids."""

    handle: Handle
    gi_id: int
    ci_id: int


class NvmlBackend:
    """`GpuBackend` over NVML. Use `open()` / `close()` or `with NvmlBackend() as backend:`.

    `nvml` is the `pynvml` module (the default) or a stand-in with the same API for tests.
    NVML calls per method:

    - `list_gpus`: DeviceGetCount, then per GPU DeviceGetHandleByIndex, DeviceGetUUID,
      DeviceGetName, DeviceGetMemoryInfo, DeviceGetPciInfo, DeviceGetMigMode,
      DeviceGetMinorNumber.
    - `get_mig_mode`: DeviceGetMigMode. `set_mig_mode`: DeviceSetMigMode, DeviceGetMigMode.
    - `list_profiles`: DeviceGetGpuInstanceProfileInfo per index constant (v2, or v1 and
      DeviceGetName / DeviceGetPciInfo for the catalog's names), then
      DeviceGetGpuInstancePossiblePlacements per profile id. MIG mode may be off.
    - `list_gpu_instances`: DeviceGetMigMode (nothing more with MIG off), the profile
      infos, DeviceGetGpuInstances per profile id,
      GpuInstanceGetInfo, GpuInstanceGetComputeInstanceProfileInfo per CI profile index,
      GpuInstanceGetComputeInstances, ComputeInstanceGetInfo; for UUIDs
      DeviceGetMaxMigDeviceCount, DeviceGetMigDeviceHandleByIndex, DeviceGetGpuInstanceId,
      DeviceGetComputeInstanceId, DeviceGetUUID.
    - `create_gpu_instance`: DeviceCreateGpuInstanceWithPlacement, GpuInstanceGetInfo.
    - `create_compute_instance`: the GI walk, GpuInstanceGetComputeInstanceProfileInfo,
      GpuInstanceCreateComputeInstance, ComputeInstanceGetInfo.
    - `destroy_compute_instance` / `destroy_gpu_instance`: the GI (and CI) walk, then
      ComputeInstanceDestroy / GpuInstanceDestroy.
    - `list_processes`: DeviceGetComputeRunningProcesses on the GPU and on every MIG device.
    """

    def __init__(self, nvml: Any = pynvml) -> None:
        self._nvml = nvml
        # nvidia-ml-py releases that know the v2 profile-info struct take `version=2` and
        # return the profile name; older ones only have v1 (no name, two arguments). A
        # driver may still lack the v2 entry point: on a real H200 (driver 580.159.04)
        # nvmlDeviceGetGpuInstanceProfileInfoV answered FUNCTION_NOT_FOUND, so the first
        # such answer switches to `version=1` for good (see `_gi_profile_infos`).
        self._profile_info_args: tuple[int, ...] = (
            (2,) if hasattr(nvml, "c_nvmlGpuInstanceProfileInfo_v2_t") else ()
        )
        self._ci_info_args: tuple[int, ...] = ()
        # pynvml raises this (not an NVMLError) when an unversioned entry point such as
        # nvmlDeviceGetComputeRunningProcesses is missing from the installed driver.
        self._mismatch: type[Exception] = getattr(nvml, "NVMLLibraryMismatchError", _NeverRaised)
        self._opened = False

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> NvmlBackend:
        """Initialize NVML; a missing library or driver is a `BackendError` with a hint."""
        try:
            self._call("nvmlInit")
        except BackendError as err:
            hint = _INIT_HINTS.get(err.error)
            if hint is None:
                raise
            raise BackendError(err.call, err.error, f"{hint}; {err.detail}") from err
        self._opened = True
        return self

    def close(self) -> None:
        """Shut NVML down (`nvmlShutdown`) if `open()` succeeded."""
        if self._opened:
            self._opened = False
            self._call("nvmlShutdown")

    def __enter__(self) -> NvmlBackend:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- GpuBackend ----------------------------------------------------------------------

    def list_gpus(self) -> list[GpuDevice]:
        """Every GPU NVML enumerates, in NVML index order."""
        count = int(self._call("nvmlDeviceGetCount"))
        return [self._gpu_device(index) for index in range(count)]

    def get_mig_mode(self, gpu: int) -> MigModeState:
        """Current and pending MIG mode; NotSupported for a GPU without MIG."""
        return self._mig_mode(self._device(gpu))

    def set_mig_mode(self, gpu: int, enabled: bool) -> MigModeState:
        """Request a MIG mode and return the mode NVML reports afterwards.

        NVML *returns* the activation status instead of raising it (docs/mig-reference.md
        section 1): IN_USE (GPU not idle) or RESET_REQUIRED leave `pending != current` until a GPU
        reset, so the mode is re-read rather than inferred from the status.
        """
        device = self._device(gpu)
        mode = self._nvml.NVML_DEVICE_MIG_ENABLE if enabled else self._nvml.NVML_DEVICE_MIG_DISABLE
        self._call("nvmlDeviceSetMigMode", device, mode, context=f"GPU {gpu} mig={int(enabled)}")
        return self._mig_mode(device)

    def list_profiles(self, gpu: int) -> list[GiProfile]:
        """The GI profiles of this GPU with all their placements, MIG mode on or off."""
        device = self._device(gpu)
        profiles = (
            GiProfile(
                profile_id=info.profile_id,
                index=info.index,
                name=info.name,
                slice_count=info.slice_count,
                memory_mib=info.memory_mib,
                instance_count=info.instance_count,
                placements=self._placements(device, info.profile_id),
                sm_count=info.sm_count or None,
            )
            for info in self._gi_profile_infos(device)
        )
        # A profile without a placement cannot be created; core requires at least one.
        return [profile for profile in profiles if profile.placements]

    def list_gpu_instances(self, gpu: int) -> list[GpuInstance]:
        """Every GPU instance, with its compute instances and their MIG UUIDs.

        Walks GPU instances, not MIG handles: a GI left without a CI by a partial failure
        has no MIG handle but must still be reported (and cleaned up).
        """
        device = self._device(gpu)
        if not self._mig_enabled(device):
            return []  # profiles answer with MIG off, instance lists do not
        gpu_instances = self._gpu_instances(device)
        uuids = self._mig_uuids(device) if gpu_instances else {}
        return [
            GpuInstance(
                gi_id=gi.gi_id,
                profile_id=gi.profile_id,
                placement=gi.placement,
                compute_instances=tuple(
                    ComputeInstance(ci.ci_id, ci.profile_id, uuids.get((gi.gi_id, ci.ci_id)))
                    for ci in self._compute_instances(gi.handle)
                ),
            )
            for gi in sorted(gpu_instances, key=lambda gi: (gi.placement, gi.gi_id))
        ]

    def create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> int:
        """Create a GI of `profile_id` (an id, not an index) at exactly `placement`.

        Always `nvmlDeviceCreateGpuInstanceWithPlacement`: the placement-less create picks
        the driver's own slot and can fragment the GPU. The C function takes a *pointer* to
        `nvmlGpuInstancePlacement_t`, hence `byref`.
        """
        placement_struct = self._nvml.c_nvmlGpuInstancePlacement_t(placement.start, placement.size)
        handle = self._call(
            "nvmlDeviceCreateGpuInstanceWithPlacement",
            self._device(gpu),
            profile_id,
            ctypes.byref(placement_struct),
            context=f"GPU {gpu} profile id {profile_id} at {placement}",
        )
        return int(self._call("nvmlGpuInstanceGetInfo", handle).id)

    def create_compute_instance(self, gpu: int, gi_id: int) -> int:
        """Create the compute instance that spans the whole GI; returns its CI id."""
        gi = self._find_gi(gpu, gi_id)
        ci_profile = self._full_ci_profile(gi, context=f"GPU {gpu} GI {gi_id}")
        handle = self._call(
            "nvmlGpuInstanceCreateComputeInstance",
            gi.handle,
            ci_profile.profile_id,
            context=f"GPU {gpu} GI {gi_id} CI profile id {ci_profile.profile_id}",
        )
        return int(self._call("nvmlComputeInstanceGetInfo", handle).id)

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        """Destroy one compute instance; InUse while a process runs on it."""
        gi = self._find_gi(gpu, gi_id)
        ci = next((ci for ci in self._compute_instances(gi.handle) if ci.ci_id == ci_id), None)
        if ci is None:
            raise BackendError(
                "nvmlGpuInstanceGetComputeInstances",
                NvmlError.NOT_FOUND,
                f"GPU {gpu} GI {gi_id} has no compute instance {ci_id}",
            )
        self._call(
            "nvmlComputeInstanceDestroy", ci.handle, context=f"GPU {gpu} GI {gi_id} CI {ci_id}"
        )

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        """Destroy one GPU instance; InUse while it has compute instances or processes."""
        gi = self._find_gi(gpu, gi_id)
        self._call("nvmlGpuInstanceDestroy", gi.handle, context=f"GPU {gpu} GI {gi_id}")

    def list_processes(self, gpu: int) -> list[GpuProcess]:
        """Compute processes on the GPU and on each of its MIG devices, by pid.

        In MIG mode the GPU handle returns the aggregate only to privileged callers, so each
        MIG device is asked too and its GI/CI ids win (a CUDA process uses one MIG device).
        """
        device = self._device(gpu)
        found = {process.pid: process for process in self._processes(device, None)}
        if self._mig_enabled(device):
            for mig in self._mig_devices(device):
                found.update((process.pid, process) for process in self._processes(mig.handle, mig))
        return sorted(found.values(), key=lambda process: process.pid)

    # -- the one place NVML is called ----------------------------------------------------

    def _call(self, name: str, *args: object, context: str = "") -> Any:
        """Call `pynvml.<name>(*args)`; NVML errors become `BackendError(name, ...)`."""
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as err:
            raise BackendError(name, nvml_error(int(err.value)), _detail(context, err)) from err
        except self._mismatch as err:
            raise BackendError(name, NvmlError.UNKNOWN, _detail(context, err)) from err

    def _call_or_none(self, absent: frozenset[NvmlError], name: str, *args: object) -> Any:
        """`_call`, but None when NVML answers one of the `absent` errors."""
        try:
            return self._call(name, *args)
        except BackendError as err:
            if err.error in absent:
                return None
            raise

    # -- GPUs and MIG mode ---------------------------------------------------------------

    def _device(self, gpu: int) -> Handle:
        return self._call("nvmlDeviceGetHandleByIndex", gpu)

    def _gpu_device(self, index: int) -> GpuDevice:
        device = self._device(index)
        return GpuDevice(
            index=index,
            uuid=_text(self._call("nvmlDeviceGetUUID", device)),
            name=_text(self._call("nvmlDeviceGetName", device)),
            memory_mib=int(self._call("nvmlDeviceGetMemoryInfo", device).total) // _MIB,
            mig_capable=self._mig_mode_or_none(device) is not None,
            # nvmlPciInfo_t.pciDeviceId packs (device id << 16) | vendor id (0x10DE).
            pci_device_id=int(self._call("nvmlDeviceGetPciInfo", device).pciDeviceId) >> 16,
            minor_number=self._minor_number(device),
        )

    def _minor_number(self, device: Handle) -> int | None:
        """`nvmlDeviceGetMinorNumber`, or None where NVML cannot say (it is only needed
        for the MIG device nodes of CDI specs)."""
        try:
            minor = self._call_or_none(_NO_ANSWER, "nvmlDeviceGetMinorNumber", device)
        except AttributeError:  # a binding too old to have the function
            return None
        return None if minor is None else int(minor)

    def _mig_mode(self, device: Handle) -> MigModeState:
        current, pending = self._call("nvmlDeviceGetMigMode", device)
        return self._mode_state(current, pending)

    def _mig_mode_or_none(self, device: Handle) -> MigModeState | None:
        """The MIG mode, or None for a GPU without MIG (GetMigMode says NotSupported)."""
        mode = self._call_or_none(_NO_MIG, "nvmlDeviceGetMigMode", device)
        return None if mode is None else self._mode_state(*mode)

    def _mig_enabled(self, device: Handle) -> bool:
        mode = self._mig_mode_or_none(device)
        return mode is not None and mode.current

    def _mode_state(self, current: int, pending: int) -> MigModeState:
        enable = int(self._nvml.NVML_DEVICE_MIG_ENABLE)
        return MigModeState(current=int(current) == enable, pending=int(pending) == enable)

    # -- GPU instance profiles -----------------------------------------------------------

    def _gi_profile_infos(self, device: Handle) -> list[_GiProfileInfo]:
        """Every GI profile of the GPU, found by trying each index constant, unique by id.

        Without v2 info NVML gives no names: the catalog's name of the same profile id is
        taken (the `nvidia-smi mig -lgip` name), else one derived from the sizes.
        """
        found: dict[int, _GiProfileInfo] = {}
        names: dict[int, str] | None = None
        for index in range(int(self._nvml.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            raw = self._profile_info(device, index)
            if raw is None or int(raw.id) in found:
                continue
            if not getattr(raw, "name", None) and names is None:
                names = self._catalog_names(device)
            found[int(raw.id)] = _gi_profile_info(index, raw, names or {})
        return list(found.values())

    def _profile_info(self, device: Handle, index: int) -> Any:
        """`nvmlDeviceGetGpuInstanceProfileInfo`, falling back from v2 to v1 once."""
        name = "nvmlDeviceGetGpuInstanceProfileInfo"
        args = self._profile_info_args
        try:
            return self._call_or_none(_ABSENT_PROFILE, name, device, index, *args)
        except BackendError as err:
            if err.error is not NvmlError.FUNCTION_NOT_FOUND or args != (2,):
                raise
        self._profile_info_args = (1,)
        return self._call_or_none(_ABSENT_PROFILE, name, device, index, 1)

    def _catalog_names(self, device: Handle) -> dict[int, str]:
        """Profile id -> the catalog's name, for the model of this GPU (empty if unknown)."""
        model = match_model(
            _text(self._call("nvmlDeviceGetName", device)),
            int(self._call("nvmlDeviceGetPciInfo", device).pciDeviceId),
        )
        return {p.profile_id: p.name for p in model.profiles} if model is not None else {}

    def _placements(self, device: Handle, profile_id: int) -> tuple[Placement, ...]:
        """All placements of a profile, as NVML lists them regardless of occupancy.

        Two calls, as nvml.h documents for the `_v2` entry point: a NULL array asks for the
        count, then an array of that size is filled. (Sizing it by `instanceCount` would be
        wrong: `1g+me` allows one instance but has seven placements.)
        """
        count = ctypes.c_uint(0)
        name = "nvmlDeviceGetGpuInstancePossiblePlacements"
        self._call(name, device, profile_id, None, ctypes.byref(count))
        if count.value == 0:
            return ()
        array = (self._nvml.c_nvmlGpuInstancePlacement_t * count.value)()
        self._call(name, device, profile_id, array, ctypes.byref(count))
        return tuple(sorted(Placement(int(p.start), int(p.size)) for p in array[: count.value]))

    # -- GPU and compute instances -------------------------------------------------------

    def _gpu_instances(self, device: Handle) -> list[_Gi]:
        """Every GPU instance of the GPU, walked profile id by profile id."""
        return [
            gi
            for info in self._gi_profile_infos(device)
            for gi in self._gpu_instances_of(device, info)
        ]

    def _gpu_instances_of(self, device: Handle, info: _GiProfileInfo) -> list[_Gi]:
        # nvml.h: the array must hold as many instances as the profile allows (instanceCount).
        capacity = max(info.instance_count, 1)
        array = (self._nvml.c_nvmlGpuInstance_t * capacity)()
        count = ctypes.c_uint(capacity)
        self._call("nvmlDeviceGetGpuInstances", device, info.profile_id, array, ctypes.byref(count))
        return [self._gi_of(handle, info.slice_count) for handle in array[: count.value]]

    def _gi_of(self, handle: Handle, slice_count: int) -> _Gi:
        info = self._call("nvmlGpuInstanceGetInfo", handle)
        placement = Placement(int(info.placement.start), int(info.placement.size))
        return _Gi(handle, int(info.id), int(info.profileId), slice_count, placement)

    def _find_gi(self, gpu: int, gi_id: int) -> _Gi:
        """The GPU instance with this id, found by walking the GPU's instances."""
        gi = next((gi for gi in self._gpu_instances(self._device(gpu)) if gi.gi_id == gi_id), None)
        if gi is None:
            raise BackendError(
                "nvmlDeviceGetGpuInstances",
                NvmlError.NOT_FOUND,
                f"GPU {gpu} has no GPU instance {gi_id}",
            )
        return gi

    def _ci_profile_infos(self, gi_handle: Handle) -> list[_CiProfileInfo]:
        """The CI profiles a GPU instance supports, by trying each CI index constant."""
        shared = self._nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        found: dict[int, _CiProfileInfo] = {}
        for index in range(int(self._nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)):
            raw = self._ci_profile_info(gi_handle, index, shared)
            if raw is not None:
                info = _CiProfileInfo(int(raw.id), int(raw.sliceCount), int(raw.instanceCount))
                found.setdefault(info.profile_id, info)
        return list(found.values())

    def _ci_profile_info(self, gi_handle: Handle, index: int, shared: int) -> Any:
        """The CI profile info; recent bindings ask for v2 by default, which a driver may
        lack as it lacks the GI one (FUNCTION_NOT_FOUND): then v1 from there on."""
        name = "nvmlGpuInstanceGetComputeInstanceProfileInfo"
        args = self._ci_info_args
        try:
            return self._call_or_none(_ABSENT_PROFILE, name, gi_handle, index, shared, *args)
        except BackendError as err:
            if err.error is not NvmlError.FUNCTION_NOT_FOUND or args:
                raise
        self._ci_info_args = (1,)
        return self._call_or_none(_ABSENT_PROFILE, name, gi_handle, index, shared, 1)

    def _full_ci_profile(self, gi: _Gi, context: str) -> _CiProfileInfo:
        """The CI profile spanning the whole GI: the one whose slice count equals the GI's.

        The id comes from the returned info (it equals the index constant on every GPU
        known so far: 1c=0, 2c=1, 3c=2, 4c=3, 7c=4), not from the index itself.
        """
        full = next(
            (ci for ci in self._ci_profile_infos(gi.handle) if ci.slice_count == gi.slice_count),
            None,
        )
        if full is None:
            raise BackendError(
                "nvmlGpuInstanceGetComputeInstanceProfileInfo",
                NvmlError.NOT_SUPPORTED,
                f"{context}: no compute-instance profile with {gi.slice_count} slices",
            )
        return full

    def _compute_instances(self, gi_handle: Handle) -> list[_Ci]:
        """Every compute instance of a GPU instance (none for a half-created GI)."""
        return [
            ci
            for info in self._ci_profile_infos(gi_handle)
            for ci in self._compute_instances_of(gi_handle, info)
        ]

    def _compute_instances_of(self, gi_handle: Handle, info: _CiProfileInfo) -> list[_Ci]:
        capacity = max(info.instance_count, 1)
        array = (self._nvml.c_nvmlComputeInstance_t * capacity)()
        count = ctypes.c_uint(capacity)
        self._call(
            "nvmlGpuInstanceGetComputeInstances",
            gi_handle,
            info.profile_id,
            array,
            ctypes.byref(count),
        )
        return [self._ci_of(handle) for handle in array[: count.value]]

    def _ci_of(self, handle: Handle) -> _Ci:
        info = self._call("nvmlComputeInstanceGetInfo", handle)
        return _Ci(handle, int(info.id), int(info.profileId))

    # -- MIG devices and processes -------------------------------------------------------

    def _mig_devices(self, device: Handle) -> list[_MigDevice]:
        """The MIG device handles of a GPU (one per compute instance); NotFound = empty slot."""
        slots = int(self._call("nvmlDeviceGetMaxMigDeviceCount", device))
        handles = (
            self._call_or_none(_EMPTY_SLOT, "nvmlDeviceGetMigDeviceHandleByIndex", device, slot)
            for slot in range(slots)
        )
        return [
            _MigDevice(
                handle,
                int(self._call("nvmlDeviceGetGpuInstanceId", handle)),
                int(self._call("nvmlDeviceGetComputeInstanceId", handle)),
            )
            for handle in handles
            if handle is not None
        ]

    def _mig_uuids(self, device: Handle) -> dict[tuple[int, int], str]:
        """MIG UUID by (GI id, CI id). Re-read every time: UUIDs change when ids change."""
        return {
            (mig.gi_id, mig.ci_id): _text(self._call("nvmlDeviceGetUUID", mig.handle))
            for mig in self._mig_devices(device)
        }

    def _processes(self, handle: Handle, mig: _MigDevice | None) -> list[GpuProcess]:
        """Compute processes on a GPU handle (mig=None) or on one MIG device handle."""
        return [
            GpuProcess(
                pid=int(raw.pid),
                # usedGpuMemory is in bytes; pynvml turns "not available" into None.
                used_memory_mib=int(raw.usedGpuMemory or 0) // _MIB,
                gi_id=mig.gi_id if mig else _mig_id(raw.gpuInstanceId),
                ci_id=mig.ci_id if mig else _mig_id(raw.computeInstanceId),
            )
            for raw in self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        ]


class _NeverRaised(Exception):
    """Stands in for `NVMLLibraryMismatchError` when a binding does not define it."""


def _gi_profile_info(index: int, raw: Any, catalog_names: Mapping[int, str]) -> _GiProfileInfo:
    slice_count = int(raw.sliceCount)
    memory_mib = int(raw.memorySizeMB)
    known = catalog_names.get(int(raw.id))
    return _GiProfileInfo(
        index=index,
        profile_id=int(raw.id),
        name=known or _profile_name(raw, index, slice_count, memory_mib),
        slice_count=slice_count,
        memory_mib=memory_mib,
        instance_count=int(raw.instanceCount),
        sm_count=int(raw.multiprocessorCount),
    )


def _profile_name(raw: Any, index: int, slice_count: int, memory_mib: int) -> str:
    """`MIG 1g.10gb` -> `1g.10gb`; v1 info has no name, so one is derived from the sizes.

    The derived name rounds memory up to whole GiB, which matches NVML for some profiles
    only (an H200's 16384 MiB profile is `1g.18gb`, not `1g.16gb`): it is used only for a
    model the catalog does not know.
    """
    name = getattr(raw, "name", None)
    if name:
        return normalize_profile_name(_text(name))
    gib = math.ceil(memory_mib / 1024)
    return f"{slice_count}g.{gib}gb{_V1_NAME_SUFFIX.get(index, '')}"


def _mig_id(value: int) -> int | None:
    """A process's GI/CI id from NVML, or None when MIG is off (0xFFFFFFFF)."""
    return None if int(value) == _NO_MIG_ID else int(value)


def _text(value: object) -> str:
    """NVML strings: nvidia-ml-py >= 11.5 decodes char arrays to str, older releases do not."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _detail(context: str, err: BaseException) -> str:
    reason = str(err)
    return f"{context}: {reason}" if context else reason
