"""The flat spelling of `allowedGeometries` (HAMi's docs site), read back as geometries.

A flat list of `{name, memory, count}` is grouped into geometries by taking consecutive
entries together while they still fit on the GPU, which recovers the chart's geometries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from migweaver.core.config.checks import fits
from migweaver.core.config.issues import Loc
from migweaver.core.mig.catalog import GpuModel, models_matching

__all__ = ["ungroup_flat_lists"]


def ungroup_flat_lists(
    raw: Mapping[Any, Any],
) -> tuple[dict[Any, Any], dict[int, list[list[int]]], list[tuple[Loc, str]]]:
    """Rewrite every flat `allowedGeometries` into the nested form before validation.

    Returns the rewritten document, per entry index the grouping (geometry -> indices of
    the flat list, so messages can point at the user's own list) and the warnings.
    """
    document = dict(raw)
    nvidia = raw.get("nvidia")
    if not isinstance(nvidia, Mapping):
        return document, {}, []
    entries = nvidia.get("knownMigGeometries")
    if not isinstance(entries, list):
        return document, {}, []
    flat: dict[int, list[list[int]]] = {}
    notes: list[tuple[Loc, str]] = []
    new_entries: list[Any] = []
    for k, entry in enumerate(entries):
        items = entry.get("allowedGeometries") if isinstance(entry, Mapping) else None
        if not (isinstance(items, list) and items and all(isinstance(i, Mapping) for i in items)):
            new_entries.append(entry)
            continue
        groups, note = _group_flat(entry.get("models"), items)
        flat[k] = groups
        notes.append((("nvidia", "knownMigGeometries", k, "allowedGeometries"), note))
        new_entries.append({**entry, "allowedGeometries": [[items[i] for i in g] for g in groups]})
    document["nvidia"] = {**nvidia, "knownMigGeometries": new_entries}
    return document, flat, notes


def _group_flat(models: Any, items: list[Mapping[Any, Any]]) -> tuple[list[list[int]], str]:
    """Group a flat list: consecutive entries form one geometry while they fit together.

    The fit is judged on the entry's catalog model that knows the most of the listed
    profiles. An entry that cannot be judged (malformed, or a profile the model lacks) is a
    geometry of its own, so the validation that follows reports it and the other geometries
    keep their indices. Without a catalog model every entry is a geometry of its own.
    """
    pairs: list[tuple[str, int] | None] = []
    for item in items:
        name, count = item.get("name"), item.get("count")
        # bool is an int to Python, not to YAML users: `count: true` is malformed.
        if isinstance(name, str) and isinstance(count, int) and not isinstance(count, bool):
            pairs.append((name, count) if count >= 1 else None)
        else:
            pairs.append(None)
    prefix = (
        f"allowedGeometries is a flat list of {len(items)} profiles (the spelling of HAMi's "
        "docs site) rather than a list of geometries"
    )
    suffix = "; write a list of lists to state the geometries explicitly"
    model = _model_for_flat(models, [p[0] for p in pairs if p is not None])
    if model is None:
        return [[i] for i in range(len(items))], (
            f"{prefix}; no catalog model of this entry knows its profiles, so each entry is "
            f"read as a geometry of its own{suffix}"
        )
    table = model.table
    groups: list[list[int]] = []
    counts: Counter[str] | None = None  # None: the last group takes no more entries
    for i, pair in enumerate(pairs):
        profile = table.get(pair[0]) if pair is not None else None
        if pair is None or profile is None:
            groups.append([i])
            counts = None
            continue
        trial = Counter(counts) if counts is not None else None
        if trial is not None:
            trial[profile.name] += pair[1]
        if trial is not None and fits(table, trial):
            groups[-1].append(i)
            counts = trial
        else:
            groups.append([i])
            counts = Counter({profile.name: pair[1]})
    shown = "; ".join(
        "[" + ", ".join(f"{p[0]} x{p[1]}" if p else "?" for p in (pairs[i] for i in g)) + "]"
        for g in groups
    )
    return groups, (
        f"{prefix}; read as {len(groups)} geometries by grouping consecutive entries that fit "
        f"on {model.key} together: {shown}{suffix}"
    )


def _model_for_flat(models: Any, names: Sequence[str]) -> GpuModel | None:
    """The entry's catalog model that knows the most of `names` (the first on a tie)."""
    if not isinstance(models, list):
        return None
    best: tuple[int, GpuModel] | None = None
    for config_name in models:
        if not isinstance(config_name, str):
            continue
        for model in models_matching(config_name):
            known = sum(model.table.get(name) is not None for name in names)
            if best is None or known > best[0]:
                best = (known, model)
    return best[1] if best else None
