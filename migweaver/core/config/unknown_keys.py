"""Keys nobody reads: a typo (`knownMigGeomtries`) or a HAMi setting migweaver does not
use is a warning naming the key, never silently dropped.

The models keep unknown keys (`extra="allow"`: HAMi adds settings over time), so nothing
fails on them; this check walks the user's document and says, for each key migweaver does
not know, which known key is nearest. HAMi's own `nvidia:` settings that only concern
HAMi's scheduler or HAMi-core (`gpuCorePolicy`, `migProfileAllowlist`, ...) are named as
such. The blocks of HAMi's other vendors (`cambricon:`, `vnpus:`, ...) sit beside
`nvidia:` in HAMi's ConfigMap and are left alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import BaseModel

from migweaver.core.config.issues import IssueCollector, Loc
from migweaver.core.config.schema import KnownMigGeometry, MigGeometryEntry, NvidiaConfig

__all__ = ["HAMI_NVIDIA_KEYS", "HAMI_VENDOR_BLOCKS", "check_unknown_keys", "nearest_key"]

HAMI_VENDOR_BLOCKS: Final = frozenset(
    {
        "amd", "awsneuron", "biren", "cambricon", "enflame", "hygon", "iluvatar", "iluvatars",
        "kunlun", "metax", "mthreads", "vastai", "vnpus",
    }
)  # fmt: skip
"""Top-level blocks of HAMi's device-config.yaml for devices other than NVIDIA's."""

HAMI_NVIDIA_KEYS: Final = frozenset(
    {
        "preConfiguredDeviceMemory", "memoryFactor", "enableNumaTopology", "gpuCorePolicy",
        "libCudaLogLevel", "runtimeClassName", "migProfileAllowlist", "disableCoreLimit",
        "migStrategy",
    }
)  # fmt: skip
"""HAMi's `nvidia:` settings that migweaver does not use (its scheduler's, HAMi-core's)."""


def _names(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a model reads, as written in the file (the alias where there is one)."""
    return tuple(field.alias or name for name, field in model.model_fields.items())


NVIDIA_KEYS: Final = _names(NvidiaConfig)
ENTRY_KEYS: Final = _names(KnownMigGeometry)
GEOMETRY_ITEM_KEYS: Final = _names(MigGeometryEntry)


def nearest_key(key: str, known: Iterable[str]) -> str:
    """The known key most like `key` (by difflib's ratio, case-insensitive)."""
    choices = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(choices), n=1, cutoff=0.0)
    return choices[close[0]] if close else ""


def check_unknown_keys(raw: Mapping[Any, Any], issues: IssueCollector) -> None:
    """Warn about every key of `raw` (the user's document, before any rewriting) that
    migweaver does not read."""
    for key in raw:
        if key != "nvidia" and str(key) not in HAMI_VENDOR_BLOCKS:
            _unknown(issues, (str(key),), str(key), ("nvidia",))
    nvidia = raw.get("nvidia")
    if not isinstance(nvidia, Mapping):
        return
    for key in nvidia:
        name = str(key)
        if name in NVIDIA_KEYS:
            continue
        if name in HAMI_NVIDIA_KEYS:
            issues.warn(("nvidia", name), "a HAMi setting migweaver does not use: ignored")
        else:
            _unknown(issues, ("nvidia", name), name, NVIDIA_KEYS)
    entries = nvidia.get("knownMigGeometries")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, Mapping):
            continue
        at: Loc = ("nvidia", "knownMigGeometries", i)
        _check(issues, entry, at, ENTRY_KEYS)
        geometries = entry.get("allowedGeometries")
        for j, geometry in enumerate(geometries if isinstance(geometries, list) else []):
            here: Loc = (*at, "allowedGeometries", j)
            if isinstance(geometry, Mapping):  # the flat spelling: one item
                _check(issues, geometry, here, GEOMETRY_ITEM_KEYS)
            elif isinstance(geometry, list):
                for k, item in enumerate(geometry):
                    if isinstance(item, Mapping):
                        _check(issues, item, (*here, k), GEOMETRY_ITEM_KEYS)


def _check(issues: IssueCollector, obj: Mapping[Any, Any], at: Loc, known: tuple[str, ...]) -> None:
    for key in obj:
        if str(key) not in known:
            _unknown(issues, (*at, str(key)), str(key), known)


def _unknown(issues: IssueCollector, loc: Loc, key: str, known: Iterable[str]) -> None:
    issues.warn(
        loc, f"unknown key {key!r}, ignored; the nearest known key is {nearest_key(key, known)!r}"
    )
