"""Geometry of MIG layouts: which sets of placed instances a GPU accepts.

The rules are NVML's (docs/mig-reference.md section 2): every instance sits at one of its profile's
allowed placements, no two instances share a memory slot, no profile exceeds its maximum
count, and at most one `+me` (media extensions) instance exists. Occupancy is a bit mask
of memory slots, so every check here is a handful of integer operations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable

__all__ = [
    "LayoutProblem",
    "PlacedInstance",
    "Placement",
    "ProblemKind",
    "can_add",
    "fit_profiles",
    "free_placements",
    "is_valid_layout",
    "layout_problems",
    "maximal_combinations",
    "maximal_layouts",
    "occupied_mask",
    "valid_layouts",
]


@dataclass(frozen=True, slots=True, order=True)
class PlacedInstance:
    """A GPU instance of a profile at a placement (what a MigLayout lists)."""

    profile: str
    placement: Placement

    def __str__(self) -> str:
        return f"{self.profile}@{self.placement}"


class ProblemKind(StrEnum):
    UNKNOWN_PROFILE = "UnknownProfile"
    DISALLOWED_PLACEMENT = "DisallowedPlacement"
    OVERLAP = "Overlap"
    TOO_MANY = "TooMany"
    MEDIA_EXTENSIONS = "MediaExtensions"


@dataclass(frozen=True, slots=True)
class LayoutProblem:
    """Why a layout is not one NVML would accept; `index` points into the instance list."""

    kind: ProblemKind
    message: str
    index: int | None = None


def occupied_mask(placements: Iterable[Placement]) -> int:
    mask = 0
    for placement in placements:
        mask |= placement.mask
    return mask


def layout_problems(
    table: ProfileTable, instances: Sequence[PlacedInstance]
) -> list[LayoutProblem]:
    """Every reason this list of instances is not a valid layout (empty when it is)."""
    problems: list[LayoutProblem] = []
    counts: Counter[str] = Counter()
    media = 0
    for i, inst in enumerate(instances):
        profile = table.get(inst.profile)
        if profile is None:
            problems.append(
                LayoutProblem(
                    ProblemKind.UNKNOWN_PROFILE,
                    f"instance {i}: profile {inst.profile!r} is not supported "
                    f"(known: {', '.join(table.names)})",
                    i,
                )
            )
            continue
        if inst.placement not in profile.placements:
            allowed = ", ".join(str(p) for p in profile.placements)
            problems.append(
                LayoutProblem(
                    ProblemKind.DISALLOWED_PLACEMENT,
                    f"instance {i}: {profile.name} cannot be placed at {inst.placement} "
                    f"(allowed start:size: {allowed})",
                    i,
                )
            )
        counts[profile.name] += 1
        if counts[profile.name] == profile.max_count + 1:
            problems.append(
                LayoutProblem(
                    ProblemKind.TOO_MANY,
                    f"instance {i}: more than {profile.max_count} x {profile.name}",
                    i,
                )
            )
        if profile.media_extensions:
            media += 1
            if media == 2:
                problems.append(
                    LayoutProblem(
                        ProblemKind.MEDIA_EXTENSIONS,
                        f"instance {i}: at most one +me instance per GPU",
                        i,
                    )
                )
    for i, a in enumerate(instances):
        for j in range(i):
            b = instances[j]
            if a.placement.overlaps(b.placement):
                problems.append(
                    LayoutProblem(
                        ProblemKind.OVERLAP,
                        f"instance {i} ({a}) overlaps instance {j} ({b})",
                        i,
                    )
                )
    return problems


def is_valid_layout(table: ProfileTable, instances: Sequence[PlacedInstance]) -> bool:
    return not layout_problems(table, instances)


def _room_for(
    profile: MigProfile, table: ProfileTable, instances: Iterable[PlacedInstance]
) -> bool:
    """Whether count limits (per profile, and one +me per GPU) leave room for one more."""
    same = 0
    media = 0
    for inst in instances:
        other = table.get(inst.profile)
        if other is None:
            continue
        if other is profile:
            same += 1
        if other.media_extensions:
            media += 1
    return same < profile.max_count and not (profile.media_extensions and media > 0)


def free_placements(
    table: ProfileTable, instances: Sequence[PlacedInstance], profile_name: str
) -> list[Placement]:
    """The placements at which one more `profile_name` instance could be created now."""
    profile = table.get(profile_name)
    if profile is None or not _room_for(profile, table, instances):
        return []
    used = occupied_mask(i.placement for i in instances)
    return [p for p in profile.placements if not p.mask & used]


def can_add(
    table: ProfileTable,
    instances: Sequence[PlacedInstance],
    profile_name: str,
    placement: Placement,
) -> bool:
    return placement in free_placements(table, instances, profile_name)


def _candidates(table: ProfileTable, include_media: bool) -> list[tuple[MigProfile, Placement]]:
    return sorted(
        (
            (profile, placement)
            for profile in table.profiles
            if include_media or not profile.media_extensions
            for placement in profile.placements
        ),
        key=lambda item: (item[1].start, -item[1].size, item[0].profile_id),
    )


def valid_layouts(
    table: ProfileTable, include_media_extensions: bool = False
) -> list[tuple[PlacedInstance, ...]]:
    """Every valid layout of a GPU (including the empty one), each sorted by start slot."""
    candidates = _candidates(table, include_media_extensions)
    layouts: list[tuple[PlacedInstance, ...]] = []

    def extend(first: int, chosen: list[PlacedInstance], used: int) -> None:
        layouts.append(tuple(chosen))
        for k in range(first, len(candidates)):
            profile, placement = candidates[k]
            if placement.mask & used or not _room_for(profile, table, chosen):
                continue
            chosen.append(PlacedInstance(profile.name, placement))
            extend(k + 1, chosen, used | placement.mask)
            chosen.pop()

    extend(0, [], 0)
    return layouts


def maximal_layouts(
    table: ProfileTable, include_media_extensions: bool = False
) -> list[tuple[PlacedInstance, ...]]:
    """Valid layouts to which no further instance can be added."""
    names = [p.name for p in table.profiles if include_media_extensions or not p.media_extensions]
    return [
        layout
        for layout in valid_layouts(table, include_media_extensions)
        if not any(free_placements(table, layout, name) for name in names)
    ]


def _combination(layout: Iterable[PlacedInstance]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(Counter(i.profile for i in layout).items()))


def maximal_combinations(
    table: ProfileTable, include_media_extensions: bool = False
) -> list[tuple[tuple[str, int], ...]]:
    """The distinct profile combinations of the maximal layouts, as `((name, count), ...)`.

    This is how NVIDIA counts "MIG configurations": on A100-40GB (without +me) there are
    38, 17 of which use all 7 compute slices.
    """
    return sorted(
        {_combination(layout) for layout in maximal_layouts(table, include_media_extensions)}
    )


def fit_profiles(
    table: ProfileTable,
    counts: Mapping[str, int],
    fixed: Sequence[PlacedInstance] = (),
) -> tuple[PlacedInstance, ...] | None:
    """Place `counts` (profile name -> how many) around the `fixed` instances, or None.

    Larger instances are placed first, each at its lowest free allowed start; the search
    backtracks, so the answer is None only when no arrangement exists. Deterministic.
    """
    wanted: list[MigProfile] = []
    for name, count in counts.items():
        profile = table.get(name)
        if profile is None:
            return None
        wanted.extend([profile] * count)
    wanted.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, p.profile_id))
    placed = list(fixed)

    def place(k: int, used: int) -> bool:
        if k == len(wanted):
            return True
        profile = wanted[k]
        if not _room_for(profile, table, placed):
            return False
        for placement in profile.placements:
            if placement.mask & used:
                continue
            # Identical profiles are placed in increasing start order: no duplicate search.
            if k > 0 and wanted[k - 1] is profile and placement <= placed[-1].placement:
                continue
            placed.append(PlacedInstance(profile.name, placement))
            if place(k + 1, used | placement.mask):
                return True
            placed.pop()
        return False

    if not place(0, occupied_mask(i.placement for i in fixed)):
        return None
    return tuple(placed[len(fixed) :])
