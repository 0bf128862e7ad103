"""Reading the YAML a user wrote: a `config.yaml` text, or a whole ConfigMap manifest
(one of several documents) whose `data["config.yaml"]` holds it, or HAMi's own
`hami-scheduler-device` ConfigMap as it is (`data["device-config.yaml"]`).

A YAML error is reported at its line in the file the user edits, also inside a ConfigMap's
`|` block. Accepting another data key, or another spelling of the document, belongs here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from migweaver.core.config.issues import IssueCollector
from migweaver.core.config.schema import CONFIG_KEY, CONFIG_KEYS, CONFIGMAP_NAME
from migweaver.core.resources.api import describe_kind

__all__ = ["ConfigMapText", "config_key", "parse_yaml"]

_HELM_TEMPLATE: Final = re.compile(r"\{\s*\{")


@dataclass(frozen=True, slots=True)
class ConfigMapText:
    """The `config.yaml` text of a ConfigMap and where it sits in the manifest."""

    text: str
    line_offset: int | None = None
    column_offset: int = 0
    key: str = CONFIG_KEY
    """The data key it came from: `config.yaml`, or HAMi's `device-config.yaml`."""


def config_key(data: Mapping[Any, Any]) -> tuple[str | None, str | None]:
    """Which data key of a ConfigMap holds the configuration: `(key, None)`, or
    `(None, why not)` when it has neither key or both (which one would be meant?)."""
    present = [k for k in CONFIG_KEYS if k in data]
    if len(present) == 1:
        return present[0], None
    if present:
        return None, f"has both keys {CONFIG_KEYS[0]!r} and {CONFIG_KEYS[1]!r}; keep one"
    keys = ", ".join(repr(str(k)) for k in data) or "none"
    return None, (
        f"has no key {CONFIG_KEYS[0]!r} (nor HAMi's {CONFIG_KEYS[1]!r}) in data (its keys: {keys})"
    )


def parse_yaml(
    text: str, source: str, issues: IssueCollector, embedded: ConfigMapText | None = None
) -> Any:
    """The parsed document, a `ConfigMapText` for a ConfigMap, or None after an error."""
    where = f"data[{embedded.key!r}]" if embedded else source
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        issues.error(where, _yaml_message(exc, text, source, embedded))
        return None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: PyYAML's timestamp constructor on dates such as 2024-13-01.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        issues.error(where, f"invalid YAML: {first_line}")
        return None
    if not documents:
        issues.error(where, "the document is empty")
        return None
    if embedded is not None:
        if len(documents) > 1:
            issues.error(where, f"expected one YAML document, found {len(documents)}")
            return None
        return documents[0]
    index = _pick_document(documents, source, issues)
    if index is None:
        return None
    document = documents[index]
    if isinstance(document, Mapping) and document.get("kind") == "ConfigMap":
        return _configmap_text(document, text, index, issues)
    return document


def _pick_document(documents: list[Any], source: str, issues: IssueCollector) -> int | None:
    """With several documents (a multi-resource manifest), the one ConfigMap with config."""
    if len(documents) == 1:
        return 0
    candidates = [
        i
        for i, d in enumerate(documents)
        if isinstance(d, Mapping)
        and d.get("kind") == "ConfigMap"
        and isinstance(d.get("data"), Mapping)
        and any(k in d["data"] for k in CONFIG_KEYS)
    ]
    named = [i for i in candidates if _configmap_name(documents[i]) == CONFIGMAP_NAME]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1:
        return candidates[0]
    issues.error(
        source,
        f"{len(documents)} YAML documents, {len(candidates)} of them ConfigMaps with "
        f"data[{CONFIG_KEY!r}] or data[{CONFIG_KEYS[1]!r}]; expected exactly one",
    )
    return None


def _configmap_name(document: Mapping[Any, Any]) -> Any:
    metadata = document.get("metadata")
    return metadata.get("name") if isinstance(metadata, Mapping) else None


def _configmap_text(
    document: Mapping[Any, Any], text: str, index: int, issues: IssueCollector
) -> ConfigMapText | None:
    name = _configmap_name(document)
    label = f"ConfigMap {name!r}" if isinstance(name, str) else "the ConfigMap"
    data = document.get("data")
    if not isinstance(data, Mapping):
        issues.error("data", f"{label} has no data (expected data[{CONFIG_KEY!r}])")
        return None
    key, why_not = config_key(data)
    if key is None:
        issues.error("data", f"{label} {why_not}")
        return None
    value = data[key]
    if not isinstance(value, str):
        issues.error(
            f"data[{key!r}]",
            "must be a string holding the config.yaml text (a `|` block); "
            f"got {describe_kind(value)}",
        )
        return None
    if isinstance(name, str) and name != CONFIGMAP_NAME:
        issues.warn(
            "metadata.name",
            f"the ConfigMap is named {name!r}; the operator reads {CONFIGMAP_NAME!r}",
        )
    line, column = _block_offset(text, index, key)
    return ConfigMapText(value, line, column, key)


def _block_offset(text: str, index: int, key: str) -> tuple[int | None, int]:
    """Where a literal (`|`) `data["config.yaml"]` block starts in the manifest.

    Lets a YAML error inside the block be reported at its line in the file the user edits.
    Other scalar styles fold or escape lines, so there only the inner position is given.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return None, 0
    documents = [n for n in nodes if n is not None]
    if index >= len(documents):
        return None, 0
    node = _child(_child(documents[index], "data"), key)
    if not isinstance(node, yaml.ScalarNode) or node.style != "|":
        return None, 0
    first = node.start_mark.line + 1
    lines = text.splitlines()
    for line in lines[first : node.end_mark.line + 1]:
        if line.strip():
            return first, len(line) - len(line.lstrip(" "))
    return first, 0


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.Node):
            return v
    return None


def _yaml_message(
    exc: yaml.MarkedYAMLError, text: str, source: str, embedded: ConfigMapText | None
) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "cannot parse"
    if mark is None:
        return f"invalid YAML: {problem}"
    line, column = mark.line, mark.column
    if embedded is None:
        position = f"line {line + 1}, column {column + 1}"
    elif embedded.line_offset is not None:
        position = (
            f"line {embedded.line_offset + line + 1}, "
            f"column {embedded.column_offset + column + 1} of {source} "
            f"(line {line + 1} of the config.yaml text)"
        )
    else:
        position = f"line {line + 1}, column {column + 1} of the config.yaml text"
    message = f"invalid YAML at {position}: {problem}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += (
            f" ({exc.context} starting at line {_outer_line(exc.context_mark.line, embedded)})"
        )
    lines = text.splitlines()
    if line < len(lines) and _HELM_TEMPLATE.search(lines[line]):
        message += (
            "; this looks like a Helm template ({{ ... }}): render the chart first "
            "(helm template) or write concrete values"
        )
    return message


def _outer_line(line: int, embedded: ConfigMapText | None) -> int:
    if embedded is not None and embedded.line_offset is not None:
        return embedded.line_offset + line + 1
    return line + 1
