"""Converges one GPU to its MigLayout spec, one NVML call at a time.

`Reconciler.reconcile` observes the GPU, asks the pure diff (`migweaver.core.agent.diff`) for
the steps, executes **only the first**, observes again and re-diffs, until nothing is left
or something stops it. Re-observing after every call means a surprise (a process that
started, a pod that got an instance, a call that half-worked) is seen before the next
destructive call; it also makes the reconciler crash-safe without a journal: whatever a
crash leaves (a GPU instance without its compute instance, a mode switch done but not
recorded) is just another actual state that the next diff converges from.

Rules kept here, on top of the diff's:

- nothing escapes `reconcile`: NVML errors and bugs become a `Degraded` / `Failed`
  result whose conditions name the instance and the NVML error;
- the spec must name this GPU (`gpuUUID`): a spec for another GPU changes nothing;
- MIG mode is requested at most once per pass: a switch that stays pending (the GPU needs
  a reset) is reported as `Pending`, not retried in a loop;
- a failing spec is not retried before its per-GPU backoff (exponential, capped)
  expires, unless the spec changes; no hot loop on a persistent error.

The reconciler is not thread-safe; the agent calls it from its one worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from migweaver.agent.backends.protocol import (
    BackendError,
    GiProfile,
    GpuBackend,
    GpuDevice,
    GpuInstance,
    GpuProcess,
    MigModeState,
    NvmlError,
    profile_table,
)
from migweaver.core.agent.diff import (
    ActualInstance,
    ActualState,
    Blocked,
    BlockReason,
    CreateComputeInstance,
    CreateGpuInstance,
    DesiredLayout,
    DestroyComputeInstance,
    DestroyGpuInstance,
    LayoutDiff,
    SetMigMode,
    Step,
    describe,
    diff_layout,
)
from migweaver.core.mig.catalog import match_model
from migweaver.core.mig.catalog_check import CatalogMismatch, catalog_mismatches
from migweaver.core.mig.profiles import Placement, ProfileTable, with_catalog_aliases
from migweaver.core.resources.models import (
    CONDITION_APPLIED,
    CONDITION_DEGRADED,
    CONDITION_READY,
    Condition,
    MigLayoutSpec,
    Phase,
)

__all__ = [
    "REASON_APPLYING",
    "REASON_GPU_MISMATCH",
    "REASON_INTERNAL_ERROR",
    "REASON_LAYOUT_APPLIED",
    "REASON_NOT_MIG_CAPABLE",
    "REASON_NVML_ERROR",
    "GpuObservation",
    "ReconcileResult",
    "Reconciler",
]

REASON_LAYOUT_APPLIED: Final = "LayoutApplied"
REASON_APPLYING: Final = "Applying"
REASON_NVML_ERROR: Final = "NvmlError"
REASON_GPU_MISMATCH: Final = "GpuMismatch"
REASON_NOT_MIG_CAPABLE: Final = "NotMigCapable"
REASON_INTERNAL_ERROR: Final = "InternalError"


# -------------------------------------------------------------------------------- observe


@dataclass(frozen=True, slots=True)
class GpuObservation:
    """Everything known about one GPU at one moment.

    `profiles` are NVML's, read with MIG mode on or off (empty only where NVML does not
    answer);
    `instances` carry GI/CI ids, MIG UUIDs and what makes them busy; `gpu_pids` and
    `gpu_pod` hold the GPU as a whole. `fallback_table` is the catalog's table of the
    model, used only to check a spec before MIG mode is on.
    """

    device: GpuDevice
    mig_mode: MigModeState
    profiles: tuple[GiProfile, ...]
    instances: tuple[ActualInstance, ...]
    processes: tuple[GpuProcess, ...] = ()
    gpu_pids: tuple[int, ...] = ()
    gpu_pod: str | None = None
    fallback_table: ProfileTable | None = None

    @property
    def table(self) -> ProfileTable:
        """NVML's profile table, or the catalog's while NVML lists none, or an empty one.

        NVML's profiles also answer to the catalog's names and aliases of the same profile
        id, so a spec written as `3g.40gb` matches a driver that says `3g.39gb`.
        """
        if self.profiles:
            return with_catalog_aliases(profile_table(self.profiles), self.fallback_table)
        if self.fallback_table is not None:
            return self.fallback_table
        return ProfileTable(memory_slots=0, profiles=())

    @property
    def actual(self) -> ActualState:
        """The state as the diff sees it."""
        return ActualState(
            mig_current=self.mig_mode.current,
            mig_pending=self.mig_mode.pending,
            instances=self.instances,
            gpu_pids=self.gpu_pids,
            gpu_pod=self.gpu_pod,
        )

    @property
    def catalog_mismatches(self) -> tuple[CatalogMismatch, ...]:
        """Where NVML's profiles differ from the catalog's entry for this model (none when
        either is unknown)."""
        if not self.profiles or self.fallback_table is None:
            return ()
        return catalog_mismatches(profile_table(self.profiles), self.fallback_table)

    @property
    def orphans(self) -> tuple[ActualInstance, ...]:
        """GPU instances without a compute instance (a create cut short)."""
        return tuple(i for i in self.instances if i.orphan)

    def instance_at(self, placement: Placement) -> ActualInstance | None:
        """The instance at exactly this placement, if any."""
        return next((i for i in self.instances if i.placement == placement), None)


# --------------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one `reconcile` did and what the GPU looks like afterwards.

    `conditions` are `Ready`, `Applied` and `Degraded` without timestamps (the status
    helper merges them with the previous ones). `steps` were executed in this pass;
    `blocked` is what the spec asks for that cannot be done now. On failure, `error` is
    the error text and `nvml_error` the NVML code; `failures` counts consecutive failed
    passes of this spec, and the reconciler refuses another before `next_attempt_at`
    (a clock value) unless the spec changes. `retry_after` (seconds) tells the caller when
    to call again even if nothing changes; None when there is no reason to.
    `skipped` is True when this is the previous result returned during a backoff.
    """

    gpu: int
    phase: Phase
    conditions: tuple[Condition, ...]
    observation: GpuObservation | None
    steps: tuple[Step, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    error: str | None = None
    nvml_error: NvmlError | None = None
    failures: int = 0
    retry_after: float | None = None
    next_attempt_at: float | None = None
    skipped: bool = False

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"

    def condition(self, type_: str) -> Condition:
        """The condition of this type (every result has all three)."""
        return next(c for c in self.conditions if c.type == type_)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One pass's verdict, before conditions and backoff are attached."""

    phase: Phase
    reason: str
    message: str
    observation: GpuObservation | None
    steps: tuple[Step, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    error: str | None = None
    nvml_error: NvmlError | None = None
    failed: bool = False
    """Counts for the backoff: an error, not a wait for a pod or a reset."""


@dataclass(frozen=True, slots=True)
class _Backoff:
    spec_key: str
    failures: int
    next_attempt_at: float
    last: ReconcileResult


class _Refused(Exception):
    """A step the reconciler will not execute (a safety check behind the diff's)."""


# ----------------------------------------------------------------------------- reconciler


class Reconciler:
    """Applies MigLayout specs to the GPUs of one backend.

    `clock` (seconds, monotonic) drives the backoff: after the n-th consecutive failure of
    a spec, the next attempt waits `min(backoff_max, backoff_base * 2**(n-1))`.
    `recheck_after` is the `retry_after` hint of results that wait for something outside
    the agent (a busy instance, a pending MIG mode). `max_steps` bounds one pass.
    """

    def __init__(
        self,
        backend: GpuBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_base: float = 2.0,
        backoff_max: float = 300.0,
        recheck_after: float = 30.0,
        max_steps: int = 64,
    ) -> None:
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        self._backend = backend
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._recheck_after = recheck_after
        self._max_steps = max_steps
        self._backoffs: dict[int, _Backoff] = {}
        # NVML's profile list of a GPU does not change while the driver runs; reading it
        # once (per GPU UUID) saves a dozen NVML calls per observation.
        self._profiles: dict[str, tuple[GiProfile, ...]] = {}
        # Nor does a GPU's identity: listing every GPU (six NVML calls each) at every
        # observation would cost more than the observation. A lost GPU still shows: the
        # next call on it fails.
        self._devices: dict[int, GpuDevice] = {}

    # ------------------------------------------------------------------------ observe

    def observe(self, gpu: int, held_by_pods: Mapping[str, str] | None = None) -> GpuObservation:
        """Read one GPU: device, MIG mode, profiles, instances, processes; raises BackendError.

        `held_by_pods` maps what pods hold to `namespace/name`: keys are MIG UUIDs, the
        GPU UUID (a pod on the whole GPU) or a placement written `start:size` (an
        instance allocated to a pod, whatever its current UUID). Held instances are busy.
        The mapping may be live (updated by another thread): `reconcile` reads it again at
        every observation, so a pod allocated during a pass protects its instance.
        """
        held = _live(held_by_pods)
        device = self._device(gpu)
        if device.mig_capable:
            mode = self._backend.get_mig_mode(gpu)
        else:
            mode = MigModeState(current=False, pending=False)
        # NVML lists a GPU's profiles with MIG off too: the table is known (and reported)
        # before MIG is switched on, and the catalog is needed only where NVML is silent.
        profiles = self._read_profiles(gpu, device) if device.mig_capable else ()
        gis = self._backend.list_gpu_instances(gpu) if mode.current else []
        processes = tuple(self._backend.list_processes(gpu))
        model = match_model(device.name, device.pci_device_id)
        fallback = model.table if model is not None else None
        names = {p.profile_id: p.name for p in profiles}
        if fallback is not None:
            for p in fallback.profiles:
                names.setdefault(p.profile_id, p.name)
        instances = tuple(
            _actual_instance(gi, names, processes, held)
            for gi in sorted(gis, key=lambda gi: gi.placement)
        )
        gi_ids = {gi.gi_id for gi in gis}
        # With MIG on, every process runs in a GPU instance; one whose instance is not
        # (or no longer) listed is counted against the whole GPU, to stay on the safe side.
        gpu_pids = tuple(p.pid for p in processes if p.gi_id is None or p.gi_id not in gi_ids)
        return GpuObservation(
            device=device,
            mig_mode=mode,
            profiles=profiles,
            instances=instances,
            processes=processes,
            gpu_pids=gpu_pids,
            gpu_pod=held.get(device.uuid),
            fallback_table=fallback,
        )

    # ---------------------------------------------------------------------- reconcile

    def reconcile(
        self, gpu: int, spec: MigLayoutSpec, held_by_pods: Mapping[str, str] | None = None
    ) -> ReconcileResult:
        """Converge GPU `gpu` to `spec`; never raises (see the module docstring)."""
        key = spec.model_dump_json()
        prior = self._backoffs.get(gpu)
        now = self._clock()
        if prior is not None and prior.spec_key == key and now < prior.next_attempt_at:
            return replace(prior.last, skipped=True, retry_after=prior.next_attempt_at - now)
        try:
            outcome = self._attempt(gpu, spec, _live(held_by_pods))
        except Exception as exc:  # a bug must not kill the agent's loop: report it
            outcome = _Outcome(
                phase="Failed",
                reason=REASON_INTERNAL_ERROR,
                message=f"unexpected error: {exc!r}",
                observation=self._try_observe(gpu, _live(held_by_pods)),
                error=repr(exc),
                failed=True,
            )
        return self._finish(gpu, key, prior, outcome)

    # ---------------------------------------------------------------------- internals

    def _device(self, gpu: int) -> GpuDevice:
        if gpu not in self._devices:
            self._devices = {device.index: device for device in self._backend.list_gpus()}
        device = self._devices.get(gpu)
        if device is None:
            raise BackendError("nvmlDeviceGetHandleByIndex", NvmlError.NOT_FOUND, f"no GPU {gpu}")
        return device

    def _read_profiles(self, gpu: int, device: GpuDevice) -> tuple[GiProfile, ...]:
        cached = self._profiles.get(device.uuid)
        if cached:
            return cached
        try:
            profiles = tuple(self._backend.list_profiles(gpu))
        except BackendError as exc:
            if exc.error is not NvmlError.NOT_SUPPORTED:
                raise
            profiles = ()
        if profiles:
            self._profiles[device.uuid] = profiles
        return profiles

    def _try_observe(self, gpu: int, held: Mapping[str, str]) -> GpuObservation | None:
        try:
            return self.observe(gpu, held)
        except Exception:  # reporting only: the caller already has an error to show
            return None

    def _attempt(self, gpu: int, spec: MigLayoutSpec, held: Mapping[str, str]) -> _Outcome:
        try:
            observation = self.observe(gpu, held)
        except BackendError as exc:
            return _nvml_failure(f"cannot read GPU {gpu}: {_nvml_text(exc)}", exc, None)
        if spec.gpu_uuid != observation.device.uuid:
            return _Outcome(
                phase="Failed",
                reason=REASON_GPU_MISMATCH,
                message=f"the spec is for GPU {spec.gpu_uuid} but GPU {gpu} is "
                f"{observation.device.uuid}: nothing changed",
                observation=observation,
                failed=True,
            )
        if spec.mig_enabled and not observation.device.mig_capable:
            return _Outcome(
                phase="Failed",
                reason=REASON_NOT_MIG_CAPABLE,
                message=f"GPU {gpu} ({observation.device.name}) does not support MIG",
                observation=observation,
                failed=True,
            )
        desired = DesiredLayout.from_spec(spec)
        done: list[Step] = []
        mode_requested = False
        for _ in range(self._max_steps):
            diff = diff_layout(desired, observation.actual, observation.table)
            if not diff.steps or (isinstance(diff.steps[0], SetMigMode) and mode_requested):
                return _settled(observation, diff, tuple(done))
            step = diff.steps[0]
            try:
                self._execute(gpu, step, observation)
            except _Refused as exc:
                return _Outcome(
                    phase="Failed",
                    reason=REASON_INTERNAL_ERROR,
                    message=str(exc),
                    observation=observation,
                    steps=tuple(done),
                    error=str(exc),
                    failed=True,
                )
            except BackendError as exc:
                # Re-read: the call may have half-worked. If even that fails, the state is
                # unknown and the result says so rather than show the stale observation.
                after = self._try_observe(gpu, held)
                context = _context(step, after or observation)
                message = f"cannot {step.describe()}: {_nvml_text(exc, context)}"
                return _nvml_failure(message, exc, after, tuple(done), diff.blocked)
            done.append(step)
            mode_requested = mode_requested or isinstance(step, SetMigMode)
            try:
                observation = self.observe(gpu, held)
            except BackendError as exc:
                message = f"cannot read GPU {gpu} after {step.describe()}: {_nvml_text(exc)}"
                return _nvml_failure(message, exc, None, tuple(done))
        return _Outcome(
            phase="Applying",
            reason=REASON_APPLYING,
            message=f"stopped after {self._max_steps} steps; continuing on the next pass",
            observation=observation,
            steps=tuple(done),
        )

    def _execute(self, gpu: int, step: Step, observation: GpuObservation) -> None:
        backend = self._backend
        match step:
            case SetMigMode(enabled=enabled):
                backend.set_mig_mode(gpu, enabled)
            case DestroyComputeInstance(gi_id=gi_id, ci_id=ci_id):
                _refuse_busy(observation, gi_id)
                backend.destroy_compute_instance(gpu, gi_id, ci_id)
            case DestroyGpuInstance(gi_id=gi_id):
                _refuse_busy(observation, gi_id)
                backend.destroy_gpu_instance(gpu, gi_id)
            case CreateGpuInstance(profile_id=profile_id):
                backend.create_gpu_instance(gpu, profile_id, step.placement)
            case CreateComputeInstance(gi_id=gi_id):
                if gi_id is None:
                    raise _Refused(f"{step.describe()}: the GPU instance is not known yet")
                backend.create_compute_instance(gpu, gi_id)

    def _finish(
        self, gpu: int, key: str, prior: _Backoff | None, outcome: _Outcome
    ) -> ReconcileResult:
        conditions = _conditions(outcome)
        result = ReconcileResult(
            gpu=gpu,
            phase=outcome.phase,
            conditions=conditions,
            observation=outcome.observation,
            steps=outcome.steps,
            blocked=outcome.blocked,
            error=outcome.error,
            nvml_error=outcome.nvml_error,
        )
        if not outcome.failed:
            self._backoffs.pop(gpu, None)
            if outcome.phase == "Applying":
                return replace(result, retry_after=0.0)
            if outcome.phase in ("Pending", "Degraded"):
                return replace(result, retry_after=self._recheck_after)
            return result
        failures = prior.failures + 1 if prior is not None and prior.spec_key == key else 1
        # Capped exponent: the delay is capped anyway, and 2.0 ** n overflows for large n.
        delay = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 30))
        next_at = self._clock() + delay
        result = replace(result, failures=failures, retry_after=delay, next_attempt_at=next_at)
        self._backoffs[gpu] = _Backoff(key, failures, next_at, result)
        return result


