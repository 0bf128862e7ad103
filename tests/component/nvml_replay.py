"""A stand-in for `pynvml` that answers from a recording made by `migweaver probe --record`.

It serves exactly what the recording holds (`migweaver.agent.backends.nvml_record`
describes the format): each answer as NVML gave it, each recorded error raised as the
binding raises it (`NVMLError(code)`). It answers only read-only functions; asking it to
change anything is `ReplayRefused`, and asking something the recording does not hold is
`NotRecorded` (an AttributeError, as a function missing from an old binding is), never
an invented answer. Handles are NVML's real ctypes handle types; every call is recorded
in `calls`, like the simulating stub's.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pynvml as real

from migweaver.agent.backends.nvml_record import FORMAT, MUTATING_CALLS
from tests.component.pynvml_stub import Call, StubMisuse

FIXTURES = Path(__file__).parent / "fixtures"


class ReplayRefused(StubMisuse):
    """A mutating NVML function was called on a recording."""


class NotRecorded(AttributeError):
    """The recording holds no answer to this question."""


@dataclass(frozen=True)
class _Gpu:
    index: int


@dataclass(frozen=True)
class _Gi:
    gpu: int
    profile_id: int
    position: int


@dataclass(frozen=True)
class _Ci:
    gi: _Gi
    profile_id: int
    position: int


@dataclass(frozen=True)
class _Mig:
    gpu: int
    slot: int


def load(name: str) -> dict[str, Any]:
    """A recording from tests/component/fixtures."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


