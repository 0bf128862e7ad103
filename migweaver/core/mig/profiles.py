"""MIG profiles and placements: the vocabulary shared by the catalog, geometry and planner.

A GPU instance occupies a contiguous run of *memory slots* (8 on A100/H100/H200/B200,
4 on A30). NVML calls that run a `placement` (`start`, `size`); the compute slices sit on
memory slots 0..6, so two instances that do not share a memory slot never share compute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

_PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb(?P<suffix>(\+[a-z.]+|-[a-z]+)*)$")


@dataclass(frozen=True, slots=True, order=True)
class Placement:
    """A run of memory slots on one GPU, as NVML's `nvmlGpuInstancePlacement_t`."""

    start: int
    size: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.size < 1:
            raise ValueError(f"invalid placement start={self.start} size={self.size}")

    @property
    def end(self) -> int:
        """One past the last slot."""
        return self.start + self.size

    @property
    def mask(self) -> int:
        """The occupied slots as a bit mask (bit i = memory slot i)."""
        return ((1 << self.size) - 1) << self.start

    def overlaps(self, other: Placement) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start}:{self.size}"


def normalize_profile_name(name: str) -> str:
    """Profile names compare case-insensitively and without NVML's `MIG ` prefix."""
    text = name.strip()
    if text.upper().startswith("MIG "):
        text = text[4:]
    return text.strip().lower()


def compute_slices_of(name: str) -> int | None:
    """The `Ng` part of a profile name (`3g.40gb` -> 3), or None when it does not parse."""
    match = _PROFILE_NAME.match(normalize_profile_name(name))
    return int(match.group("g")) if match else None


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile of one GPU model.

    `profile_id` is what NVML's create and placement calls take; `index` is the
    `NVML_GPU_INSTANCE_PROFILE_*` constant that `nvmlDeviceGetGpuInstanceProfileInfo`
    takes. Mixing the two up is the classic NVML bug, so both are kept.
    """

    name: str
    profile_id: int
    index: int
    compute_slices: int
    memory_mib: int
    placements: tuple[Placement, ...]
    max_count: int
    sm_count: int | None = None
    media_extensions: bool = False
    aliases: tuple[str, ...] = ()
    confirmed: bool = True
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.placements:
            raise ValueError(f"profile {self.name} has no placements")
        sizes = {p.size for p in self.placements}
        if len(sizes) != 1:
            raise ValueError(f"profile {self.name} has placements of several sizes: {sizes}")
        names = {normalize_profile_name(self.name)}
        names.update(normalize_profile_name(a) for a in self.aliases)
        object.__setattr__(self, "_names", frozenset(names))

    @property
    def memory_slices(self) -> int:
        """How many memory slots one instance of this profile occupies."""
        return self.placements[0].size


@dataclass(frozen=True, slots=True)
class ProfileTable:
    """The profiles one GPU supports and the number of memory slots they share.

    Built from the catalog for a known model, or from what NVML reports for a real GPU
    (which wins: an unknown future model still works).
    """

    memory_slots: int
    profiles: tuple[MigProfile, ...]
    _by_name: dict[str, MigProfile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, MigProfile] = {}
        for profile in self.profiles:
            for name in profile._names:
                by_name.setdefault(name, profile)
            for placement in profile.placements:
                if placement.end > self.memory_slots:
                    raise ValueError(
                        f"profile {profile.name} placement {placement} is beyond "
                        f"{self.memory_slots} memory slots"
                    )
        object.__setattr__(self, "_by_name", by_name)

    def get(self, name: str) -> MigProfile | None:
        """The profile with this name or alias, or None."""
        return self._by_name.get(normalize_profile_name(name))

    def by_id(self, profile_id: int) -> MigProfile | None:
        return next((p for p in self.profiles if p.profile_id == profile_id), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)


def with_catalog_aliases(reported: ProfileTable, catalog: ProfileTable | None) -> ProfileTable:
    """NVML's profiles, also answering to the catalog's names and aliases of the same
    profile (same id, slices and placements): a configured geometry or a spec that says
    `7g.79gb` must still match a driver that reports `7g.80gb`. NVML's values stay."""
    if catalog is None:
        return reported
    profiles = []
    for profile in reported.profiles:
        known = catalog.by_id(profile.profile_id)
        if (
            known is None
            or known.compute_slices != profile.compute_slices
            or known.placements != profile.placements
        ):
            profiles.append(profile)
            continue
        own = normalize_profile_name(profile.name)
        names = (*profile.aliases, known.name, *known.aliases)
        aliases = tuple(dict.fromkeys(n for n in names if normalize_profile_name(n) != own))
        profiles.append(replace(profile, aliases=aliases))
    return ProfileTable(reported.memory_slots, tuple(profiles))