# -------------------------------------------------------------------------------- helpers


def _live(held_by_pods: Mapping[str, str] | None) -> Mapping[str, str]:
    # Not `held_by_pods or {}`: an empty mapping may be the caller's live view, which
    # fills while a pass runs and is read again at every observation.
    return held_by_pods if held_by_pods is not None else {}


def _actual_instance(
    gi: GpuInstance,
    names: Mapping[int, str],
    processes: tuple[GpuProcess, ...],
    held: Mapping[str, str],
) -> ActualInstance:
    uuids = [ci.uuid for ci in gi.compute_instances if ci.uuid]
    # One `get` per key: `held` may be live, and a key seen by `in` can be gone by `[]`.
    keys = (*uuids, str(gi.placement))
    pod = next((p for p in map(held.get, keys) if p is not None), None)
    return ActualInstance(
        profile=names.get(gi.profile_id, f"profile-{gi.profile_id}"),
        placement=gi.placement,
        gi_id=gi.gi_id,
        ci_ids=tuple(sorted(ci.ci_id for ci in gi.compute_instances)),
        uuid=uuids[0] if uuids else None,
        pids=tuple(sorted(p.pid for p in processes if p.gi_id == gi.gi_id)),
        pod=pod,
    )


def _refuse_busy(observation: GpuObservation, gi_id: int) -> None:
    # The diff never destroys a busy instance; this second check costs nothing and keeps
    # the promise even if a future diff gets it wrong.
    target = next((i for i in observation.instances if i.gi_id == gi_id), None)
    if target is not None and target.busy:
        raise _Refused(f"refusing to destroy {describe(target.placed)}: {target.holder}")


