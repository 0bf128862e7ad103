"""A resolved geometry: the profiles and counts one GPU model may take, as configured."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Geometry", "describe_profiles"]


@dataclass(frozen=True, slots=True)
class Geometry:
    """One allowed geometry of a GPU: profiles with counts, in config order.

    `profiles` holds the names as configured (possibly an alias such as `7g.79gb`; resolve
    them with `ProfileTable.get`). `memory[i]` is the configured MiB of `profiles[i]` (None
    when the entry gave none); NVML's size of the profile is the physical truth.
    """

    profiles: tuple[tuple[str, int], ...]
    memory: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        if self.memory and len(self.memory) != len(self.profiles):
            raise ValueError("Geometry.memory must have one value per profile")

    @property
    def counts(self) -> dict[str, int]:
        """Profile name -> total count (a name listed twice is summed)."""
        counts: dict[str, int] = {}
        for name, count in self.profiles:
            counts[name] = counts.get(name, 0) + count
        return counts

    def memory_of(self, name: str) -> int | None:
        """The configured MiB of the first entry named `name`, or None."""
        for i, (entry, _) in enumerate(self.profiles):
            if entry == name:
                return self.memory[i] if self.memory else None
        return None

    def __str__(self) -> str:
        return describe_profiles(self.profiles)


def describe_profiles(profiles: Iterable[tuple[str, int]]) -> str:
    """`1g.5gb x2, 3g.20gb x1`: profiles with counts as messages show them."""
    return ", ".join(f"{name} x{count}" for name, count in profiles)
