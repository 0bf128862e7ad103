"""Read-only access to NVML, and a recording of its raw answers for tests and bug reports.

`ReadOnlyNvml` wraps the `pynvml` module and refuses every NVML function that is not on
the `READ_ONLY_CALLS` list, so a command built on it (`migweaver probe`) cannot change a
GPU whatever its code does: switching MIG mode, creating or destroying an instance,
resetting the GPU are all refused before they reach the driver.

`record_nvml` asks NVML every read-only question `NvmlBackend` asks, and keeps each
answer as NVML gave it (numbers and strings as returned, errors as their NVML code), as
JSON. A replaying stand-in for `pynvml` (tests/component/nvml_replay.py) serves such a
recording back, so `NvmlBackend`, the catalog and the probe can be tested against a real
GPU's answers on a machine without one. The format is `FORMAT` (docs/agent.md):

    {"format": ..., "source": ..., "nvmlSystemGetDriverVersion": ..., "nvmlDeviceGetCount": N,
     "devices": [{"nvmlDeviceGetUUID": ..., "nvmlDeviceGetName": ...,
                  "nvmlDeviceGetMemoryInfo": {"total": BYTES}, "nvmlDeviceGetPciInfo":
                  {"pciDeviceId": ..., "busId": ...}, "nvmlDeviceGetMinorNumber": ...,
                  "nvmlDeviceGetMigMode": [CURRENT, PENDING],
                  "nvmlDeviceGetMaxMigDeviceCount": ...,
                  "nvmlDeviceGetGpuInstanceProfileInfo": {"v2": {INDEX: INFO}, "v1": {...}},
                  "nvmlDeviceGetGpuInstancePossiblePlacements": {PROFILE_ID: [[START, SIZE]]},
                  "nvmlDeviceGetComputeRunningProcesses": [PROCESS, ...],
                  "gpuInstances": {PROFILE_ID: [GI, ...]}, "migDevices": {SLOT: MIG}}]}

where any answer may instead be `{"error": CODE, "name": "NVML_ERROR_..."}`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import partial
from typing import Any, Final

__all__ = [
    "FORMAT",
    "MUTATING_CALLS",
    "READ_ONLY_CALLS",
    "ReadOnlyNvml",
    "RefusedCall",
    "record_nvml",
]

FORMAT: Final = "migweaver.nvml-recording/1"

READ_ONLY_CALLS: Final = frozenset(
    {
        "nvmlInit",
        "nvmlShutdown",
        "nvmlSystemGetDriverVersion",
        "nvmlSystemGetNVMLVersion",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetMinorNumber",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetGpuInstanceProfileInfo",
        "nvmlDeviceGetGpuInstancePossiblePlacements",
        "nvmlDeviceGetGpuInstances",
        "nvmlGpuInstanceGetInfo",
        "nvmlGpuInstanceGetComputeInstanceProfileInfo",
        "nvmlGpuInstanceGetComputeInstances",
        "nvmlComputeInstanceGetInfo",
        "nvmlDeviceGetComputeRunningProcesses",
    }
)
"""Every NVML function the probe and the recorder may call: none changes anything."""

MUTATING_CALLS: Final = frozenset(
    {
        "nvmlDeviceSetMigMode",
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlGpuInstanceCreateComputeInstance",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
        "nvmlGpuInstanceDestroy",
        "nvmlComputeInstanceDestroy",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceSetPersistenceMode",
        "nvmlDeviceClearEccErrorCounts",
        "nvmlDeviceSetComputeMode",
    }
)
"""NVML functions that change a GPU (the ones migweaver's backend uses, and a few more)."""

_SHARED_ENGINES: Final = "NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED"


class RefusedCall(RuntimeError):
    """A function outside `READ_ONLY_CALLS` was asked of a `ReadOnlyNvml`."""


class ReadOnlyNvml:
    """`pynvml` (or a stand-in) with only the `READ_ONLY_CALLS` functions reachable.

    Constants, structures and exception classes pass through; any other `nvml*` function
    raises `RefusedCall` when looked up, before anything reaches the driver.
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nvml, name)
        if name.startswith("nvml") and callable(value) and name not in READ_ONLY_CALLS:
            raise RefusedCall(f"{name} is not a read-only NVML call: refused")
        return value


# ----------------------------------------------------------------------------- recording


def record_nvml(nvml: Any, source: str = "") -> dict[str, Any]:
    """The raw answers of every read-only question, as JSON-ready data (see the module).

    `nvml` is `pynvml` (wrapped in `ReadOnlyNvml` here whatever is passed) or a stand-in;
    NVML must not be initialized yet: this initializes and shuts it down.
    """
    recorder = _Recorder(ReadOnlyNvml(nvml))
    return recorder.record(source)


class _Recorder:
    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error_type: type[BaseException] = nvml.NVMLError

    def answer(self, fn: Callable[[], Any]) -> Any:
        """`fn()` as plain data, or `{"error": code, "name": ...}` when NVML refuses."""
        try:
            return fn()
        except self.error_type as err:
            code = int(getattr(err, "value", -1))
            return {"error": code, "name": _error_name(self.nvml, code)}

    def call(self, name: str, *args: Any) -> Any:
        return getattr(self.nvml, name)(*args)

    def record(self, source: str) -> dict[str, Any]:
        self.call("nvmlInit")
        try:
            count = int(self.call("nvmlDeviceGetCount"))
            return {
                "format": FORMAT,
                "source": source,
                "nvmlSystemGetDriverVersion": self.answer(
                    lambda: _text(self.call("nvmlSystemGetDriverVersion"))
                ),
                "nvmlSystemGetNVMLVersion": self.answer(
                    lambda: _text(self.call("nvmlSystemGetNVMLVersion"))
                ),
                "nvmlDeviceGetCount": count,
                "devices": [self.device(index) for index in range(count)],
            }
        finally:
            self.call("nvmlShutdown")

    def device(self, index: int) -> dict[str, Any]:
        handle = self.call("nvmlDeviceGetHandleByIndex", index)
        mig_mode = self.answer(lambda: [int(v) for v in self.call("nvmlDeviceGetMigMode", handle)])
        profiles = self.profile_infos(handle)
        ids = sorted(
            {
                int(info["id"])
                for version in profiles.values()
                for info in version.values()
                if "id" in info
            }
        )
        mig_on = isinstance(mig_mode, list) and mig_mode[0] == int(self.nvml.NVML_DEVICE_MIG_ENABLE)
        return {
            "nvmlDeviceGetUUID": self.answer(lambda: _text(self.call("nvmlDeviceGetUUID", handle))),
            "nvmlDeviceGetName": self.answer(lambda: _text(self.call("nvmlDeviceGetName", handle))),
            "nvmlDeviceGetMemoryInfo": self.answer(
                lambda: {"total": int(self.call("nvmlDeviceGetMemoryInfo", handle).total)}
            ),
            "nvmlDeviceGetPciInfo": self.answer(lambda: self.pci_info(handle)),
            "nvmlDeviceGetMinorNumber": self.answer(
                lambda: int(self.call("nvmlDeviceGetMinorNumber", handle))
            ),
            "nvmlDeviceGetMigMode": mig_mode,
            "nvmlDeviceGetMaxMigDeviceCount": self.answer(
                lambda: int(self.call("nvmlDeviceGetMaxMigDeviceCount", handle))
            ),
            "nvmlDeviceGetGpuInstanceProfileInfo": profiles,
            "nvmlDeviceGetGpuInstancePossiblePlacements": {
                str(pid): self.answer(partial(self.placements, handle, pid)) for pid in ids
            },
            "nvmlDeviceGetComputeRunningProcesses": self.answer(lambda: self.processes(handle)),
            "gpuInstances": self.gpu_instances(handle, profiles) if mig_on else {},
            "migDevices": self.mig_devices(handle) if mig_on else {},
        }

    def pci_info(self, handle: Any) -> dict[str, Any]:
        info = self.call("nvmlDeviceGetPciInfo", handle)
        return {"pciDeviceId": int(info.pciDeviceId), "busId": _text(info.busId)}

    def profile_infos(self, handle: Any) -> dict[str, dict[str, Any]]:
        """Per version asked (`v2`, `v1`): index -> profile info or error, every index."""
        count = int(self.nvml.NVML_GPU_INSTANCE_PROFILE_COUNT)
        result: dict[str, dict[str, Any]] = {}
        for version in (2, 1):
            result[f"v{version}"] = {
                str(index): self.answer(partial(self.profile_info, handle, index, version))
                for index in range(count)
            }
        return result

    def profile_info(self, handle: Any, index: int, version: int) -> dict[str, Any]:
        return _gi_profile(self.call("nvmlDeviceGetGpuInstanceProfileInfo", handle, index, version))

    def ci_profile_info(self, gi: Any, index: int, shared: int, version: int) -> dict[str, Any]:
        return _ci_profile(
            self.call("nvmlGpuInstanceGetComputeInstanceProfileInfo", gi, index, shared, version)
        )

    def placements(self, handle: Any, profile_id: int) -> list[list[int]]:
        name = "nvmlDeviceGetGpuInstancePossiblePlacements"
        count = ctypes.c_uint(0)
        self.call(name, handle, profile_id, None, ctypes.byref(count))
        if count.value == 0:
            return []
        array = (self.nvml.c_nvmlGpuInstancePlacement_t * count.value)()
        self.call(name, handle, profile_id, array, ctypes.byref(count))
        return [[int(p.start), int(p.size)] for p in array[: count.value]]

    def processes(self, handle: Any) -> list[dict[str, Any]]:
        return [
            {
                "pid": int(p.pid),
                "usedGpuMemory": None if p.usedGpuMemory is None else int(p.usedGpuMemory),
                "gpuInstanceId": int(p.gpuInstanceId),
                "computeInstanceId": int(p.computeInstanceId),
            }
            for p in self.call("nvmlDeviceGetComputeRunningProcesses", handle)
        ]

    def gpu_instances(self, handle: Any, profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Profile id -> its GPU instances, each with its CI profiles and CIs."""
        infos = {
            int(info["id"]): int(info["instanceCount"])
            for version in profiles.values()
            for info in version.values()
            if "id" in info
        }
        return {
            str(pid): self.answer(partial(self.gis_of, handle, pid, cap))
            for pid, cap in sorted(infos.items())
        }

    def gis_of(self, handle: Any, profile_id: int, capacity: int) -> list[dict[str, Any]]:
        array = (self.nvml.c_nvmlGpuInstance_t * max(capacity, 1))()
        count = ctypes.c_uint(max(capacity, 1))
        self.call("nvmlDeviceGetGpuInstances", handle, profile_id, array, ctypes.byref(count))
        return [self.gi(gi) for gi in array[: count.value]]

    def gi(self, gi: Any) -> dict[str, Any]:
        info = self.call("nvmlGpuInstanceGetInfo", gi)
        shared = int(getattr(self.nvml, _SHARED_ENGINES))
        ci_profiles: dict[str, dict[str, Any]] = {}
        for version in (2, 1):
            ci_profiles[f"v{version}"] = {
                str(index): self.answer(partial(self.ci_profile_info, gi, index, shared, version))
                for index in range(int(self.nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT))
            }
        ci_ids = sorted(
            {
                (int(p["id"]), int(p["instanceCount"]))
                for version in ci_profiles.values()
                for p in version.values()
                if "id" in p
            }
        )
        return {
            "id": int(info.id),
            "profileId": int(info.profileId),
            "placement": [int(info.placement.start), int(info.placement.size)],
            "computeInstanceProfileInfo": ci_profiles,
            "computeInstances": {
                str(cid): self.answer(partial(self.cis_of, gi, cid, cap)) for cid, cap in ci_ids
            },
        }

    def cis_of(self, gi: Any, profile_id: int, capacity: int) -> list[dict[str, Any]]:
        array = (self.nvml.c_nvmlComputeInstance_t * max(capacity, 1))()
        count = ctypes.c_uint(max(capacity, 1))
        self.call("nvmlGpuInstanceGetComputeInstances", gi, profile_id, array, ctypes.byref(count))
        result = []
        for ci in array[: count.value]:
            info = self.call("nvmlComputeInstanceGetInfo", ci)
            result.append({"id": int(info.id), "profileId": int(info.profileId)})
        return result

    def mig_devices(self, handle: Any) -> dict[str, Any]:
        """MIG device slot -> its UUID, GI/CI ids and processes (or NVML's error)."""
        slots = self.answer(lambda: int(self.call("nvmlDeviceGetMaxMigDeviceCount", handle)))
        if not isinstance(slots, int):
            return {}
        return {str(slot): self.answer(partial(self.mig, handle, slot)) for slot in range(slots)}

    def mig(self, handle: Any, slot: int) -> dict[str, Any]:
        mig = self.call("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        return {
            "nvmlDeviceGetUUID": _text(self.call("nvmlDeviceGetUUID", mig)),
            "nvmlDeviceGetGpuInstanceId": int(self.call("nvmlDeviceGetGpuInstanceId", mig)),
            "nvmlDeviceGetComputeInstanceId": int(self.call("nvmlDeviceGetComputeInstanceId", mig)),
            "nvmlDeviceGetComputeRunningProcesses": self.answer(lambda: self.processes(mig)),
        }


def _gi_profile(info: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": int(info.id),
        "isP2pSupported": int(getattr(info, "isP2pSupported", 0)),
        "sliceCount": int(info.sliceCount),
        "instanceCount": int(info.instanceCount),
        "multiprocessorCount": int(info.multiprocessorCount),
        "memorySizeMB": int(info.memorySizeMB),
    }
    name = getattr(info, "name", None)
    if name:
        data["name"] = _text(name)
    return data


def _ci_profile(info: Any) -> dict[str, Any]:
    return {
        "id": int(info.id),
        "sliceCount": int(info.sliceCount),
        "instanceCount": int(info.instanceCount),
        "multiprocessorCount": int(info.multiprocessorCount),
    }


def _error_name(nvml: Any, code: int) -> str:
    for name in dir(nvml):
        if name.startswith("NVML_ERROR_") and getattr(nvml, name) == code:
            return str(name)
    return f"NVML_ERROR_{code}"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