def _nvml_text(exc: BackendError, context: str = "") -> str:
    text = f"NVML_ERROR_{exc.error.name}"
    extra = context or exc.detail
    return f"{text} ({extra})" if extra else text


def _context(step: Step, observation: GpuObservation) -> str:
    """What on the GPU explains a failed create: the instances it overlaps."""
    if not isinstance(step, CreateGpuInstance):
        return ""
    parts = []
    for inst in observation.instances:
        if inst.placement.overlaps(step.placement):
            busy = f"busy {describe(inst.placed)} {inst.holder}" if inst.busy else None
            parts.append(busy or f"{describe(inst.placed)} (GPU instance {inst.gi_id})")
    return f"overlaps {', '.join(parts)}" if parts else ""


def _nvml_failure(
    message: str,
    exc: BackendError,
    observation: GpuObservation | None,
    steps: tuple[Step, ...] = (),
    blocked: tuple[Blocked, ...] = (),
) -> _Outcome:
    # Reading the GPU failed: nothing is known, Failed. A step failed: the GPU still
    # serves what exists (every step leaves a valid layout), Degraded.
    return _Outcome(
        phase="Failed" if observation is None else "Degraded",
        reason=REASON_NVML_ERROR,
        message=message,
        observation=observation,
        steps=steps,
        blocked=blocked,
        error=str(exc),
        nvml_error=exc.error,
        failed=True,
    )


