"""What the agent's metrics show about its GPUs (pure: no metrics library, no NVML).

`migweaver.agent.metrics` only formats what these functions decide (and counts the
catalog differences of `migweaver.core.mig.catalog_check`):

- `instance_states`: per profile, how many instances are `free`, `reserved` or `in_use`.
  An instance is **in use** while a process runs on it, **reserved** while a pod holds it
  (its allocation names the instance) but no process runs on it yet, and **free**
  otherwise. Every state of every profile present is listed, 0 included, so a panel or
  an alert sees a 0 rather than no series.
- `mode_switches`: the MIG mode changes among the steps of one reconcile pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from migweaver.core.agent.diff import ActualInstance, SetMigMode, Step

__all__ = [
    "INSTANCE_STATES",
    "InstanceState",
    "StateCount",
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


def mode_switches(steps: Iterable[Step]) -> tuple[bool, ...]:
    """The MIG modes (True: enabled) the steps of one pass switched to, in order."""
    return tuple(step.enabled for step in steps if isinstance(step, SetMigMode))
