"""A human summary of a loaded configuration (`migweaver check-config`)."""

from __future__ import annotations

from migweaver.core.config.allowed_geometry import describe_profiles
from migweaver.core.config.issues import ConfigResult
from migweaver.core.mig.catalog import CATALOG, models_matching

__all__ = ["summarize"]


def summarize(result: ConfigResult) -> str:
    """A human summary: per entry the models and geometries, the models without any, and
    the resource names and defaults. For an invalid result, the number of errors."""
    config = result.config
    if config is None:
        count = len(result.errors)
        return f"{result.source}: invalid device configuration ({count} error{'s' * (count != 1)})"
    n = config.nvidia
    lines = [f"{result.source}: valid device configuration"]
    covered: set[str] = set()
    if n.known_mig_geometries:
        lines.append("knownMigGeometries (the first matching entry wins):")
    for k, entry in enumerate(n.known_mig_geometries):
        matched = [m.key for name in entry.models for m in models_matching(name)]
        fresh = list(dict.fromkeys(key for key in matched if key not in covered))
        covered.update(matched)
        catalog = f" (catalog: {', '.join(fresh)})" if fresh else " (not in the catalog)"
        geometries = len(entry.allowed_geometries)
        lines.append(
            f"  [{k}] {', '.join(dict.fromkeys(entry.models))}: {geometries} "
            f"geometr{'ies' if geometries != 1 else 'y'}{catalog}"
        )
        for geometry in entry.allowed_geometries:
            lines.append(
                f"        {describe_profiles((item.name, item.count) for item in geometry)}"
            )
    free = [m.key for m in CATALOG if m.key not in covered]
    if free:
        lines.append(f"any valid layout (no configured geometries): {', '.join(free)}")
    lines.append(
        f"resources: {n.resource_count_name}, {n.resource_memory_name}, "
        f"{n.resource_memory_percentage_name}, {n.resource_core_name}, "
        f"{n.resource_priority_name}"
    )
    lines.append(
        f"defaults: defaultMemory {n.default_memory} MiB, defaultCores {n.default_cores} %, "
        f"defaultGPUNum {n.default_gpu_num}"
    )
    lines.append(
        f"hami-core sharing: deviceSplitCount {n.device_split_count}, "
        f"deviceMemoryScaling {n.device_memory_scaling:g}, "
        f"deviceCoreScaling {n.device_core_scaling:g}"
    )
    if result.warnings:
        count = len(result.warnings)
        lines.append(f"{count} warning{'s' * (count != 1)}")
    return "\n".join(lines)
