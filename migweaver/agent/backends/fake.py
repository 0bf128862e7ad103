"""A simulated GPU backend that behaves as NVML does: tests, the simulator, GPU-less clusters.

Every rule of docs/mig-reference.md that the agent depends on is reproduced, with the NVML error
NVML would return:

- profiles (ids, indexes, names, placements, counts) come from the catalog model;
  listing them with MIG mode off is `NotSupported`, as NVML's profile-info call is;
- creating a GPU instance: MIG off `NotSupported`; unknown profile id or a placement not
  in the profile's list `InvalidArgument`; an overlap, a profile's count limit or a
  second `+me` instance `InsufficientResources`;
- GI ids are opaque driver ids (lowest free id from 1, reused after a destroy), CI ids
  likewise per GI (from 0, the full CI is 0 as on real GPUs);
- destroying a compute instance with a process, or a GPU instance with a compute
  instance (or process) left, is `InUse`;
- `set_mig_mode` on a GPU that a process (or a client such as DCGM, see `hold_gpu`)
  holds leaves `pending != current` and *returns* that state, it does not raise;
  disabling MIG with instances present raises `InUse`; `reset_gpu` applies a pending
  mode and, as a reset does, destroys every instance;
- MIG UUIDs have the real form (`MIG-` + a version-5 UUID) and are derived from
  (GPU UUID, GI id, CI id), so they repeat when the driver reuses ids, as on hardware.

A fresh fake GPU starts with MIG mode **disabled** (as a GPU out of the box) unless
`mig_enabled=True` is passed.

With `state_file`, the GPUs outlive the process as real GPUs outlive the agent: their MIG
modes and instances are read from that JSON file at start (when it exists) and written
to it after every call that changed them, together with the list of those calls
(`history`), so a test can restart the agent and check what the new one did.
Simulated processes and faults are not kept.

Tests drive it with simulated processes (`start_process` / `stop_process`), per-call
latency through an injectable sleep function, fault injection (`fail_call`,
`fail_nth_call`, `crash_at_call`; before or after the call takes effect) and the `calls`
log. A lock makes it safe to call from any one thread at a time, as the agent does from
its worker thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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
from migweaver.core.mig.catalog import GpuModel, get_model, model_keys
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable

__all__ = [
    "MUTATING_CALLS",
    "NVML_CALLS",
    "FakeBackend",
    "FakeCall",
    "SimulatedCrash",
]

NVML_CALLS: Final[Mapping[str, str]] = {
    "list_gpus": "nvmlDeviceGetHandleByIndex",
    "get_mig_mode": "nvmlDeviceGetMigMode",
    "set_mig_mode": "nvmlDeviceSetMigMode",
    "list_profiles": "nvmlDeviceGetGpuInstanceProfileInfo",
    "list_gpu_instances": "nvmlDeviceGetGpuInstances",
    "create_gpu_instance": "nvmlDeviceCreateGpuInstanceWithPlacement",
    "create_compute_instance": "nvmlGpuInstanceCreateComputeInstance",
    "destroy_compute_instance": "nvmlComputeInstanceDestroy",
    "destroy_gpu_instance": "nvmlGpuInstanceDestroy",
    "list_processes": "nvmlDeviceGetComputeRunningProcesses",
}
"""Backend method -> the NVML function it stands for (what `BackendError.call` names)."""

MUTATING_CALLS: Final[frozenset[str]] = frozenset(
    {
        "set_mig_mode",
        "create_gpu_instance",
        "create_compute_instance",
        "destroy_compute_instance",
        "destroy_gpu_instance",
    }
)
"""The methods that change a GPU; `fail_nth_call` counts these."""

# NVML's compute-instance profile ids equal the CI index constants; a full CI has the
# GI's slice count (docs/mig-reference.md section 1).
_CI_PROFILE_BY_SLICES: Final[Mapping[int, int]] = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}
_NVIDIA_VENDOR_ID: Final = 0x10DE
_MIG_UUID_NAMESPACE: Final = uuidlib.UUID("5b7f3c0e-9a5d-4f43-8a53-6d6967776561")
_FIRST_PID: Final = 4242


class SimulatedCrash(BaseException):
    """The agent process "dies" at an NVML call.

    A BaseException, like KeyboardInterrupt or SystemExit, so that it passes through the
    reconciler's `except Exception` exactly as a SIGKILL would end it: nothing after the
    crash point runs. Tests then start a fresh reconciler on the same fake GPUs.
    """


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One call the fake received: method name, NVML name, arguments and outcome.

    `error` is the NVML error the call raised (None when it succeeded); `injected` says
    the failure came from fault injection; `took_effect` is False when the call changed
    nothing (it failed before acting, or it was refused).
    """

    name: str
    nvml: str
    args: tuple[Any, ...]
    mutating: bool
    error: str | None = None
    injected: bool = False
    took_effect: bool = True


