"""Where NVML's profile table of a GPU and the built-in catalog's entry for its model differ.

NVML is the truth on a running node: the agent reports NVML's table and the operator plans
with it. The catalog is only a default for GPUs that have not reported yet, so a wrong
catalog figure (docs/agent.md tells how the H200 figures were found) would only bite
before the first report, or in the simulator. Listing the differences is how a wrong
entry is found in production: the agent puts them in a MigLayout condition and an Event,
and a metric can count them (`catalog_mismatches` is pure and cheap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from migweaver.core.mig.profiles import MigProfile, ProfileTable, normalize_profile_name

__all__ = ["CatalogMismatch", "catalog_mismatches", "describe_mismatches"]

_FIELDS: Final = (
    ("memory_mib", "memory MiB"),
    ("compute_slices", "slices"),
    ("max_count", "max count"),
    ("placements", "placements"),
    ("sm_count", "SMs"),
)


@dataclass(frozen=True, slots=True, order=True)
class CatalogMismatch:
    """One difference for one profile id: what NVML says and what the catalog says.

    `field` is `memory MiB`, `slices`, `max count`, `placements`, `SMs` or `name`, or
    `profile` when one side lacks the profile altogether (`nvml` / `catalog` is then
    `absent`).
    """

    profile_id: int
    field: str
    nvml: str
    catalog: str
    profile: str = ""

    def describe(self) -> str:
        name = f"{self.profile} (id {self.profile_id})" if self.profile else f"id {self.profile_id}"
        return f"{name} {self.field}: NVML {self.nvml}, catalog {self.catalog}"


def catalog_mismatches(nvml: ProfileTable, catalog: ProfileTable) -> tuple[CatalogMismatch, ...]:
    """Every difference between NVML's table and the catalog's, by profile id, sorted.

    Names differ only when NVML's name is neither the catalog's name nor one of its
    aliases (`3g.39gb` for `3g.40gb` is not a difference). An SM count the catalog does
    not know (None) is not compared, nor one NVML leaves at 0.
    """
    found: list[CatalogMismatch] = []
    for profile in nvml.profiles:
        known = catalog.by_id(profile.profile_id)
        if known is None:
            found.append(
                CatalogMismatch(profile.profile_id, "profile", "present", "absent", profile.name)
            )
            continue
        found.extend(_field_mismatches(profile, known))
    reported = {p.profile_id for p in nvml.profiles}
    found.extend(
        CatalogMismatch(p.profile_id, "profile", "absent", "present", p.name)
        for p in catalog.profiles
        if p.profile_id not in reported
    )
    return tuple(sorted(found))


def describe_mismatches(mismatches: Sequence[CatalogMismatch], limit: int = 8) -> str:
    """One line for a condition or an Event: the first `limit` differences, then a count."""
    shown = "; ".join(m.describe() for m in mismatches[:limit])
    rest = len(mismatches) - limit
    return f"{shown}; and {rest} more" if rest > 0 else shown


def _field_mismatches(profile: MigProfile, known: MigProfile) -> list[CatalogMismatch]:
    found = []
    names = {normalize_profile_name(n) for n in (known.name, *known.aliases)}
    if normalize_profile_name(profile.name) not in names:
        found.append(CatalogMismatch(profile.profile_id, "name", profile.name, known.name))
    for attribute, label in _FIELDS:
        ours, theirs = getattr(profile, attribute), getattr(known, attribute)
        if attribute == "sm_count" and (not ours or theirs is None):
            continue
        if ours != theirs:
            found.append(
                CatalogMismatch(profile.profile_id, label, _text(ours), _text(theirs), profile.name)
            )
    return found


def _text(value: object) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "none"
    return str(value)
