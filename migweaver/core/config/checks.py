"""Catalog checks of a typed configuration: models known, profiles known, counts at least
1, configured memory near NVML's, and every geometry fits on its GPU.

Each check reports through an `IssueCollector` with the key path it is about; a new check
is one more function called from `check_geometries` (or `check_config`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from migweaver.core.config.allowed_geometry import describe_profiles
from migweaver.core.config.issues import IssueCollector, Loc
from migweaver.core.config.schema import DeviceConfig, MigGeometryEntry
from migweaver.core.mig.catalog import GpuModel, models_matching
from migweaver.core.mig.geometry import fit_profiles
from migweaver.core.mig.profiles import MigProfile, ProfileTable

__all__ = ["MEMORY_TOLERANCE", "check_config", "check_geometries", "fits"]

MEMORY_TOLERANCE: Final = 0.10
"""A configured `memory` further than this from the catalog's MiB gets a warning."""


def check_config(config: DeviceConfig, issues: IssueCollector) -> None:
    """Every check of a configuration that validated against the schema."""
    check_geometries(config, issues)


def check_geometries(config: DeviceConfig, issues: IssueCollector) -> None:
    """Catalog checks: models known, profiles known, counts >= 1, each geometry fits."""
    claimed: dict[str, int] = {}
    for k, entry in enumerate(config.nvidia.known_mig_geometries):
        base: Loc = ("nvidia", "knownMigGeometries", k)
        matched: list[GpuModel] = []
        for i, name in enumerate(entry.models):
            found = models_matching(name)
            if not found:
                issues.warn(
                    (*base, "models", i),
                    f"model {name!r} is not in the catalog: its geometries are checked "
                    "against the profiles NVML reports when such a GPU shows up",
                )
            for model in found:
                if model not in matched:
                    matched.append(model)
                first = claimed.setdefault(model.key, k)
                if first != k:
                    issues.warn(
                        (*base, "models", i),
                        f"{model.key} is already configured by knownMigGeometries[{first}]; "
                        "the first matching entry wins (as in HAMi), so this entry does not "
                        "apply to it",
                    )
        entry_label = "/".join(dict.fromkeys(entry.models))
        groups = _table_groups(matched)
        for g, geometry in enumerate(entry.allowed_geometries):
            _check_geometry(
                issues, (*base, "allowedGeometries", g), g, entry_label, geometry, groups
            )


def _check_geometry(
    issues: IssueCollector,
    loc: Loc,
    g: int,
    entry_label: str,
    geometry: Sequence[MigGeometryEntry],
    groups: Sequence[tuple[str, ProfileTable]],
) -> None:
    counts_ok = True
    for j, item in enumerate(geometry):
        if item.count < 1:
            counts_ok = False
            issues.error(
                (*loc, j, "count"),
                f"geometry {g} of {entry_label}: count of {item.name} must be at least 1 "
                f"(got {item.count})",
            )
        if item.memory is None:
            issues.warn(
                (*loc, j, "memory"),
                f"geometry {g} of {entry_label}: no memory for {item.name}; HAMi would read "
                "0 MiB, migweaver uses the size NVML reports",
            )
    for label, table in groups:
        resolved: list[MigProfile] = []
        for j, item in enumerate(geometry):
            profile = table.get(item.name)
            if profile is None:
                issues.error(
                    (*loc, j, "name"),
                    f"geometry {g} of {label}: unknown profile {item.name!r} "
                    f"(known: {', '.join(table.names)})",
                )
                continue
            resolved.append(profile)
            _check_memory(issues, (*loc, j, "memory"), g, label, item, profile)
        if counts_ok and len(resolved) == len(geometry):
            counts: Counter[str] = Counter()
            for item, profile in zip(geometry, resolved, strict=True):
                counts[profile.name] += item.count
            if not fits(table, counts):
                shown = describe_profiles((item.name, item.count) for item in geometry)
                issues.error(
                    loc,
                    f"geometry {g} of {label} ({shown}) does not fit on {table.memory_slots} "
                    f"memory slots{_why_not(table, counts)}",
                )


def _check_memory(
    issues: IssueCollector,
    loc: Loc,
    g: int,
    label: str,
    item: MigGeometryEntry,
    profile: MigProfile,
) -> None:
    if item.memory is None or profile.memory_mib <= 0:
        return
    off = abs(item.memory - profile.memory_mib) / profile.memory_mib
    if off > MEMORY_TOLERANCE:
        estimate = "" if profile.confirmed else " (a catalog estimate)"
        issues.warn(
            loc,
            f"geometry {g} of {label}: memory {item.memory} MiB for {item.name} is "
            f"{off:.0%} off the {profile.memory_mib} MiB{estimate} NVML reports for "
            f"{profile.name}; NVML's size wins, but HAMi matches nvidia.com/gpumem "
            "against the configured value",
        )


def fits(table: ProfileTable, counts: Mapping[str, int]) -> bool:
    """Whether the counts fit on one GPU; a count above the profile's maximum is refused
    first, so a huge configured count never reaches `fit_profiles` (which expands counts)."""
    for name, count in counts.items():
        profile = table.get(name)
        if profile is None or count > profile.max_count:
            return False
    return fit_profiles(table, counts) is not None


def _why_not(table: ProfileTable, counts: Mapping[str, int]) -> str:
    """The plainest reason `fit_profiles` refused, for the error message."""
    media = 0
    for name, count in counts.items():
        profile = table.get(name)
        if profile is None:
            continue
        if count > profile.max_count:
            return f" (at most {profile.max_count} x {profile.name})"
        if profile.media_extensions:
            media += count
    if media > 1:
        return " (at most one +me instance per GPU)"
    slots = 0
    for name, count in counts.items():
        profile = table.get(name)
        slots += profile.memory_slices * count if profile else 0
    if slots > table.memory_slots:
        return f" (needs {slots})"
    return " (no arrangement of the allowed placements holds them all)"


def _table_groups(models: Iterable[GpuModel]) -> list[tuple[str, ProfileTable]]:
    """Matched models grouped by identical profile tables, each with a label such as
    `A100-SXM4-40GB/A100-PCIE-40GB`, so one problem is reported once, not per model."""
    groups: dict[Any, tuple[list[str], ProfileTable]] = {}
    for model in models:
        table = model.table
        signature = (
            table.memory_slots,
            tuple(
                (p.name, p.aliases, p.placements, p.max_count, p.memory_mib, p.media_extensions)
                for p in table.profiles
            ),
        )
        groups.setdefault(signature, ([], table))[0].append(model.key)
    return [("/".join(keys), table) for keys, table in groups.values()]
