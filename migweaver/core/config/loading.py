"""Loading a device configuration: YAML, then the flat-list spelling, then the schema,
then the catalog checks. Never raises; every step reports through one `IssueCollector`."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from migweaver.core.config.checks import check_config
from migweaver.core.config.flat_lists import ungroup_flat_lists
from migweaver.core.config.issues import ConfigResult, IssueCollector
from migweaver.core.config.messages import pydantic_message
from migweaver.core.config.schema import CONFIG_KEY, DeviceConfig
from migweaver.core.config.unknown_keys import check_unknown_keys
from migweaver.core.config.yaml_source import ConfigMapText, parse_yaml
from migweaver.core.resources.api import describe_kind

__all__ = ["load_device_config"]


def load_device_config(text: str, source: str = CONFIG_KEY) -> ConfigResult:
    """Parse and check a device configuration; never raises.

    `text` is either the `config.yaml` content (`nvidia:` at the top) or a whole ConfigMap
    manifest whose `data["config.yaml"]` (or HAMi's `data["device-config.yaml"]`) holds it.
    `source` names the input in messages. Geometry indices in messages are 0-based, as in the paths.
    """
    issues = IssueCollector()
    raw = parse_yaml(text, source, issues)
    if raw is None:
        return issues.result(None, source)
    if isinstance(raw, ConfigMapText):
        inner = parse_yaml(raw.text, source, issues, raw)
        if inner is None:
            return issues.result(None, source)
        raw = inner
    if not isinstance(raw, Mapping):
        issues.error(
            source,
            "expected a mapping with an `nvidia:` block, or a ConfigMap whose "
            f"data[{CONFIG_KEY!r}] holds one; got {describe_kind(raw)}",
        )
        return issues.result(None, source)

    check_unknown_keys(raw, issues)
    document, flat, flat_notes = ungroup_flat_lists(raw)
    issues.flat = flat
    for loc, message in flat_notes:
        issues.warn(loc, message)
    try:
        config = DeviceConfig.model_validate(document)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            issues.error(tuple(err["loc"]), pydantic_message(err))
        return issues.result(None, source)
    check_config(config, issues)
    return issues.result(config, source)
