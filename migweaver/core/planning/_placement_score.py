"""How good a placement is: the profile order and the free-region score.

Two questions the planner asks for every candidate instance:

- *Which profile?* The smallest that serves the request: least physical memory, then
  fewest memory slices, then fewest compute slices (`profile_size_key`).
- *Where?* Where it costs least of what could still be created afterwards
  (`fragmentation_loss`). The capacity of a set of free memory slots is, per size class of
  profile (8, 4, 2, 1 slots), how many of its placements are still free; classes compare
  largest first. A 1g at slot 0 of an empty A100 kills the only 4g placement, a 1g at
  slot 6 does not, so slot 6 wins; HAMi v2.10's fixed "1g/3g high, others low" rule is
  the special case of this score on an empty GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migweaver.core.mig.profiles import MigProfile, ProfileTable

__all__ = ["ProfileGeometry", "profile_size_key"]

# Placements of one size class never exceed 14 on an 8-slot GPU (two 2-slot profiles x 7
# starts at most), so base 16 keeps the classes lexicographic inside one integer.
_CLASS_BASE = 16


def profile_size_key(profile: MigProfile) -> tuple[int, int, int, int]:
    """Smaller is preferred: memory MiB, memory slices, compute slices, then the id."""
    return (profile.memory_mib, profile.memory_slices, profile.compute_slices, profile.profile_id)


@dataclass(eq=False, slots=True)
class ProfileGeometry:
    """Precomputed masks and weights of one ProfileTable, shared by every GPU using it."""

    table: ProfileTable
    masks: tuple[tuple[tuple[int, int, int], ...], ...] = field(init=False)
    """Per profile index: its placements as (start, size, mask)."""
    weights: tuple[int, ...] = field(init=False)
    """Per profile index: the weight of one free placement (0 for +me profiles)."""
    _capacity: dict[int, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = tuple(
            tuple((p.start, p.size, p.mask) for p in profile.placements)
            for profile in self.table.profiles
        )
        sizes = sorted({p.memory_slices for p in self.table.profiles})
        rank = {size: i for i, size in enumerate(sizes)}
        self.weights = tuple(
            0 if p.media_extensions else _CLASS_BASE ** rank[p.memory_slices]
            for p in self.table.profiles
        )

    def capacity(self, used_mask: int) -> int:
        """What can still be created around `used_mask`, as one comparable integer."""
        cached = self._capacity.get(used_mask)
        if cached is not None:
            return cached
        total = 0
        for placements, weight in zip(self.masks, self.weights, strict=True):
            if weight:
                total += weight * sum(1 for _, _, mask in placements if not mask & used_mask)
        self._capacity[used_mask] = total
        return total

    def fragmentation_loss(self, used_mask: int, new_mask: int) -> int:
        """Capacity lost by also occupying `new_mask`; smaller is better."""
        return self.capacity(used_mask) - self.capacity(used_mask | new_mask)
