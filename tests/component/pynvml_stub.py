"""A stand-in for the `pynvml` module: simulated MIG GPUs behind NVML's real Python API.

It reuses the real binding's ctypes structures, constants and exception classes (they work
without a driver), returns NVML's real structure and handle types, records every call, and
checks arguments the way the C library would see them:

- handles must be the right NVML handle type (`nvmlDevice_t`, `nvmlGpuInstance_t`, ...);
- a placement must arrive by reference (`byref` / `pointer`), never by value or as a tuple;
- an array must be a ctypes array of the right element type, big enough for what NVML may
  write into it, with its count passed by reference;
- profile *ids* and profile *indexes* are distinct number spaces, as on a real GPU: an index
  passed where an id is expected is either unknown (INVALID_ARGUMENT) or a different profile.

Misuse the C library would not even detect (it would read garbage or write past a buffer)
raises `StubMisuse`, which is not an `NVMLError`, so no backend can swallow it.

Only the functions the NVML backend uses are simulated; any other `nvml*` function raises
AttributeError, while constants, structs and exception classes come from the real module.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pynvml as real

from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.profiles import MigProfile, Placement

CArgObject = type(ctypes.byref(ctypes.c_uint()))
NO_MIG_ID = 0xFFFFFFFF
MIB = 1 << 20
# CI profile index -> compute slices. CI profile ids equal the index constants
# (docs/mig-reference.md section 1: 1c=0, 2c=1, 3c=2, 4c=3, 7c=4).
CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}
_UUID_NAMESPACE = uuid.UUID("6ba7b812-9dad-11d1-80b4-00c04fd430c8")


class StubMisuse(TypeError):
    """An argument the C library would misread: wrong type, by value, too small a buffer."""


def nvml_raise(code: int) -> NoReturn:
    """Fail as the binding does: `NVMLError(code)` becomes its `NVMLError_*` subclass."""
    raise real.NVMLError(code)


@dataclass(frozen=True)
class Call:
    """One recorded call: the pynvml function name and the arguments as passed."""

    name: str
    args: tuple[Any, ...]


@dataclass
class StubProcess:
    pid: int
    used_mib: int
    gi_id: int | None = None
    ci_id: int | None = None


@dataclass
class StubCi:
    ci_id: int
    profile_id: int
    slices: int
    mig_slot: int
    uuid: str
    addr: int
    mig_addr: int


@dataclass
class StubGi:
    gi_id: int
    profile: MigProfile
    placement: Placement
    addr: int
    cis: dict[int, StubCi] = field(default_factory=dict)

    def used_slices(self) -> int:
        return sum(ci.slices for ci in self.cis.values())


@dataclass
class StubGpu:
    """One simulated GPU. `profiles` empty = not MIG capable."""

    name: str
    uuid: str
    pci_device_id: int
    memory_mib: int
    profiles: tuple[MigProfile, ...] = ()
    compute_slices: int = 7
    mig_current: bool = False
    mig_pending: bool = False
    # The mode switch waits for a GPU reset even when idle (docs/mig-reference.md section 4).
    reset_required: bool = False
    # Extra GI profile indexes answering with an existing profile id (to test dedup).
    alias_indexes: dict[int, int] = field(default_factory=dict)
    gis: dict[int, StubGi] = field(default_factory=dict)
    processes: list[StubProcess] = field(default_factory=list)
    addr: int = 0

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    def profile_by_id(self, profile_id: int) -> MigProfile | None:
        return next((p for p in self.profiles if p.profile_id == profile_id), None)

    def profile_by_index(self, index: int) -> MigProfile | None:
        if index in self.alias_indexes:
            return self.profile_by_id(self.alias_indexes[index])
        return next((p for p in self.profiles if p.index == index), None)

    def cis(self) -> Iterator[tuple[StubGi, StubCi]]:
        for gi in self.gis.values():
            for ci in gi.cis.values():
                yield gi, ci


def catalog_gpu(model_key: str, name: str, serial: int, *, mig: bool = True) -> StubGpu:
    """A MIG GPU whose profile table is the catalog's for `model_key`."""
    model = get_model(model_key)
    assert model is not None, model_key
    return StubGpu(
        name=name,
        uuid=f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{model_key}/{serial}')}",
        pci_device_id=(model.pci_device_ids[0] << 16) | 0x10DE,
        memory_mib=model.memory_mib,
        profiles=model.profiles,
        compute_slices=model.compute_slices,
        mig_current=mig,
        mig_pending=mig,
    )