def _settled(observation: GpuObservation, diff: LayoutDiff, steps: tuple[Step, ...]) -> _Outcome:
    """The verdict when no further step can be taken in this pass."""
    messages = "; ".join(b.message for b in diff.blocked)
    invalid = [b for b in diff.blocked if b.reason is BlockReason.INVALID_SPEC]
    if invalid:
        return _Outcome(
            phase="Failed",
            reason=BlockReason.INVALID_SPEC.value,
            message=f"{messages}; nothing changed",
            observation=observation,
            steps=steps,
            blocked=diff.blocked,
            failed=True,
        )
    mode = observation.mig_mode
    mode_waits = any(b.reason is BlockReason.MIG_MODE_PENDING for b in diff.blocked)
    if mode_waits or diff.steps or mode.switching:
        if not messages:
            target = "Enabled" if mode.pending else "Disabled"
            messages = (
                f"MIG mode {target} is pending: the GPU needs a reset "
                "(nvidia-smi --gpu-reset, or a reboot)"
            )
        return _Outcome(
            phase="Pending",
            reason=BlockReason.MIG_MODE_PENDING.value,
            message=messages,
            observation=observation,
            steps=steps,
            blocked=diff.blocked,
        )
    if diff.blocked:
        # A spec instance that cannot be created matters more than one that is kept.
        first = min(diff.blocked, key=lambda b: b.reason is not BlockReason.INSTANCE_BLOCKED)
        return _Outcome(
            phase="Degraded",
            reason=first.reason.value,
            message=messages,
            observation=observation,
            steps=steps,
            blocked=diff.blocked,
        )
    count = len(observation.instances)
    mode_text = "MIG enabled" if mode.current else "MIG disabled"
    return _Outcome(
        phase="Ready",
        reason=REASON_LAYOUT_APPLIED,
        message=f"{mode_text}, {count} instance{'s' if count != 1 else ''} as specified",
        observation=observation,
        steps=steps,
    )


def _conditions(outcome: _Outcome) -> tuple[Condition, ...]:
    ready = outcome.phase == "Ready"
    degraded = outcome.phase in ("Degraded", "Failed")
    return (
        Condition(
            type=CONDITION_READY,
            status="True" if ready else "False",
            reason=outcome.reason,
            message=outcome.message,
        ),
        Condition(
            type=CONDITION_APPLIED,
            status="True" if ready else "False",
            reason=outcome.reason,
            message=outcome.message,
        ),
        Condition(
            type=CONDITION_DEGRADED,
            status="True" if degraded else "False",
            reason=outcome.reason,
            message=outcome.message if degraded else "",
        ),
    )