class NvmlReplay:
    """The `pynvml` API over one recording. Pass it as `NvmlBackend(nvml=replay)`."""

    def __init__(self, recording: dict[str, Any]) -> None:
        if recording.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} recording: {recording.get('format')!r}")
        self.recording = recording
        self.calls: list[Call] = []
        self.initialized = False
        self._objects: dict[int, object] = {}
        self._next = 0x7E0000001000

    def __getattr__(self, name: str) -> Any:
        if name in MUTATING_CALLS:
            raise ReplayRefused(f"{name} changes the GPU: a recording cannot")
        value = getattr(real, name)
        if callable(value) and name.startswith("nvml"):
            raise NotRecorded(f"the replay does not answer {name}")
        return value

    def called(self) -> list[str]:
        return [call.name for call in self.calls]

    # -- plumbing ------------------------------------------------------------------------

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        if name != "nvmlInit" and not self.initialized:
            _raise(real.NVML_ERROR_UNINITIALIZED)

    def _handle(self, obj: object, handle_type: Any) -> Any:
        for addr, known in self._objects.items():
            if known == obj:
                return ctypes.cast(ctypes.c_void_p(addr), handle_type)
        self._next += 0x40
        self._objects[self._next] = obj
        return ctypes.cast(ctypes.c_void_p(self._next), handle_type)

    def _resolve(self, handle: Any, kinds: tuple[type, ...]) -> Any:
        obj = self._objects.get(ctypes.cast(handle, ctypes.c_void_p).value or 0)
        if not isinstance(obj, kinds):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return obj

    def _device(self, index: int) -> dict[str, Any]:
        device: dict[str, Any] = self.recording["devices"][index]
        return device

    def _answer(self, data: Any, key: str) -> Any:
        if key not in data:
            raise NotRecorded(f"the recording holds no {key}")
        return _value(data[key])

    def _gpu_data(self, handle: Any) -> dict[str, Any]:
        gpu = self._resolve(handle, (_Gpu,))
        return self._device(gpu.index)

    def _mig_data(self, handle: Any) -> dict[str, Any] | None:
        obj = self._resolve(handle, (_Gpu, _Mig))
        if isinstance(obj, _Gpu):
            return None
        migs = self._device(obj.gpu)["migDevices"]
        data: dict[str, Any] = _value(migs[str(obj.slot)])
        return data

    def _gis(self, gpu: int, profile_id: int) -> list[dict[str, Any]]:
        found = self._device(gpu).get("gpuInstances", {}).get(str(profile_id))
        if found is None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        gis: list[dict[str, Any]] = _value(found)
        return gis

    def _gi_data(self, gi: _Gi) -> dict[str, Any]:
        return self._gis(gi.gpu, gi.profile_id)[gi.position]

    @staticmethod
    def _fill(array: Any, count_ref: Any, handles: list[Any]) -> None:
        count = count_ref._obj
        if len(array) < len(handles) or count.value < len(handles):
            count.value = len(handles)
            _raise(real.NVML_ERROR_INSUFFICIENT_SIZE)
        for slot, handle in enumerate(handles):
            array[slot] = handle
        count.value = len(handles)

    # -- the pynvml API ------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return str(self._answer(self.recording, "nvmlSystemGetDriverVersion"))

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return str(self._answer(self.recording, "nvmlSystemGetNVMLVersion"))

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return int(self._answer(self.recording, "nvmlDeviceGetCount"))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.recording["devices"]):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return self._handle(_Gpu(index), real.c_nvmlDevice_t)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        mig = self._mig_data(handle)
        data = mig if mig is not None else self._gpu_data(handle)
        return str(self._answer(data, "nvmlDeviceGetUUID"))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return str(self._answer(self._gpu_data(handle), "nvmlDeviceGetName"))

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._enter("nvmlDeviceGetMemoryInfo", handle)
        total = int(self._answer(self._gpu_data(handle), "nvmlDeviceGetMemoryInfo")["total"])
        return real.c_nvmlMemory_t(total, total, 0)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        self._enter("nvmlDeviceGetPciInfo", handle)
        data = self._answer(self._gpu_data(handle), "nvmlDeviceGetPciInfo")
        info = real.nvmlPciInfo_t()
        info.pciDeviceId = int(data["pciDeviceId"])
        if data.get("busId"):
            info.busId = str(data["busId"]).encode()
        return info

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetMinorNumber", handle)
        return int(self._answer(self._gpu_data(handle), "nvmlDeviceGetMinorNumber"))

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        self._enter("nvmlDeviceGetMigMode", handle)
        return [int(v) for v in self._answer(self._gpu_data(handle), "nvmlDeviceGetMigMode")]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
        return int(self._answer(self._gpu_data(handle), "nvmlDeviceGetMaxMigDeviceCount"))

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, handle: Any, profile: int, version: int = 2
    ) -> Any:
        self._enter("nvmlDeviceGetGpuInstanceProfileInfo", handle, profile, version)
        table = self._answer(self._gpu_data(handle), "nvmlDeviceGetGpuInstanceProfileInfo")
        if f"v{version}" not in table:
            raise NotRecorded(f"no v{version} profile info in the recording")
        versioned = table[f"v{version}"]
        if str(profile) not in versioned:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        data = _value(versioned[str(profile)])
        info = (
            real.c_nvmlGpuInstanceProfileInfo_v2_t()
            if version == 2
            else real.c_nvmlGpuInstanceProfileInfo_t()
        )
        info.id = data["id"]
        info.sliceCount = data["sliceCount"]
        info.instanceCount = data["instanceCount"]
        info.multiprocessorCount = data["multiprocessorCount"]
        info.memorySizeMB = data["memorySizeMB"]
        if version == 2 and data.get("name"):
            info.name = str(data["name"]).encode()
        return info

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, handle: Any, profile_id: int, placements_ref: Any, count_ref: Any
    ) -> int:
        self._enter(
            "nvmlDeviceGetGpuInstancePossiblePlacements",
            handle,
            profile_id,
            placements_ref,
            count_ref,
        )
        table = self._answer(self._gpu_data(handle), "nvmlDeviceGetGpuInstancePossiblePlacements")
        if str(profile_id) not in table:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        placements = _value(table[str(profile_id)])
        count = count_ref._obj
        if placements_ref is None:
            count.value = len(placements)
            return int(real.NVML_SUCCESS)
        if count.value < len(placements):
            count.value = len(placements)
            _raise(real.NVML_ERROR_INSUFFICIENT_SIZE)
        for slot, (start, size) in enumerate(placements):
            placements_ref[slot] = real.c_nvmlGpuInstancePlacement_t(start, size)
        count.value = len(placements)
        return int(real.NVML_SUCCESS)

    def nvmlDeviceGetGpuInstances(
        self, handle: Any, profile_id: int, array: Any, count_ref: Any
    ) -> int:
        self._enter("nvmlDeviceGetGpuInstances", handle, profile_id, array, count_ref)
        gpu = self._resolve(handle, (_Gpu,))
        gis = self._gis(gpu.index, profile_id)
        handles = [
            self._handle(_Gi(gpu.index, profile_id, i), real.c_nvmlGpuInstance_t)
            for i in range(len(gis))
        ]
        self._fill(array, count_ref, handles)
        return int(real.NVML_SUCCESS)

    def nvmlGpuInstanceGetInfo(self, handle: Any) -> Any:
        self._enter("nvmlGpuInstanceGetInfo", handle)
        gi = self._resolve(handle, (_Gi,))
        data = self._gi_data(gi)
        info = real.c_nvmlGpuInstanceInfo_t()
        info.id = data["id"]
        info.profileId = data["profileId"]
        info.placement = real.c_nvmlGpuInstancePlacement_t(*data["placement"])
        return info

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, handle: Any, profile: int, eng_profile: int, version: int = 2
    ) -> Any:
        self._enter(
            "nvmlGpuInstanceGetComputeInstanceProfileInfo", handle, profile, eng_profile, version
        )
        gi = self._resolve(handle, (_Gi,))
        table = self._gi_data(gi)["computeInstanceProfileInfo"].get(f"v{version}")
        if table is None:
            raise NotRecorded(f"no v{version} CI profile info in the recording")
        if str(profile) not in table:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        data = _value(table[str(profile)])
        info = (
            real.c_nvmlComputeInstanceProfileInfo_v2_t()
            if version == 2
            else real.c_nvmlComputeInstanceProfileInfo_t()
        )
        info.id = data["id"]
        info.sliceCount = data["sliceCount"]
        info.instanceCount = data["instanceCount"]
        info.multiprocessorCount = data["multiprocessorCount"]
        return info

    def nvmlGpuInstanceGetComputeInstances(
        self, handle: Any, profile_id: int, array: Any, count_ref: Any
    ) -> int:
        self._enter("nvmlGpuInstanceGetComputeInstances", handle, profile_id, array, count_ref)
        gi = self._resolve(handle, (_Gi,))
        found = self._gi_data(gi)["computeInstances"].get(str(profile_id))
        cis = [] if found is None else _value(found)
        handles = [
            self._handle(_Ci(gi, profile_id, i), real.c_nvmlComputeInstance_t)
            for i in range(len(cis))
        ]
        self._fill(array, count_ref, handles)
        return int(real.NVML_SUCCESS)

    def nvmlComputeInstanceGetInfo(self, handle: Any) -> Any:
        self._enter("nvmlComputeInstanceGetInfo", handle)
        ci = self._resolve(handle, (_Ci,))
        data = _value(self._gi_data(ci.gi)["computeInstances"][str(ci.profile_id)])[ci.position]
        info = real.c_nvmlComputeInstanceInfo_t()
        info.id = data["id"]
        info.profileId = data["profileId"]
        return info

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, slot: int) -> Any:
        self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        gpu = self._resolve(handle, (_Gpu,))
        migs = self._device(gpu.index).get("migDevices", {})
        if str(slot) not in migs:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        _value(migs[str(slot)])  # a recorded NOT_FOUND (empty slot) is raised here
        return self._handle(_Mig(gpu.index, slot), real.c_nvmlDevice_t)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetGpuInstanceId", handle)
        mig = self._mig_data(handle)
        if mig is None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        return int(mig["nvmlDeviceGetGpuInstanceId"])

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetComputeInstanceId", handle)
        mig = self._mig_data(handle)
        if mig is None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        return int(mig["nvmlDeviceGetComputeInstanceId"])

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        mig = self._mig_data(handle)
        data = mig if mig is not None else self._gpu_data(handle)
        return [
            real.nvmlStructToFriendlyObject(
                real.c_nvmlProcessInfo_v3_t(
                    p["pid"], p["usedGpuMemory"] or 0, p["gpuInstanceId"], p["computeInstanceId"]
                )
            )
            for p in self._answer(data, "nvmlDeviceGetComputeRunningProcesses")
        ]


def _value(answer: Any) -> Any:
    """The recorded answer, or the recorded NVML error raised as the binding raises it."""
    if isinstance(answer, dict) and set(answer) == {"error", "name"}:
        _raise(int(answer["error"]))
    return answer


def _raise(code: int) -> NoReturn:
    raise real.NVMLError(code)
