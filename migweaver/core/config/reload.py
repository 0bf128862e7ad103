"""Reloading the geometry ConfigMap: a new valid version replaces the old, an invalid one
never does.

The operator reads ConfigMap `migweaver-device-config` (key `config.yaml`, or HAMi's
`device-config.yaml`: HAMi's ConfigMap's data can be used as it is) when it starts
and whenever it changes. `reload` decides what is in force next:

- same `resourceVersion` as last time: nothing to do (`unchanged`);
- a version that loads without errors: it is in force (`loaded`, with its warnings);
- a version with errors, or with neither key (or both): the configuration in force
  stays, and the outcome is `invalid` with every error (the operator posts a Warning
  Event and counts `migweaver_config_reload_failures_total`);
- no ConfigMap at all: HAMi's defaults with no configured geometries (`removed`), the
  same as an operator started without one, so a restart never changes what is in force.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from migweaver.core.config import DeviceConfig, load_device_config
from migweaver.core.config.yaml_source import config_key

__all__ = ["DEFAULT_CONFIG", "ConfigInForce", "ReloadOutcome", "reload"]

DEFAULT_CONFIG: Final = DeviceConfig.model_validate({"nvidia": {}})

Outcome = Literal["unchanged", "loaded", "invalid", "removed"]


@dataclass(frozen=True, slots=True)
class ConfigInForce:
    """The configuration in force and the ConfigMap version it was last compared with."""

    config: DeviceConfig = DEFAULT_CONFIG
    version: str | None = None
    """resourceVersion of the ConfigMap last looked at (valid or not); None: none seen."""


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    outcome: Outcome
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def reload(
    current: ConfigInForce, configmap: Mapping[str, Any] | None
) -> tuple[ConfigInForce, ReloadOutcome]:
    """What is in force after seeing `configmap` (None: it does not exist)."""
    if configmap is None:
        if current.version is None and current.config == DEFAULT_CONFIG:
            return current, ReloadOutcome("unchanged")
        return ConfigInForce(), ReloadOutcome("removed")
    metadata = configmap.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    version = str(meta.get("resourceVersion") or "")
    if version and version == current.version:
        return current, ReloadOutcome("unchanged")
    data = configmap.get("data")
    key, why_not = config_key(data) if isinstance(data, Mapping) else (None, "has no data")
    text = data.get(key) if key is not None and isinstance(data, Mapping) else None
    if key is None or not isinstance(text, str):
        keep = ConfigInForce(current.config, version)
        why = why_not or f"data[{key!r}] is not a string"
        return keep, ReloadOutcome("invalid", (f"the ConfigMap {why}",))
    result = load_device_config(text, key)
    warnings = tuple(str(w) for w in result.warnings)
    if not result.ok or result.config is None:
        errors = tuple(str(e) for e in result.errors)
        return ConfigInForce(current.config, version), ReloadOutcome("invalid", errors, warnings)
    return ConfigInForce(result.config, version), ReloadOutcome("loaded", (), warnings)
