"""HAMi's device configuration (the `nvidia:` block), loaded, checked and resolved.

The geometry ConfigMap (`migweaver-device-config`, key `config.yaml`) accepts the seed
documents' `nvidia:` block unchanged. Loading never raises: `load_device_config` returns a
`ConfigResult` with the typed `DeviceConfig` (or None) and every error and warning, each
pointing at the offending key (`nvidia.knownMigGeometries[1].allowedGeometries[2][0].name`),
so the operator can keep the last valid configuration and say exactly why a new one was
refused, and `migweaver check-config` can print the same list.

Two spellings of `allowedGeometries` exist in the wild: a list of geometries, each a list
of `{name, memory, count}` (HAMi's chart, seed 000), and a *flat* list of
`{name, memory, count}` (HAMi's docs site, seed 001: the same config with the nesting lost
in formatting). A flat list is read back by grouping consecutive entries into one geometry
while they still fit on the GPU together, which recovers the chart's geometries exactly.

Profiles are matched by name (aliases such as `7g.79gb` included), never by size: the
`memory` of a geometry entry is the operator's configured view, NVML's size is the truth.

Modules: `schema` (the typed `nvidia:` block and the ConfigMap's names), `allowed_geometry`
(a resolved geometry), `loading` (the pipeline), `yaml_source` (YAML and ConfigMap text),
`flat_lists` (the flat spelling), `checks` (catalog checks), `issues` (errors and warnings
with their key paths), `messages` (plain-language messages), `summary` (`check-config`'s
summary) and `reload` (what the operator keeps in force when the ConfigMap changes).
"""

from __future__ import annotations

from migweaver.core.config.allowed_geometry import Geometry
from migweaver.core.config.checks import MEMORY_TOLERANCE
from migweaver.core.config.issues import ConfigIssue, ConfigResult
from migweaver.core.config.loading import load_device_config
from migweaver.core.config.schema import (
    CONFIG_KEY,
    CONFIGMAP_NAME,
    DeviceConfig,
    KnownMigGeometry,
    MigGeometryEntry,
    NvidiaConfig,
)
from migweaver.core.config.summary import summarize

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIG_KEY",
    "MEMORY_TOLERANCE",
    "ConfigIssue",
    "ConfigResult",
    "DeviceConfig",
    "Geometry",
    "KnownMigGeometry",
    "MigGeometryEntry",
    "NvidiaConfig",
    "load_device_config",
    "summarize",
]
