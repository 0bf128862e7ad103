"""The layout diff: the steps that take one GPU from what it has to what its MigLayout wants.

Pure: the agent observes the GPU (NVML), builds an `ActualState`, and asks `diff_layout`
for the ordered steps; it executes the first, observes again and asks again, so every
decision is taken on fresh data. Safety lives here and is tested without a GPU:

- An instance is identified by its profile and **placement**, never by its GI id (ids are
  assigned by the driver and change when an instance is re-created).
- A *busy* instance (a process runs on it, or a pod is allocated to it) is never
  destroyed; if the spec drops it, it is kept and reported as blocked.
- A spec instance that would overlap a busy instance (or exceed a profile's count next to
  the busy ones) is not attempted; it is reported as blocked.
- MIG mode is switched only on an idle GPU (NVML would leave the switch pending anyway).
- An invalid spec (one NVML could never accept, per `geometry.layout_problems`) changes
  nothing at all: the writer made a mistake, and acting on half of it could destroy idle
  instances that the corrected spec wants to keep. Fail closed.
- Destroys come before creates (creates need the freed slots); compute instances are
  destroyed before their GPU instance (NVML refuses the other order). A GPU instance
  without a compute instance (a half-finished create) that the spec wants is completed
  with its compute instance rather than destroyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from migweaver.core.mig.geometry import PlacedInstance, can_add, layout_problems
from migweaver.core.mig.profiles import Placement, ProfileTable, normalize_profile_name
from migweaver.core.resources.models import MigLayoutSpec

__all__ = [
    "ActualInstance",
    "ActualState",
    "BlockReason",
    "Blocked",
    "CreateComputeInstance",
    "CreateGpuInstance",
    "DesiredLayout",
    "DestroyComputeInstance",
    "DestroyGpuInstance",
    "LayoutDiff",
    "SetMigMode",
    "Step",
    "describe",
    "diff_layout",
]


def describe(instance: PlacedInstance) -> str:
    """`3g.40gb at 4:4`: how messages name an instance (profile at start:size)."""
    return f"{instance.profile} at {instance.placement}"


# ---------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class DesiredLayout:
    """What the MigLayout spec asks for, in core types."""

    mig_enabled: bool
    instances: tuple[PlacedInstance, ...] = ()

    @classmethod
    def from_spec(cls, spec: MigLayoutSpec) -> DesiredLayout:
        """The desired layout of a MigLayout spec (instances in spec order)."""
        return cls(
            mig_enabled=spec.mig_enabled,
            instances=tuple(
                PlacedInstance(i.profile, i.placement.to_placement()) for i in spec.instances
            ),
        )


@dataclass(frozen=True, slots=True)
class ActualInstance:
    """A GPU instance that exists, with what makes it busy.

    `pids` are the processes running on its compute instances; `pod` is the pod the
    caller says it is allocated to (`namespace/name`). Either makes it busy.
    """

    profile: str
    placement: Placement
    gi_id: int
    ci_ids: tuple[int, ...] = ()
    uuid: str | None = None
    pids: tuple[int, ...] = ()
    pod: str | None = None

    @property
    def busy(self) -> bool:
        """A process runs on it or a pod holds it: it must not be destroyed."""
        return bool(self.pids) or self.pod is not None

    @property
    def orphan(self) -> bool:
        """A GPU instance without a compute instance (no MIG device, no UUID)."""
        return not self.ci_ids

    @property
    def placed(self) -> PlacedInstance:
        return PlacedInstance(self.profile, self.placement)

    @property
    def holder(self) -> str:
        """Who keeps it busy, for messages: `held by default/train-1, used by process 4242`."""
        parts: list[str] = []
        if self.pod is not None:
            parts.append(f"held by {self.pod}")
        if self.pids:
            noun = "process" if len(self.pids) == 1 else "processes"
            parts.append(f"used by {noun} {', '.join(str(p) for p in sorted(self.pids))}")
        return ", ".join(parts) or "idle"


@dataclass(frozen=True, slots=True)
class ActualState:
    """What a GPU has now: MIG mode, instances, and what holds the GPU as a whole.

    `gpu_pids` / `gpu_pod` are processes and pods on the whole GPU (MIG disabled, or a
    hami-core pod); they keep the GPU from switching MIG mode.
    """

    mig_current: bool
    mig_pending: bool
    instances: tuple[ActualInstance, ...] = ()
    gpu_pids: tuple[int, ...] = ()
    gpu_pod: str | None = None

    @property
    def idle(self) -> bool:
        """Nothing runs on or holds the GPU: a MIG-mode switch may go ahead."""
        return (
            not self.gpu_pids and self.gpu_pod is None and not any(i.busy for i in self.instances)
        )

    def busy_text(self) -> str:
        """What keeps the GPU from being idle, for messages."""
        parts = [f"{describe(i.placed)} {i.holder}" for i in self.instances if i.busy]
        if self.gpu_pod is not None:
            parts.append(f"GPU held by {self.gpu_pod}")
        if self.gpu_pids:
            parts.append(f"GPU used by process {', '.join(str(p) for p in sorted(self.gpu_pids))}")
        return "; ".join(parts)


# ----------------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class SetMigMode:
    """Request MIG mode on or off (`nvmlDeviceSetMigMode`)."""

    enabled: bool

    def describe(self) -> str:
        return f"{'enable' if self.enabled else 'disable'} MIG mode"


@dataclass(frozen=True, slots=True)
class DestroyComputeInstance:
    """Destroy one compute instance of an idle GPU instance."""

    gi_id: int
    ci_id: int
    instance: PlacedInstance

    def describe(self) -> str:
        return (
            f"destroy compute instance {self.ci_id} of {describe(self.instance)} "
            f"(GPU instance {self.gi_id})"
        )


@dataclass(frozen=True, slots=True)
class DestroyGpuInstance:
    """Destroy an idle GPU instance whose compute instances are gone."""

    gi_id: int
    instance: PlacedInstance

    def describe(self) -> str:
        return f"destroy {describe(self.instance)} (GPU instance {self.gi_id})"


@dataclass(frozen=True, slots=True)
class CreateGpuInstance:
    """Create a GPU instance of `profile_id` at exactly `instance.placement`."""

    profile_id: int
    instance: PlacedInstance

    @property
    def placement(self) -> Placement:
        return self.instance.placement

    def describe(self) -> str:
        return f"create {describe(self.instance)}"


@dataclass(frozen=True, slots=True)
class CreateComputeInstance:
    """Create the full compute instance of a GPU instance.

    `gi_id` is None when the GPU instance is created by the step before (its id is known
    only once the driver has assigned it; the next diff names it).
    """

    gi_id: int | None
    instance: PlacedInstance

    def describe(self) -> str:
        where = f" (GPU instance {self.gi_id})" if self.gi_id is not None else ""
        return f"create the compute instance of {describe(self.instance)}{where}"


Step: TypeAlias = (
    SetMigMode
    | DestroyComputeInstance
    | DestroyGpuInstance
    | CreateGpuInstance
    | CreateComputeInstance
)


class BlockReason(StrEnum):
    """Why part of a spec is not applied; the values are condition reasons."""

    INVALID_SPEC = "InvalidSpec"
    """The spec is not a layout NVML accepts: nothing is changed."""
    IN_USE = "InstanceInUse"
    """The spec drops an instance that is busy: it is kept."""
    INSTANCE_BLOCKED = "InstanceBlocked"
    """A spec instance cannot be created next to the busy instances that are kept."""
    MIG_MODE_PENDING = "MigModePending"
    """MIG mode must switch but the GPU is not idle."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """A part of the spec that is not applied, and why, in words a person can act on."""

    reason: BlockReason
    message: str
    instance: PlacedInstance | None = None


@dataclass(frozen=True, slots=True)
class LayoutDiff:
    """Ordered steps to execute, and what cannot be done now."""

    steps: tuple[Step, ...] = ()
    blocked: tuple[Blocked, ...] = ()

    @property
    def converged(self) -> bool:
        """Nothing to do and nothing blocked: the GPU is what the spec says."""
        return not self.steps and not self.blocked


# ------------------------------------------------------------------------------------ diff


def diff_layout(desired: DesiredLayout, actual: ActualState, table: ProfileTable) -> LayoutDiff:
    """The steps from `actual` to `desired` on a GPU whose profiles are `table`.

    `table` may be empty while MIG mode is off (NVML lists no profiles then); the spec is
    validated as soon as a table with profiles is available.
    """
    invalid = _spec_problems(desired, table)
    if invalid:
        return LayoutDiff(blocked=invalid)
    if actual.mig_current != desired.mig_enabled:
        return _switch_mode(desired, actual, table)
    steps: list[Step] = []
    if actual.mig_pending != actual.mig_current:
        # Someone requested the opposite mode; asking for the current one withdraws that
        # request, and needs no idle GPU since nothing switches.
        steps.append(SetMigMode(desired.mig_enabled))
    if not desired.mig_enabled:
        return LayoutDiff(steps=tuple(steps))
    instance_diff = _diff_instances(desired.instances, actual.instances, table)
    return LayoutDiff(steps=(*steps, *instance_diff.steps), blocked=instance_diff.blocked)


def _spec_problems(desired: DesiredLayout, table: ProfileTable) -> tuple[Blocked, ...]:
    if not desired.mig_enabled:
        if not desired.instances:
            return ()
        return (
            Blocked(
                BlockReason.INVALID_SPEC,
                f"the spec disables MIG mode but lists {len(desired.instances)} instances",
            ),
        )
    if not table.profiles:
        return ()
    return tuple(
        Blocked(
            BlockReason.INVALID_SPEC,
            f"invalid spec: {p.message}",
            desired.instances[p.index] if p.index is not None else None,
        )
        for p in layout_problems(table, desired.instances)
    )


def _switch_mode(desired: DesiredLayout, actual: ActualState, table: ProfileTable) -> LayoutDiff:
    target = "Enabled" if desired.mig_enabled else "Disabled"
    if desired.mig_enabled:
        # MIG is off, so no instance exists; only processes or pods on the whole GPU count.
        if not actual.idle:
            return LayoutDiff(blocked=(_mode_blocked(target, actual),))
        creates = _create_steps(desired.instances, table) if table.profiles else []
        return LayoutDiff(steps=(SetMigMode(True), *creates))
    # Disabling: every instance must go first (NVML refuses with instances present).
    steps: list[Step] = []
    blocked: list[Blocked] = []
    for inst in sorted(actual.instances, key=lambda i: i.placement):
        if inst.busy:
            blocked.append(_kept_busy(inst))
        else:
            steps.extend(_destroy_steps(inst))
    if actual.idle:
        steps.append(SetMigMode(False))
    else:
        blocked.append(_mode_blocked(target, actual))
    return LayoutDiff(steps=tuple(steps), blocked=tuple(blocked))


def _mode_blocked(target: str, actual: ActualState) -> Blocked:
    return Blocked(
        BlockReason.MIG_MODE_PENDING,
        f"MIG mode {target} waits for the GPU to be idle ({actual.busy_text()})",
    )


def _kept_busy(inst: ActualInstance) -> Blocked:
    return Blocked(
        BlockReason.IN_USE,
        f"{describe(inst.placed)} is in use, {inst.holder}: kept although the spec drops it",
        inst.placed,
    )


def _same_profile(table: ProfileTable, a: str, b: str) -> bool:
    pa, pb = table.get(a), table.get(b)
    if pa is not None and pb is not None:
        return pa is pb
    return normalize_profile_name(a) == normalize_profile_name(b)


def _destroy_steps(inst: ActualInstance) -> list[Step]:
    steps: list[Step] = [
        DestroyComputeInstance(inst.gi_id, ci, inst.placed) for ci in sorted(inst.ci_ids)
    ]
    steps.append(DestroyGpuInstance(inst.gi_id, inst.placed))
    return steps


def _diff_instances(
    wanted: tuple[PlacedInstance, ...],
    existing: tuple[ActualInstance, ...],
    table: ProfileTable,
) -> LayoutDiff:
    destroys: list[Step] = []
    blocked: list[Blocked] = []
    matched: list[ActualInstance] = []
    kept_busy: list[ActualInstance] = []
    for inst in sorted(existing, key=lambda i: i.placement):
        if _is_wanted(inst, wanted, table):
            matched.append(inst)
        elif inst.busy:
            blocked.append(_kept_busy(inst))
            kept_busy.append(inst)
        else:
            destroys.extend(_destroy_steps(inst))
    # A wanted GPU instance without a compute instance (a create cut short) is completed,
    # not destroyed: creating a compute instance takes nothing from anyone.
    creates: list[tuple[Placement, Step]] = [
        (inst.placement, CreateComputeInstance(inst.gi_id, inst.placed))
        for inst in matched
        if inst.orphan
    ]
    planned = [i.placed for i in (*matched, *kept_busy)]
    have = {i.placement for i in matched}
    for want in sorted(wanted, key=lambda w: w.placement):
        if want.placement in have:
            continue
        reason = _create_blocker(want, kept_busy, planned, table)
        if reason is not None:
            blocked.append(Blocked(BlockReason.INSTANCE_BLOCKED, reason, want))
            continue
        planned.append(want)
        creates.extend((want.placement, s) for s in _create_steps((want,), table))
    # Completions and new instances in placement order; the sort is stable, so each
    # CreateGpuInstance stays right before its CreateComputeInstance.
    ordered = [step for _, step in sorted(creates, key=lambda item: item[0])]
    return LayoutDiff(steps=(*destroys, *ordered), blocked=tuple(blocked))


def _is_wanted(
    inst: ActualInstance, wanted: tuple[PlacedInstance, ...], table: ProfileTable
) -> bool:
    return any(
        w.placement == inst.placement and _same_profile(table, w.profile, inst.profile)
        for w in wanted
    )


def _create_blocker(
    want: PlacedInstance,
    kept_busy: list[ActualInstance],
    planned: list[PlacedInstance],
    table: ProfileTable,
) -> str | None:
    """Why `want` cannot be created next to what stays, or None when it can."""
    if table.get(want.profile) is None:
        return f"cannot create {describe(want)}: the GPU reports no profile {want.profile}"
    for busy in kept_busy:
        if busy.placement.overlaps(want.placement):
            return (
                f"cannot create {describe(want)}: overlaps busy {describe(busy.placed)} "
                f"{busy.holder}"
            )
    if not can_add(table, planned, want.profile, want.placement):
        # The spec is valid on its own, so the busy instances it drops use up the count
        # of this profile (or the GPU's single +me instance).
        holders = ", ".join(f"{describe(b.placed)} {b.holder}" for b in kept_busy)
        return f"cannot create {describe(want)}: profile limit reached with busy {holders}"
    return None


def _create_steps(wanted: tuple[PlacedInstance, ...], table: ProfileTable) -> list[Step]:
    # Steps carry NVML's name of the profile (the spec may use an older driver's alias).
    steps: list[Step] = []
    for want in sorted(wanted, key=lambda w: w.placement):
        profile = table.get(want.profile)
        if profile is None:  # validated before; unknown profiles never reach here
            continue
        named = PlacedInstance(profile.name, want.placement)
        steps.append(CreateGpuInstance(profile.profile_id, named))
        steps.append(CreateComputeInstance(None, named))
    return steps