@dataclass(slots=True)
class _Fault:
    error: NvmlError | BaseException
    after: bool
    name: str | None = None  # method name for fail_call; None for fail_nth_call
    remaining: int = 1
    at_mutation: int = 0  # for fail_nth_call: the mutating-call number that fails


@dataclass(slots=True)
class _Ci:
    ci_id: int
    profile_id: int


@dataclass(slots=True)
class _Gi:
    gi_id: int
    profile: MigProfile
    placement: Placement
    cis: dict[int, _Ci] = field(default_factory=dict)


@dataclass(slots=True)
class _Process:
    pid: int
    gpu: int
    memory_mib: int
    gi_id: int | None
    ci_id: int | None


@dataclass(slots=True)
class _Gpu:
    index: int
    model: GpuModel
    uuid: str
    mig_current: bool
    mig_pending: bool
    gis: dict[int, _Gi] = field(default_factory=dict)
    held_by_client: bool = False


class _CallFailed(Exception):
    """Internal: an NVML precondition failed; carries the error for the log."""

    def __init__(self, error: NvmlError, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def _gpu_uuid(seed: str, index: int, model: GpuModel) -> str:
    digest = hashlib.sha256(f"{seed}/{index}/{model.key}".encode()).digest()
    return f"GPU-{uuidlib.UUID(bytes=digest[:16], version=4)}"


def _mig_uuid(gpu_uuid: str, gi_id: int, ci_id: int) -> str:
    return f"MIG-{uuidlib.uuid5(_MIG_UUID_NAMESPACE, f'{gpu_uuid}/{gi_id}/{ci_id}')}"


def _lowest_free(used: Iterable[int], first: int) -> int:
    """The driver hands out the lowest id not in use (ids repeat after a destroy)."""
    taken = set(used)
    candidate = first
    while candidate in taken:
        candidate += 1
    return candidate


class FakeBackend:
    """Simulated MIG GPUs of catalog models; implements `GpuBackend`.

    `models` are catalog keys or spellings (or `GpuModel`s), one per GPU, in index order.
    `seed` makes the GPU UUIDs deterministic: give each simulated node its own (e.g. the
    node name) so that GPUs of different nodes do not share UUIDs. `latency_s` is slept
    (through `sleep`) before every call: one number for all calls, or per method name.
    `auto_reset=False` simulates GPUs whose driver does not reset them itself: every MIG
    mode switch then stays pending until `reset_gpu`.
    """

    def __init__(
        self,
        models: Sequence[str | GpuModel],
        *,
        mig_enabled: bool = False,
        seed: str = "migweaver-fake",
        latency_s: float | Mapping[str, float] = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        auto_reset: bool = True,
        state_file: str | Path | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._gpus: list[_Gpu] = []
        for index, entry in enumerate(models):
            model = entry if isinstance(entry, GpuModel) else _model(entry)
            self._gpus.append(
                _Gpu(index, model, _gpu_uuid(seed, index, model), mig_enabled, mig_enabled)
            )
        self._latency = latency_s
        self._sleep = sleep
        self._auto_reset = auto_reset
        self._processes: dict[int, _Process] = {}
        self._next_pid = _FIRST_PID
        self._faults: list[_Fault] = []
        self._mutations = 0
        self.calls: list[FakeCall] = []
        """Every call received, in order (see `FakeCall`)."""
        self._state_file = Path(state_file) if state_file is not None else None
        self._history: list[dict[str, Any]] = []
        if self._state_file is not None and self._state_file.exists():
            self._restore(self._state_file)

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> FakeBackend:
        """GPUs from the command line's `--fake-gpus`: `"A100-SXM4-80GB:2,H100-SXM5-80GB:1"`.

        Each item is a catalog model with an optional count (default 1). Unknown models and
        bad counts raise ValueError naming the item and listing the catalog keys.
        """
        models: list[GpuModel] = []
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            name, _, count_text = item.partition(":")
            model = _model(name.strip())
            try:
                count = int(count_text) if count_text.strip() else 1
            except ValueError:
                raise ValueError(f"bad GPU count in {item!r}: expected MODEL[:COUNT]") from None
            if count < 1:
                raise ValueError(f"bad GPU count in {item!r}: must be at least 1")
            models.extend([model] * count)
        if not models:
            raise ValueError(
                f"no GPUs in {spec!r}: expected MODEL[:COUNT],... with MODEL one of "
                f"{', '.join(model_keys())}"
            )
        return cls(models, **options)

    # ------------------------------------------------------------------ GpuBackend

    def list_gpus(self) -> list[GpuDevice]:
        with self._call("list_gpus"):
            return [
                GpuDevice(
                    index=g.index,
                    uuid=g.uuid,
                    name=f"NVIDIA {g.model.key}",  # NVML's spelling: NVIDIA A100-SXM4-80GB
                    memory_mib=g.model.memory_mib,
                    mig_capable=True,
                    # NVML's pciDeviceId packs (device << 16) | vendor.
                    pci_device_id=(g.model.pci_device_ids[0] << 16) | _NVIDIA_VENDOR_ID
                    if g.model.pci_device_ids
                    else None,
                    minor_number=g.index,
                )
                for g in self._gpus
            ]

    def get_mig_mode(self, gpu: int) -> MigModeState:
        with self._call("get_mig_mode", gpu):
            g = self._gpu(gpu)
            return MigModeState(g.mig_current, g.mig_pending)

    def set_mig_mode(self, gpu: int, enabled: bool) -> MigModeState:
        with self._call("set_mig_mode", gpu, enabled):
            g = self._gpu(gpu)
            if g.mig_current and not enabled and g.gis:
                raise _CallFailed(NvmlError.IN_USE, f"{len(g.gis)} GPU instances exist")
            g.mig_pending = enabled
            # The switch needs an idle GPU and a reset the driver does itself; otherwise
            # the activation status (IN_USE / RESET_REQUIRED) is returned and the mode
            # stays pending until a reset.
            if self._auto_reset and not self._gpu_busy(g):
                g.mig_current = enabled
            return MigModeState(g.mig_current, g.mig_pending)

    def list_profiles(self, gpu: int) -> list[GiProfile]:
        with self._call("list_profiles", gpu):
            # Answered with MIG mode off too, as NVML does on real hardware.
            g = self._gpu(gpu)
            return [
                GiProfile(
                    profile_id=p.profile_id,
                    index=p.index,
                    name=p.name,
                    slice_count=p.compute_slices,
                    memory_mib=p.memory_mib,
                    instance_count=p.max_count,
                    placements=p.placements,
                    sm_count=p.sm_count,
                )
                for p in sorted(g.model.profiles, key=lambda p: p.index)
            ]

    def list_gpu_instances(self, gpu: int) -> list[GpuInstance]:
        with self._call("list_gpu_instances", gpu):
            g = self._gpu(gpu)
            self._require_mig(g)
            return [
                GpuInstance(
                    gi_id=gi.gi_id,
                    profile_id=gi.profile.profile_id,
                    placement=gi.placement,
                    compute_instances=tuple(
                        ComputeInstance(
                            ci.ci_id, ci.profile_id, _mig_uuid(g.uuid, gi.gi_id, ci.ci_id)
                        )
                        for ci in sorted(gi.cis.values(), key=lambda c: c.ci_id)
                    ),
                )
                for gi in sorted(g.gis.values(), key=lambda gi: gi.gi_id)
            ]

    def create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> int:
        with self._call("create_gpu_instance", gpu, profile_id, placement):
            g = self._gpu(gpu)
            self._require_mig(g)
            profile = g.model.table.by_id(profile_id)
            if profile is None:
                raise _CallFailed(NvmlError.INVALID_ARGUMENT, f"unknown profile id {profile_id}")
            if placement not in profile.placements:
                raise _CallFailed(
                    NvmlError.INVALID_ARGUMENT,
                    f"{profile.name} cannot be placed at {placement}",
                )
            for gi in g.gis.values():
                if gi.placement.overlaps(placement):
                    raise _CallFailed(
                        NvmlError.INSUFFICIENT_RESOURCES,
                        f"{placement} overlaps GPU instance {gi.gi_id} at {gi.placement}",
                    )
            if sum(1 for gi in g.gis.values() if gi.profile is profile) >= profile.max_count:
                raise _CallFailed(
                    NvmlError.INSUFFICIENT_RESOURCES,
                    f"at most {profile.max_count} x {profile.name}",
                )
            if profile.media_extensions and any(
                gi.profile.media_extensions for gi in g.gis.values()
            ):
                raise _CallFailed(NvmlError.INSUFFICIENT_RESOURCES, "at most one +me instance")
            gi_id = _lowest_free(g.gis.keys(), 1)
            g.gis[gi_id] = _Gi(gi_id, profile, placement)
            return gi_id

    def create_compute_instance(self, gpu: int, gi_id: int) -> int:
        with self._call("create_compute_instance", gpu, gi_id):
            g = self._gpu(gpu)
            self._require_mig(g)
            gi = self._gi(g, gi_id)
            if gi.cis:
                # The full compute instance takes every slice of the GPU instance.
                raise _CallFailed(
                    NvmlError.INSUFFICIENT_RESOURCES,
                    f"GPU instance {gi_id} has no free compute slices",
                )
            ci_id = _lowest_free(gi.cis.keys(), 0)
            ci_profile = _CI_PROFILE_BY_SLICES.get(gi.profile.compute_slices, 0)
            gi.cis[ci_id] = _Ci(ci_id, ci_profile)
            return ci_id

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        with self._call("destroy_compute_instance", gpu, gi_id, ci_id):
            g = self._gpu(gpu)
            self._require_mig(g)
            gi = self._gi(g, gi_id)
            if ci_id not in gi.cis:
                raise _CallFailed(
                    NvmlError.NOT_FOUND, f"no compute instance {ci_id} in GPU instance {gi_id}"
                )
            pids = self._pids_on(gpu, gi_id, ci_id)
            if pids:
                raise _CallFailed(NvmlError.IN_USE, f"processes {pids} run on it")
            del gi.cis[ci_id]

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        with self._call("destroy_gpu_instance", gpu, gi_id):
            g = self._gpu(gpu)
            self._require_mig(g)
            gi = self._gi(g, gi_id)
            pids = self._pids_on(gpu, gi_id, None)
            if pids:
                raise _CallFailed(NvmlError.IN_USE, f"processes {pids} run on it")
            if gi.cis:
                raise _CallFailed(NvmlError.IN_USE, f"compute instances {sorted(gi.cis)} remain")
            del g.gis[gi_id]

    def list_processes(self, gpu: int) -> list[GpuProcess]:
        with self._call("list_processes", gpu):
            self._gpu(gpu)
            return [
                GpuProcess(p.pid, p.memory_mib, p.gi_id, p.ci_id)
                for p in sorted(self._processes.values(), key=lambda p: p.pid)
                if p.gpu == gpu
            ]

    # ------------------------------------------------------------ simulation controls

    def start_process(self, gpu: int, mig_uuid: str | None = None, memory_mib: int = 1024) -> int:
        """Start a simulated compute process on a MIG device (or the whole GPU); its pid.

        With MIG on, a process runs on a MIG device (by UUID); with MIG off, on the whole
        GPU (`mig_uuid=None`). Anything else is a mistake of the test: ValueError.
        """
        with self._lock:
            g = self._gpu_or_value_error(gpu)
            gi_id: int | None = None
            ci_id: int | None = None
            if mig_uuid is None:
                if g.mig_current:
                    raise ValueError(f"GPU {gpu} is in MIG mode: start processes on a MIG UUID")
            else:
                found = self._find_mig_device(g, mig_uuid)
                if found is None:
                    raise ValueError(f"no MIG device {mig_uuid} on GPU {gpu}")
                gi_id, ci_id = found
            pid = self._next_pid
            self._next_pid += 1
            self._processes[pid] = _Process(pid, gpu, memory_mib, gi_id, ci_id)
            return pid

    def stop_process(self, pid: int) -> None:
        """End a simulated process (KeyError when there is none with this pid)."""
        with self._lock:
            del self._processes[pid]

    def hold_gpu(self, gpu: int, held: bool = True) -> None:
        """Simulate a client (DCGM, nvidia-persistenced) holding the GPU: mode switches wait."""
        with self._lock:
            self._gpu_or_value_error(gpu).held_by_client = held

    def reset_gpu(self, gpu: int) -> MigModeState:
        """A GPU reset (`nvidia-smi --gpu-reset`): applies a pending MIG mode and, as a
        reset does, destroys every instance. Refused with `InUse` while processes or a
        client hold the GPU. Not a `GpuBackend` call (the agent never resets GPUs)."""
        with self._lock:
            g = self._gpu_or_value_error(gpu)
            if self._gpu_busy(g):
                raise BackendError("nvidia-smi --gpu-reset", NvmlError.IN_USE, "GPU is in use")
            g.gis.clear()
            g.mig_current = g.mig_pending
            return MigModeState(g.mig_current, g.mig_pending)

    # ---------------------------------------------------------------- fault injection

    def fail_call(
        self,
        name: str,
        error: NvmlError | BaseException,
        times: int = 1,
        *,
        after: bool = False,
    ) -> None:
        """Fail the next `times` calls of a method (`create_gpu_instance`) or NVML function
        (`nvmlDeviceCreateGpuInstanceWithPlacement`) with `error`.

        An `NvmlError` is raised as the `BackendError` NVML would cause; an exception
        instance (e.g. `SimulatedCrash()`) is raised as is. With `after=True` the call
        takes effect first and then fails (NVML did the work, the caller never heard).
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        method = _method_name(name)
        with self._lock:
            self._faults.append(_Fault(error, after, name=method, remaining=times))

    def fail_nth_call(
        self, n: int, error: NvmlError | BaseException, *, after: bool = False
    ) -> None:
        """Fail the `n`-th mutating call from now (1 = the next one); see `fail_call`."""
        if n < 1:
            raise ValueError(f"n counts from 1, got {n}")
        with self._lock:
            self._faults.append(_Fault(error, after, at_mutation=self._mutations + n))

    def crash_at_call(self, n: int, *, after: bool = False) -> None:
        """Simulate the agent dying at the `n`-th mutating call from now.

        `after=False`: before the call reaches NVML (the GPU is unchanged); `after=True`:
        once NVML has done the work but before the caller could record it.
        """
        self.fail_nth_call(n, SimulatedCrash(f"crash at mutating call {n}"), after=after)

    def clear_faults(self) -> None:
        """Forget every injected fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    # --------------------------------------------------------------- test inspection

    @property
    def mutating_calls(self) -> list[FakeCall]:
        """The calls that could change a GPU, in order."""
        return [c for c in self.calls if c.mutating]

    def model(self, gpu: int) -> GpuModel:
        """The catalog model of a simulated GPU."""
        return self._gpu_or_value_error(gpu).model

    def table(self, gpu: int) -> ProfileTable:
        """The profile table of a simulated GPU."""
        return self.model(gpu).table

    def uuid(self, gpu: int) -> str:
        """The GPU's UUID (`GPU-...`)."""
        return self._gpu_or_value_error(gpu).uuid

    def placed_instances(self, gpu: int) -> tuple[PlacedInstance, ...]:
        """The GPU instances that exist, as core's `PlacedInstance`, by placement."""
        with self._lock:
            g = self._gpu_or_value_error(gpu)
            return tuple(
                sorted(PlacedInstance(gi.profile.name, gi.placement) for gi in g.gis.values())
            )

    def mig_uuids(self, gpu: int) -> dict[Placement, str]:
        """Placement -> MIG UUID of every GPU instance that has a compute instance."""
        with self._lock:
            g = self._gpu_or_value_error(gpu)
            return {
                gi.placement: _mig_uuid(g.uuid, gi.gi_id, min(gi.cis))
                for gi in g.gis.values()
                if gi.cis
            }

    def gi_ids(self, gpu: int) -> dict[Placement, int]:
        """Placement -> GI id of every GPU instance."""
        with self._lock:
            return {gi.placement: gi.gi_id for gi in self._gpu_or_value_error(gpu).gis.values()}

    def processes(self, gpu: int | None = None) -> list[int]:
        """Pids of the simulated processes (on one GPU, or all)."""
        with self._lock:
            return sorted(p.pid for p in self._processes.values() if gpu in (None, p.gpu))

    # ------------------------------------------------------------------- internals

    @contextmanager
    def _call(self, name: str, *args: Any) -> Iterator[None]:
        """Run one backend call: lock, latency, fault injection, call log, error mapping."""
        with self._lock:
            latency = (
                self._latency.get(name, 0.0)
                if isinstance(self._latency, Mapping)
                else self._latency
            )
            if latency > 0:
                self._sleep(latency)
            mutating = name in MUTATING_CALLS
            if mutating:
                self._mutations += 1
            fault = self._take_fault(name, mutating)
            nvml = NVML_CALLS[name]
            if fault is not None and not fault.after:
                self._log(name, args, mutating, fault.error, injected=True, took_effect=False)
                raise _as_exception(nvml, fault.error)
            try:
                yield
            except _CallFailed as failed:
                self._log(name, args, mutating, failed.error, took_effect=False)
                raise BackendError(nvml, failed.error, failed.detail) from None
            if mutating:
                self._save(name, args)
            if fault is not None:
                self._log(name, args, mutating, fault.error, injected=True)
                raise _as_exception(nvml, fault.error)
            self._log(name, args, mutating, None)

    def _save(self, name: str, args: tuple[Any, ...]) -> None:
        """Write the GPUs' state and this call to the state file (atomically)."""
        if self._state_file is None:
            return
        self._history.append({"call": name, "args": [_plain(a) for a in args]})
        gpus = [
            {
                "index": g.index,
                "model": g.model.key,
                "uuid": g.uuid,
                "migCurrent": g.mig_current,
                "migPending": g.mig_pending,
                "instances": [
                    {
                        "giId": gi.gi_id,
                        "profileId": gi.profile.profile_id,
                        "placement": _plain(gi.placement),
                        "computeInstances": [
                            {"ciId": ci.ci_id, "profileId": ci.profile_id} for ci in gi.cis.values()
                        ],
                    }
                    for gi in g.gis.values()
                ],
            }
            for g in self._gpus
        ]
        temporary = self._state_file.with_name(self._state_file.name + ".tmp")
        temporary.write_text(json.dumps({"gpus": gpus, "history": self._history}, indent=1))
        os.replace(temporary, self._state_file)

    def _restore(self, path: Path) -> None:
        """Take the GPUs' state from a state file written for these same GPUs."""
        try:
            data = json.loads(path.read_text())
            saved = data["gpus"]
            if [(g["model"], g["uuid"]) for g in saved] != [
                (g.model.key, g.uuid) for g in self._gpus
            ]:
                raise ValueError("it describes other GPUs (models, count or node name differ)")
            for g, entry in zip(self._gpus, saved, strict=True):
                g.mig_current = bool(entry["migCurrent"])
                g.mig_pending = bool(entry["migPending"])
                g.gis.clear()
                for gi in entry["instances"]:
                    profile = g.model.table.by_id(int(gi["profileId"]))
                    if profile is None:
                        raise ValueError(f"unknown profile id {gi['profileId']}")
                    placement = Placement(gi["placement"]["start"], gi["placement"]["size"])
                    cis = {
                        int(ci["ciId"]): _Ci(int(ci["ciId"]), int(ci["profileId"]))
                        for ci in gi["computeInstances"]
                    }
                    g.gis[int(gi["giId"])] = _Gi(int(gi["giId"]), profile, placement, cis)
            self._history = list(data.get("history") or [])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"fake GPU state file {path}: {exc}") from None

    def _log(
        self,
        name: str,
        args: tuple[Any, ...],
        mutating: bool,
        error: NvmlError | BaseException | None,
        *,
        injected: bool = False,
        took_effect: bool = True,
    ) -> None:
        text = (
            None if error is None else error.value if isinstance(error, NvmlError) else repr(error)
        )
        self.calls.append(
            FakeCall(name, NVML_CALLS[name], args, mutating, text, injected, took_effect)
        )

    def _take_fault(self, name: str, mutating: bool) -> _Fault | None:
        for fault in self._faults:
            hit = (
                fault.name == name
                if fault.name is not None
                else mutating and fault.at_mutation == self._mutations
            )
            if hit:
                fault.remaining -= 1
                if fault.remaining <= 0 or fault.name is None:
                    self._faults.remove(fault)
                return fault
        return None

    def _gpu(self, gpu: int) -> _Gpu:
        if not 0 <= gpu < len(self._gpus):
            # nvmlDeviceGetHandleByIndex answers an index out of range this way.
            raise _CallFailed(NvmlError.INVALID_ARGUMENT, f"no GPU with index {gpu}")
        return self._gpus[gpu]

    def _gpu_or_value_error(self, gpu: int) -> _Gpu:
        if not 0 <= gpu < len(self._gpus):
            raise ValueError(f"no GPU with index {gpu} (have {len(self._gpus)})")
        return self._gpus[gpu]

    @staticmethod
    def _require_mig(g: _Gpu) -> None:
        if not g.mig_current:
            raise _CallFailed(NvmlError.NOT_SUPPORTED, f"MIG mode is disabled on GPU {g.index}")

    @staticmethod
    def _gi(g: _Gpu, gi_id: int) -> _Gi:
        gi = g.gis.get(gi_id)
        if gi is None:
            raise _CallFailed(NvmlError.NOT_FOUND, f"no GPU instance {gi_id} on GPU {g.index}")
        return gi

    def _pids_on(self, gpu: int, gi_id: int, ci_id: int | None) -> list[int]:
        return sorted(
            p.pid
            for p in self._processes.values()
            if p.gpu == gpu and p.gi_id == gi_id and ci_id in (None, p.ci_id)
        )

    def _gpu_busy(self, g: _Gpu) -> bool:
        return g.held_by_client or any(p.gpu == g.index for p in self._processes.values())

    @staticmethod
    def _find_mig_device(g: _Gpu, mig_uuid: str) -> tuple[int, int] | None:
        for gi in g.gis.values():
            for ci in gi.cis.values():
                if _mig_uuid(g.uuid, gi.gi_id, ci.ci_id) == mig_uuid:
                    return gi.gi_id, ci.ci_id
        return None


def _model(name: str) -> GpuModel:
    model = get_model(name)
    if model is None:
        raise ValueError(f"unknown GPU model {name!r}; known: {', '.join(model_keys())}")
    return model


def _plain(value: Any) -> Any:
    """A call argument as JSON: placements as {start, size}."""
    if isinstance(value, Placement):
        return {"start": value.start, "size": value.size}
    return value


def _method_name(name: str) -> str:
    if name in NVML_CALLS:
        return name
    for method, nvml in NVML_CALLS.items():
        if nvml == name:
            return method
    raise ValueError(
        f"unknown call {name!r}; known: {', '.join(NVML_CALLS)} or {', '.join(NVML_CALLS.values())}"
    )


def _as_exception(nvml: str, error: NvmlError | BaseException) -> BaseException:
    if isinstance(error, NvmlError):
        return BackendError(nvml, error, "injected fault")
    return error
