"""What the agent's metrics show about its GPUs (pure: no metrics library, no NVML).

`migweaver.agent.metrics` only formats what these functions decide:

- `instance_states`: per profile, how many instances are `free`, `reserved` or `in_use`.
  An instance is **in use** while a process runs on it, **reserved** while a pod holds it
  (its allocation names the instance) but no process runs on it yet, and **free**
  otherwise. Every state of every profile present is listed, 0 included, so a panel or
  an alert sees a 0 rather than no series.
- `catalog_mismatches`: the profiles NVML reports that differ from migweaver's catalog of
  the GPU's model (a driver that names or sizes a profile differently, or a model the
  catalog does not know). The planner plans from the catalog; a mismatch means its plans
  may not be what the GPU can do.
- `mode_switches`: the MIG mode changes among the steps of one reconcile pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from migweaver.core.agent.diff import ActualInstance, SetMigMode, Step
from migweaver.core.mig.profiles import MigProfile, ProfileTable, normalize_profile_name

__all__ = [
    "INSTANCE_STATES",
    "CatalogMismatch",
    "InstanceState",
    "StateCount",
    "catalog_mismatches",
    "instance_state",
    "instance_states",
    "mode_switches",
]

InstanceState = Literal["free", "reserved", "in_use"]
INSTANCE_STATES: Final[tuple[InstanceState, ...]] = ("free", "reserved", "in_use")


@dataclass(frozen=True, slots=True)
class StateCount:
    """How many instances of one profile are in one state on one GPU."""

    profile: str
    state: InstanceState
    count: int


@dataclass(frozen=True, slots=True)
class CatalogMismatch:
    """One NVML profile that the catalog of the GPU's model does not describe the same way."""

    profile_id: int
    nvml: str
    """NVML's description (`3g.39gb: 3 slices, 39936 MiB`), or `-` when NVML lacks it."""
    catalog: str
    """The catalog's description, or `-` when the catalog lacks it."""


def instance_state(instance: ActualInstance) -> InstanceState:
    """`in_use` with a process on it, `reserved` when only a pod holds it, else `free`."""
    if instance.pids:
        return "in_use"
    if instance.pod is not None:
        return "reserved"
    return "free"


def instance_states(instances: Iterable[ActualInstance]) -> tuple[StateCount, ...]:
    """Counts per (profile, state), every state of every profile present, sorted."""
    counts: dict[tuple[str, InstanceState], int] = {}
    profiles: set[str] = set()
    for instance in instances:
        profiles.add(instance.profile)
        key = (instance.profile, instance_state(instance))
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        StateCount(profile, state, counts.get((profile, state), 0))
        for profile in sorted(profiles)
        for state in INSTANCE_STATES
    )


def _describe(profile: MigProfile) -> str:
    slots = {p.size for p in profile.placements}
    size = next(iter(slots)) if len(slots) == 1 else "?"
    return (
        f"{profile.name}: {profile.compute_slices} compute slices, {size} memory slots, "
        f"{profile.memory_mib} MiB"
    )


def _same(nvml: MigProfile, catalog: MigProfile) -> bool:
    return (
        normalize_profile_name(nvml.name)
        in {normalize_profile_name(n) for n in (catalog.name, *catalog.aliases)}
        and nvml.compute_slices == catalog.compute_slices
        and nvml.memory_mib == catalog.memory_mib
        and set(nvml.placements) == set(catalog.placements)
    )


def catalog_mismatches(
    nvml: Sequence[MigProfile], catalog: ProfileTable | None
) -> tuple[CatalogMismatch, ...]:
    """NVML's profiles that differ from the catalog's, by profile id.

    Nothing to compare (NVML lists no profiles while MIG mode is off): no mismatch. A model
    the catalog does not know: every NVML profile is a mismatch. A catalog profile NVML
    does not list is one too (the planner could plan an instance the GPU cannot make).
    """
    if not nvml:
        return ()
    if catalog is None:
        return tuple(
            CatalogMismatch(p.profile_id, _describe(p), "-")
            for p in sorted(nvml, key=lambda p: p.profile_id)
        )
    ours = {p.profile_id: p for p in catalog.profiles}
    theirs = {p.profile_id: p for p in nvml}
    found: list[CatalogMismatch] = []
    for profile_id in sorted(ours.keys() | theirs.keys()):
        mine, real = ours.get(profile_id), theirs.get(profile_id)
        if mine is not None and real is not None and _same(real, mine):
            continue
        found.append(
            CatalogMismatch(
                profile_id,
                _describe(real) if real is not None else "-",
                _describe(mine) if mine is not None else "-",
            )
        )
    return tuple(found)


def mode_switches(steps: Iterable[Step]) -> tuple[bool, ...]:
    """The MIG modes (True: enabled) the steps of one pass switched to, in order."""
    return tuple(step.enabled for step in steps if isinstance(step, SetMigMode))