def a100_80gb(*, mig: bool = True, serial: int = 0) -> StubGpu:
    return catalog_gpu("A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", serial, mig=mig)


def h100_sxm(*, mig: bool = True, serial: int = 1) -> StubGpu:
    return catalog_gpu("H100-SXM5-80GB", "NVIDIA H100 80GB HBM3", serial, mig=mig)


def tesla_t4() -> StubGpu:
    """A GPU without MIG: GetMigMode answers NotSupported."""
    return StubGpu(
        name="Tesla T4",
        uuid="GPU-9a1c3c43-52bb-4f3e-8b8e-0c2f4a3e7d11",
        pci_device_id=(0x1EB8 << 16) | 0x10DE,
        memory_mib=15360,
    )


class PynvmlStub:
    """The `pynvml` API over simulated GPUs. Pass it as `NvmlBackend(nvml=stub)`."""

    def __init__(
        self,
        gpus: list[StubGpu],
        *,
        legacy_binding: bool = False,
        parent_processes_visible: bool = True,
        v2_profile_info: bool = True,
    ) -> None:
        self.gpus = gpus
        # An old nvidia-ml-py: no v2 profile-info struct, bytes instead of str.
        self.legacy_binding = legacy_binding
        # A driver without nvmlDeviceGetGpuInstanceProfileInfoV: version=2 answers
        # FUNCTION_NOT_FOUND, as on a real H200 with driver 580.159.04.
        self.v2_profile_info = v2_profile_info
        # In MIG mode the GPU handle lists processes only to privileged callers.
        self.parent_processes_visible = parent_processes_visible
        self.calls: list[Call] = []
        self.init_error: int | None = None
        self.initialized = False
        self._faults: dict[str, list[int]] = {}
        self._addresses = itertools.count(0x7F0000001000, 0x40)
        self._objects: dict[int, object] = {}
        for gpu in gpus:
            gpu.addr = self._register(gpu)

    # -- test helpers --------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        hidden = self.legacy_binding and name == "c_nvmlGpuInstanceProfileInfo_v2_t"
        if hidden or inspect.isfunction(getattr(real, name, None)):
            raise AttributeError(f"pynvml stub does not provide {name}")
        return getattr(real, name)

    def fail(self, name: str, code: int, times: int = 1) -> None:
        """Make the next `times` calls of `name` raise NVMLError(code)."""
        self._faults.setdefault(name, []).extend([code] * times)

    def calls_to(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]

    def called(self) -> list[str]:
        return [call.name for call in self.calls]

    def start_process(
        self,
        gpu: int,
        pid: int,
        used_mib: int = 1024,
        gi_id: int | None = None,
        ci_id: int | None = None,
    ) -> None:
        target = self.gpus[gpu]
        if gi_id is not None:
            assert ci_id in target.gis[gi_id].cis, "a process runs on a compute instance"
        target.processes.append(StubProcess(pid, used_mib, gi_id, ci_id))

    def add_instance(
        self, gpu: int, profile_id: int, placement: Placement, *, with_ci: bool = True
    ) -> int:
        """Create a GI (and its full CI) directly, bypassing the call log."""
        target = self.gpus[gpu]
        gi = self._new_gi(target, profile_id, placement)
        if with_ci:
            self._new_ci(
                target, gi, next(i for i, s in CI_SLICES.items() if s == gi.profile.compute_slices)
            )
        return gi.gi_id

    def mig_uuid(self, gpu: int, gi_id: int, ci_id: int) -> str:
        return self.gpus[gpu].gis[gi_id].cis[ci_id].uuid

    # -- argument checks, as the C library would see them --------------------------------

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        if name != "nvmlInit" and not self.initialized:
            nvml_raise(real.NVML_ERROR_UNINITIALIZED)
        faults = self._faults.get(name)
        if faults:
            nvml_raise(faults.pop(0))

    def _register(self, obj: object) -> int:
        addr = next(self._addresses)
        self._objects[addr] = obj
        return addr

    def _resolve(self, handle: Any, handle_type: Any, what: str) -> object:
        if not isinstance(handle, handle_type):
            raise StubMisuse(
                f"{what}: expected {handle_type.__name__}, got {type(handle).__name__}"
            )
        obj = self._objects.get(ctypes.cast(handle, ctypes.c_void_p).value or 0)
        if obj is None:  # a stale or NULL handle
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return obj

    def _gpu(self, handle: Any) -> StubGpu:
        obj = self._resolve(handle, real.c_nvmlDevice_t, "device")
        if not isinstance(obj, StubGpu):  # a MIG device handle where the GPU is required
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return obj

    def _mig_gpu(self, handle: Any) -> StubGpu:
        gpu = self._gpu(handle)
        if not gpu.mig_capable or not gpu.mig_current:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _gi(self, handle: Any) -> tuple[StubGpu, StubGi]:
        obj = self._resolve(handle, real.c_nvmlGpuInstance_t, "gpuInstance")
        assert isinstance(obj, StubGi)
        return self._owner(obj), obj

    def _ci(self, handle: Any) -> tuple[StubGpu, StubGi, StubCi]:
        obj = self._resolve(handle, real.c_nvmlComputeInstance_t, "computeInstance")
        assert isinstance(obj, StubCi)
        gpu, gi = next((gpu, gi) for gpu in self.gpus for gi, ci in gpu.cis() if ci is obj)
        return gpu, gi, obj

    def _owner(self, gi: StubGi) -> StubGpu:
        return next(gpu for gpu in self.gpus if gi in gpu.gis.values())

    @staticmethod
    def _uint(value: Any, what: str) -> int:
        # ctypes converts only ints for an `unsigned int` parameter.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
            raise StubMisuse(f"{what}: expected an unsigned int, got {value!r}")
        return value

    @staticmethod
    def _pointee(ref: Any, ctype: Any, what: str) -> Any:
        """The object behind a `byref(...)` / `pointer(...)` argument of type `ctype`."""
        if isinstance(ref, CArgObject) and isinstance(ref._obj, ctype):
            return ref._obj
        if isinstance(ref, ctypes.POINTER(ctype)) and ref:
            return ref.contents
        raise StubMisuse(f"{what}: expected a pointer to {ctype.__name__}, got {ref!r}")

    @staticmethod
    def _array(array: Any, element: Any, needed: int, what: str) -> Any:
        if not isinstance(array, ctypes.Array) or array._type_ is not element:
            raise StubMisuse(
                f"{what}: expected a ctypes array of {element.__name__}, got {array!r}"
            )
        if len(array) < needed:
            raise StubMisuse(f"{what}: array of {len(array)} but NVML may write {needed} entries")
        return array

    def _text(self, text: str) -> str | bytes:
        return text.encode() if self.legacy_binding else text

    # -- simulation ----------------------------------------------------------------------

    def _new_gi(self, gpu: StubGpu, profile_id: int, placement: Placement) -> StubGi:
        profile = gpu.profile_by_id(profile_id)
        if profile is None:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        if placement not in profile.placements:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        same_profile = [gi for gi in gpu.gis.values() if gi.profile.profile_id == profile_id]
        overlaps = any(gi.placement.overlaps(placement) for gi in gpu.gis.values())
        if overlaps or len(same_profile) >= profile.max_count:
            nvml_raise(real.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi_id = next(i for i in itertools.count(1) if i not in gpu.gis)
        gi = StubGi(gi_id, profile, placement, addr=0)
        gi.addr = self._register(gi)
        gpu.gis[gi_id] = gi
        return gi

    def _new_ci(self, gpu: StubGpu, gi: StubGi, ci_profile_id: int) -> StubCi:
        slices = CI_SLICES.get(ci_profile_id)
        if slices is None or slices > gi.profile.compute_slices:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        if gi.used_slices() + slices > gi.profile.compute_slices:
            nvml_raise(real.NVML_ERROR_INSUFFICIENT_RESOURCES)
        ci_id = next(i for i in itertools.count(0) if i not in gi.cis)
        used_slots = {ci.mig_slot for _, ci in gpu.cis()}
        slot = next(i for i in itertools.count(0) if i not in used_slots)
        # MIG UUIDs derive from (parent GPU, GI id, CI id) (docs/mig-reference.md section 4).
        mig_uuid = f"MIG-{uuid.uuid5(_UUID_NAMESPACE, f'{gpu.uuid}/{gi.gi_id}/{ci_id}')}"
        ci = StubCi(ci_id, ci_profile_id, slices, slot, mig_uuid, addr=0, mig_addr=0)
        ci.addr = self._register(ci)
        ci.mig_addr = self._register(("mig", ci))
        gi.cis[ci_id] = ci
        return ci

    def _mig_device(self, handle: Any) -> tuple[StubGpu, StubGi, StubCi] | None:
        """(gpu, gi, ci) of a MIG device handle, None for a GPU handle."""
        obj = self._resolve(handle, real.c_nvmlDevice_t, "device")
        if isinstance(obj, StubGpu):
            return None
        assert isinstance(obj, tuple)
        ci = obj[1]
        gpu, gi = next((gpu, gi) for gpu in self.gpus for gi, c in gpu.cis() if c is ci)
        return gpu, gi, ci

    def _handle(self, addr: int, handle_type: Any) -> Any:
        return ctypes.cast(ctypes.c_void_p(addr), handle_type)

    # -- the pynvml API ------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            nvml_raise(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._enter("nvmlSystemGetDriverVersion")
        return self._text("999.99.99")

    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        self._enter("nvmlSystemGetNVMLVersion")
        return self._text("99.999.99.99")

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: Any) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if self._uint(index, "index") >= len(self.gpus):
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return self._handle(self.gpus[index].addr, real.c_nvmlDevice_t)

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        self._enter("nvmlDeviceGetUUID", handle)
        mig = self._mig_device(handle)
        return self._text(mig[2].uuid if mig else self._gpu(handle).uuid)

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        self._enter("nvmlDeviceGetName", handle)
        return self._text(self._gpu(handle).name)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._enter("nvmlDeviceGetMemoryInfo", handle)
        total = self._gpu(handle).memory_mib * MIB
        return real.c_nvmlMemory_t(total, total, 0)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        self._enter("nvmlDeviceGetPciInfo", handle)
        info = real.nvmlPciInfo_t()
        gpu = self._gpu(handle)
        info.pciDeviceId = gpu.pci_device_id
        info.busId = f"00000000:{0x17 + self.gpus.index(gpu):02X}:00.0".encode()
        return info

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetMinorNumber", handle)
        return self.gpus.index(self._gpu(handle))

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        self._enter("nvmlDeviceGetMigMode", handle)
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        return [int(gpu.mig_current), int(gpu.mig_pending)]

    def nvmlDeviceSetMigMode(self, handle: Any, mode: Any) -> int:
        self._enter("nvmlDeviceSetMigMode", handle, mode)
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        if self._uint(mode, "mode") not in (
            real.NVML_DEVICE_MIG_DISABLE,
            real.NVML_DEVICE_MIG_ENABLE,
        ):
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        gpu.mig_pending = bool(mode)
        # The activation status is returned, not raised (docs/mig-reference.md section 1).
        if gpu.processes:
            return int(real.NVML_ERROR_IN_USE)
        if gpu.reset_required:
            return int(real.NVML_ERROR_RESET_REQUIRED)
        self.reset_gpu(gpu)
        return int(real.NVML_SUCCESS)

    def reset_gpu(self, gpu: StubGpu) -> None:
        """A GPU reset: the pending mode takes effect and instances are gone."""
        gpu.mig_current = gpu.mig_pending
        for gi in gpu.gis.values():
            for ci in gi.cis.values():
                del self._objects[ci.addr], self._objects[ci.mig_addr]
            del self._objects[gi.addr]
        gpu.gis.clear()

    def nvmlDeviceGetGpuInstanceProfileInfo(self, device: Any, profile: Any, *version: Any) -> Any:
        self._enter("nvmlDeviceGetGpuInstanceProfileInfo", device, profile, *version)
        if self.legacy_binding and version:
            raise TypeError("nvmlDeviceGetGpuInstanceProfileInfo() takes 2 positional arguments")
        use_v2 = not self.legacy_binding and (version or (2,))[0] == 2
        if use_v2 and not self.v2_profile_info:
            nvml_raise(real.NVML_ERROR_FUNCTION_NOT_FOUND)
        # Answered with MIG mode off too, as a real H200 does (only MIG capability counts).
        gpu = self._gpu(device)
        if not gpu.mig_capable:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        if self._uint(profile, "profile") >= real.NVML_GPU_INSTANCE_PROFILE_COUNT:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        found = gpu.profile_by_index(profile)
        if found is None:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        info = (
            real.c_nvmlGpuInstanceProfileInfo_v2_t()
            if use_v2
            else real.c_nvmlGpuInstanceProfileInfo_t()
        )
        info.id = found.profile_id
        info.sliceCount = found.compute_slices
        info.instanceCount = found.max_count
        info.multiprocessorCount = found.sm_count or 0
        info.memorySizeMB = found.memory_mib
        if use_v2:
            info.name = f"MIG {found.name}".encode()
        return info

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, device: Any, profileId: Any, placementsRef: Any, countRef: Any
    ) -> int:
        self._enter(
            "nvmlDeviceGetGpuInstancePossiblePlacements", device, profileId, placementsRef, countRef
        )
        gpu = self._gpu(device)
        count = self._pointee(countRef, ctypes.c_uint, "count")
        profile = gpu.profile_by_id(self._uint(profileId, "profileId"))
        if profile is None:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        placements = profile.placements
        if placementsRef is None:  # nvml.h: NULL asks for the number of placements
            count.value = len(placements)
            return int(real.NVML_SUCCESS)
        array = self._array(
            placementsRef, real.c_nvmlGpuInstancePlacement_t, count.value, "placements"
        )
        if count.value < len(placements):
            count.value = len(placements)
            nvml_raise(real.NVML_ERROR_INSUFFICIENT_SIZE)
        for slot, placement in enumerate(placements):
            array[slot] = real.c_nvmlGpuInstancePlacement_t(placement.start, placement.size)
        count.value = len(placements)
        return int(real.NVML_SUCCESS)

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, device: Any, profileId: Any, placement: Any
    ) -> Any:
        self._enter("nvmlDeviceCreateGpuInstanceWithPlacement", device, profileId, placement)
        profile_id = self._uint(profileId, "profileId")
        struct = self._pointee(placement, real.c_nvmlGpuInstancePlacement_t, "placement")
        gpu = self._mig_gpu(device)
        gi = self._new_gi(gpu, profile_id, Placement(struct.start, struct.size))
        return self._handle(gi.addr, real.c_nvmlGpuInstance_t)

    def nvmlDeviceCreateGpuInstance(self, device: Any, profileId: Any) -> Any:
        """Recorded so tests can assert it is never used (it picks its own placement)."""
        self._enter("nvmlDeviceCreateGpuInstance", device, profileId)
        gpu = self._mig_gpu(device)
        profile = gpu.profile_by_id(self._uint(profileId, "profileId"))
        if profile is None:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        free = [
            p
            for p in profile.placements
            if not any(gi.placement.overlaps(p) for gi in gpu.gis.values())
        ]
        if not free:
            nvml_raise(real.NVML_ERROR_INSUFFICIENT_RESOURCES)
        return self._handle(self._new_gi(gpu, profileId, free[0]).addr, real.c_nvmlGpuInstance_t)

    def nvmlDeviceGetGpuInstances(
        self, device: Any, profileId: Any, gpuInstancesRef: Any, countRef: Any
    ) -> int:
        self._enter("nvmlDeviceGetGpuInstances", device, profileId, gpuInstancesRef, countRef)
        gpu = self._mig_gpu(device)
        count = self._pointee(countRef, ctypes.c_uint, "count")
        profile = gpu.profile_by_id(self._uint(profileId, "profileId"))
        if profile is None:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        # nvml.h: the buffer must hold every instance the profile supports (instanceCount).
        array = self._array(
            gpuInstancesRef, real.c_nvmlGpuInstance_t, profile.max_count, "gpuInstances"
        )
        found = [gi for gi in gpu.gis.values() if gi.profile.profile_id == profile.profile_id]
        for slot, gi in enumerate(found):
            array[slot] = self._handle(gi.addr, real.c_nvmlGpuInstance_t)
        count.value = len(found)
        return int(real.NVML_SUCCESS)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:
        self._enter("nvmlGpuInstanceGetInfo", gpuInstance)
        gpu, gi = self._gi(gpuInstance)
        placement = real.c_nvmlGpuInstancePlacement_t(gi.placement.start, gi.placement.size)
        device = self._handle(gpu.addr, real.c_nvmlDevice_t)
        return real.c_nvmlGpuInstanceInfo_t(device, gi.gi_id, gi.profile.profile_id, placement)

    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:
        self._enter("nvmlGpuInstanceDestroy", gpuInstance)
        gpu, gi = self._gi(gpuInstance)
        if gi.cis or any(p.gi_id == gi.gi_id for p in gpu.processes):
            nvml_raise(real.NVML_ERROR_IN_USE)
        del gpu.gis[gi.gi_id]
        del self._objects[gi.addr]
        return int(real.NVML_SUCCESS)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, device: Any, profile: Any, engProfile: Any, version: int = 2
    ) -> Any:
        self._enter(
            "nvmlGpuInstanceGetComputeInstanceProfileInfo", device, profile, engProfile, version
        )
        _, gi = self._gi(device)
        if self._uint(engProfile, "engProfile") >= real.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        if self._uint(profile, "profile") >= real.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        slices = CI_SLICES.get(profile)
        if slices is None or slices > gi.profile.compute_slices:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        info = (
            real.c_nvmlComputeInstanceProfileInfo_v2_t()
            if version == 2
            else real.c_nvmlComputeInstanceProfileInfo_t()
        )
        info.id = profile
        info.sliceCount = slices
        info.instanceCount = gi.profile.compute_slices // slices
        info.multiprocessorCount = (gi.profile.sm_count or 0) * slices // gi.profile.compute_slices
        if version == 2:
            info.name = f"MIG {slices}c.{gi.profile.name}".encode()
        return info

    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: Any) -> Any:
        self._enter("nvmlGpuInstanceCreateComputeInstance", gpuInstance, profileId)
        gpu, gi = self._gi(gpuInstance)
        ci = self._new_ci(gpu, gi, self._uint(profileId, "profileId"))
        return self._handle(ci.addr, real.c_nvmlComputeInstance_t)

    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: Any, computeInstancesRef: Any, countRef: Any
    ) -> int:
        self._enter(
            "nvmlGpuInstanceGetComputeInstances",
            gpuInstance,
            profileId,
            computeInstancesRef,
            countRef,
        )
        _, gi = self._gi(gpuInstance)
        count = self._pointee(countRef, ctypes.c_uint, "count")
        slices = CI_SLICES.get(self._uint(profileId, "profileId"))
        if slices is None or slices > gi.profile.compute_slices:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        capacity = gi.profile.compute_slices // slices
        array = self._array(
            computeInstancesRef, real.c_nvmlComputeInstance_t, capacity, "computeInstances"
        )
        found = [ci for ci in gi.cis.values() if ci.profile_id == profileId]
        for slot, ci in enumerate(found):
            array[slot] = self._handle(ci.addr, real.c_nvmlComputeInstance_t)
        count.value = len(found)
        return int(real.NVML_SUCCESS)

    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:
        self._enter("nvmlComputeInstanceGetInfo", computeInstance)
        gpu, gi, ci = self._ci(computeInstance)
        return real.c_nvmlComputeInstanceInfo_t(
            self._handle(gpu.addr, real.c_nvmlDevice_t),
            self._handle(gi.addr, real.c_nvmlGpuInstance_t),
            ci.ci_id,
            ci.profile_id,
            real.c_nvmlComputeInstancePlacement_t(0, ci.slices),
        )

    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:
        self._enter("nvmlComputeInstanceDestroy", computeInstance)
        gpu, gi, ci = self._ci(computeInstance)
        if any(p.gi_id == gi.gi_id and p.ci_id == ci.ci_id for p in gpu.processes):
            nvml_raise(real.NVML_ERROR_IN_USE)
        del gi.cis[ci.ci_id]
        del self._objects[ci.addr]
        del self._objects[ci.mig_addr]
        return int(real.NVML_SUCCESS)

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount", device)
        gpu = self._gpu(device)
        if not gpu.mig_capable:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        return gpu.compute_slices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: Any) -> Any:
        self._enter("nvmlDeviceGetMigDeviceHandleByIndex", device, index)
        gpu = self._mig_gpu(device)
        if self._uint(index, "index") >= gpu.compute_slices:
            nvml_raise(real.NVML_ERROR_INVALID_ARGUMENT)
        ci = next((ci for _, ci in gpu.cis() if ci.mig_slot == index), None)
        if ci is None:
            nvml_raise(real.NVML_ERROR_NOT_FOUND)
        return self._handle(ci.mig_addr, real.c_nvmlDevice_t)

    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int:
        self._enter("nvmlDeviceGetGpuInstanceId", device)
        mig = self._mig_device(device)
        if mig is None:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        return mig[1].gi_id

    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int:
        self._enter("nvmlDeviceGetComputeInstanceId", device)
        mig = self._mig_device(device)
        if mig is None:
            nvml_raise(real.NVML_ERROR_NOT_SUPPORTED)
        return mig[2].ci_id

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        mig = self._mig_device(handle)
        if mig is not None:
            gpu, gi, ci = mig
            processes = [p for p in gpu.processes if (p.gi_id, p.ci_id) == (gi.gi_id, ci.ci_id)]
        else:
            gpu = self._gpu(handle)
            hidden = gpu.mig_current and not self.parent_processes_visible
            processes = [] if hidden else gpu.processes
        # The binding returns "friendly objects" built from nvmlProcessInfo_v3_t.
        return [
            real.nvmlStructToFriendlyObject(
                real.c_nvmlProcessInfo_v3_t(
                    p.pid,
                    p.used_mib * MIB,
                    NO_MIG_ID if p.gi_id is None else p.gi_id,
                    NO_MIG_ID if p.ci_id is None else p.ci_id,
                )
            )
            for p in processes
        ]
