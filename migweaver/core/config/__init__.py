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
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from migweaver.core.mig.catalog import CATALOG, GpuModel, gpu_name_matches, models_matching
from migweaver.core.mig.geometry import fit_profiles
from migweaver.core.mig.profiles import MigProfile, ProfileTable
from migweaver.core.resources.requests import RequestDefaults

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

CONFIGMAP_NAME: Final = "migweaver-device-config"
"""The ConfigMap the operator watches (namespace of the operator)."""
CONFIG_KEY: Final = "config.yaml"
"""The ConfigMap data key that holds the configuration."""
MEMORY_TOLERANCE: Final = 0.10
"""A configured `memory` further than this from the catalog's MiB gets a warning."""

# Long inputs (a whole mapping pasted where a name belongs) would drown the message.
_MAX_SHOWN: Final = 80
_HELM_TEMPLATE = re.compile(r"\{\s*\{")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- models


class MigGeometryEntry(BaseModel):
    """One `{name, memory, count}` item of a geometry (HAMi's `MigTemplate`).

    `count` is only typed here; `load_device_config` reports a count below 1 with the
    model, geometry and profile it belongs to.
    """

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    name: str = Field(min_length=1)
    memory: int | None = Field(default=None, ge=1)
    """MiB as configured (HAMi matches `nvidia.com/gpumem` against it); NVML's size wins."""
    count: int


class KnownMigGeometry(BaseModel):
    """One `knownMigGeometries` entry: the geometries the listed GPU models may take.

    `allowed_geometries` is always the nested form (a list of geometries, each a list of
    entries); a flat list in the input is grouped by `load_device_config` first.
    """

    model_config = ConfigDict(
        strict=True, extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    models: list[str] = Field(min_length=1)
    allowed_geometries: list[Annotated[list[MigGeometryEntry], Field(min_length=1)]] = Field(
        alias="allowedGeometries", min_length=1
    )


class NvidiaConfig(BaseModel):
    """HAMi's `nvidia:` block with HAMi's defaults. Unknown keys are kept, not errors:
    HAMi has many more (and adds new ones), and they do not concern MIG planning."""

    model_config = ConfigDict(
        strict=True, extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    resource_count_name: str = Field(
        default="nvidia.com/gpu", alias="resourceCountName", min_length=1
    )
    resource_memory_name: str = Field(
        default="nvidia.com/gpumem", alias="resourceMemoryName", min_length=1
    )
    resource_memory_percentage_name: str = Field(
        default="nvidia.com/gpumem-percentage", alias="resourceMemoryPercentageName", min_length=1
    )
    resource_core_name: str = Field(
        default="nvidia.com/gpucores", alias="resourceCoreName", min_length=1
    )
    resource_priority_name: str = Field(
        default="nvidia.com/priority", alias="resourcePriorityName", min_length=1
    )
    overwrite_env: bool = Field(default=False, alias="overwriteEnv")
    default_memory: int = Field(default=0, alias="defaultMemory", ge=0)
    # Cores are a percentage of the device's SMs.
    default_cores: int = Field(default=0, alias="defaultCores", ge=0, le=100)
    default_gpu_num: int = Field(default=1, alias="defaultGPUNum", ge=1)
    device_split_count: int = Field(default=10, alias="deviceSplitCount", ge=1)
    device_memory_scaling: float = Field(default=1.0, alias="deviceMemoryScaling", gt=0)
    device_core_scaling: float = Field(default=1.0, alias="deviceCoreScaling", gt=0)
    known_mig_geometries: list[KnownMigGeometry] = Field(
        default_factory=list, alias="knownMigGeometries"
    )


@dataclass(frozen=True, slots=True)
class Geometry:
    """One allowed geometry of a GPU: profiles with counts, in config order.

    `profiles` holds the names as configured (possibly an alias such as `7g.79gb`; resolve
    them with `ProfileTable.get`). `memory[i]` is the configured MiB of `profiles[i]` (None
    when the entry gave none); NVML's size of the profile is the physical truth.
    """

    profiles: tuple[tuple[str, int], ...]
    memory: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        if self.memory and len(self.memory) != len(self.profiles):
            raise ValueError("Geometry.memory must have one value per profile")

    @property
    def counts(self) -> dict[str, int]:
        """Profile name -> total count (a name listed twice is summed)."""
        counts: dict[str, int] = {}
        for name, count in self.profiles:
            counts[name] = counts.get(name, 0) + count
        return counts

    def memory_of(self, name: str) -> int | None:
        """The configured MiB of the first entry named `name`, or None."""
        for i, (entry, _) in enumerate(self.profiles):
            if entry == name:
                return self.memory[i] if self.memory else None
        return None

    def __str__(self) -> str:
        return _describe(self.profiles)


class DeviceConfig(BaseModel):
    """The whole device configuration: the `nvidia:` block (other vendors are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    nvidia: NvidiaConfig

    def geometries_for(self, gpu_name: str, model: GpuModel | None) -> list[Geometry] | None:
        """The geometries a GPU may take, or None when no entry names it (any valid layout).

        `gpu_name` is NVML's device name, `model` its catalog model if known. The first
        matching `knownMigGeometries` entry wins, as in HAMi.
        """
        for entry in self.nvidia.known_mig_geometries:
            if any(gpu_name_matches(name, gpu_name, model) for name in entry.models):
                return [
                    Geometry(
                        profiles=tuple((item.name, item.count) for item in geometry),
                        memory=tuple(item.memory for item in geometry),
                    )
                    for geometry in entry.allowed_geometries
                ]
        return None

    def request_defaults(self) -> RequestDefaults:
        """Resource names and request defaults for parsing pods."""
        n = self.nvidia
        return RequestDefaults(
            resource_count=n.resource_count_name,
            resource_memory=n.resource_memory_name,
            resource_memory_percentage=n.resource_memory_percentage_name,
            resource_cores=n.resource_core_name,
            resource_priority=n.resource_priority_name,
            default_memory=n.default_memory,
            default_cores=n.default_cores,
            default_gpu_num=n.default_gpu_num,
        )


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One error or warning: where (`nvidia.defaultMemory`, or the file) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def in_file(self, source: str) -> str:
        """The issue after the name of its file, said once: an issue about the file as a
        whole (invalid YAML, an empty document) already has it as its path."""
        return str(self) if self.path == source else f"{source}: {self}"


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """The outcome of loading a configuration; `config` is None whenever there are errors."""

    config: DeviceConfig | None
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    source: str = CONFIG_KEY

    @property
    def ok(self) -> bool:
        """True when the configuration may be used."""
        return self.config is not None and not self.errors


# --------------------------------------------------------------------------- loading


class _Issues:
    """Collects errors and warnings once each, in the order found."""

    def __init__(self) -> None:
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self._seen: set[tuple[bool, str, str]] = set()
        self.flat: Mapping[int, list[list[int]]] = {}
        """Per flat `allowedGeometries` entry: geometry -> indices into the user's list."""

    def _add(self, is_error: bool, loc: Loc | str, message: str) -> None:
        path = loc if isinstance(loc, str) else _format_loc(self._source_loc(loc))
        key = (is_error, path, message)
        if key in self._seen:
            return
        self._seen.add(key)
        (self.errors if is_error else self.warnings).append(ConfigIssue(path, message))

    def error(self, loc: Loc | str, message: str) -> None:
        self._add(True, loc, message)

    def warn(self, loc: Loc | str, message: str) -> None:
        self._add(False, loc, message)

    def _source_loc(self, loc: Loc) -> Loc:
        """Point into the user's flat list (`allowedGeometries[4]`), not the grouped form."""
        if (
            len(loc) >= 6
            and loc[:2] == ("nvidia", "knownMigGeometries")
            and loc[3] == "allowedGeometries"
            and isinstance(loc[2], int)
            and loc[2] in self.flat
            and isinstance(loc[4], int)
            and isinstance(loc[5], int)
        ):
            groups = self.flat[loc[2]]
            if loc[4] < len(groups) and loc[5] < len(groups[loc[4]]):
                return (*loc[:4], groups[loc[4]][loc[5]], *loc[6:])
        return loc

    def result(self, config: DeviceConfig | None, source: str) -> ConfigResult:
        return ConfigResult(
            config=None if self.errors else config,
            errors=self.errors,
            warnings=self.warnings,
            source=source,
        )


def load_device_config(text: str, source: str = CONFIG_KEY) -> ConfigResult:
    """Parse and check a device configuration; never raises.

    `text` is either the `config.yaml` content (`nvidia:` at the top) or a whole ConfigMap
    manifest whose `data["config.yaml"]` holds it. `source` names the input in messages.
    Geometry indices in messages are 0-based, as in the paths.
    """
    issues = _Issues()
    raw = _parse_yaml(text, source, issues)
    if raw is None:
        return issues.result(None, source)
    if isinstance(raw, _ConfigMapText):
        inner = _parse_yaml(raw.text, source, issues, raw)
        if inner is None:
            return issues.result(None, source)
        raw = inner
    if not isinstance(raw, Mapping):
        issues.error(
            source,
            "expected a mapping with an `nvidia:` block, or a ConfigMap whose "
            f"data[{CONFIG_KEY!r}] holds one; got {_kind(raw)}",
        )
        return issues.result(None, source)

    document, flat, flat_notes = _ungroup_flat_lists(raw)
    issues.flat = flat
    for loc, message in flat_notes:
        issues.warn(loc, message)
    try:
        config = DeviceConfig.model_validate(document)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            issues.error(tuple(err["loc"]), _pydantic_message(err))
        return issues.result(None, source)
    _check_geometries(config, issues)
    return issues.result(config, source)


@dataclass(frozen=True, slots=True)
class _ConfigMapText:
    """The `config.yaml` text of a ConfigMap and where it sits in the manifest."""

    text: str
    line_offset: int | None = None
    column_offset: int = 0


def _parse_yaml(
    text: str, source: str, issues: _Issues, embedded: _ConfigMapText | None = None
) -> Any:
    """The parsed document, a `_ConfigMapText` for a ConfigMap, or None after an error."""
    where = f"data[{CONFIG_KEY!r}]" if embedded else source
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


def _pick_document(documents: list[Any], source: str, issues: _Issues) -> int | None:
    """With several documents (a multi-resource manifest), the one ConfigMap with config."""
    if len(documents) == 1:
        return 0
    candidates = [
        i
        for i, d in enumerate(documents)
        if isinstance(d, Mapping)
        and d.get("kind") == "ConfigMap"
        and isinstance(d.get("data"), Mapping)
        and CONFIG_KEY in d["data"]
    ]
    named = [i for i in candidates if _configmap_name(documents[i]) == CONFIGMAP_NAME]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1:
        return candidates[0]
    issues.error(
        source,
        f"{len(documents)} YAML documents, {len(candidates)} of them ConfigMaps with "
        f"data[{CONFIG_KEY!r}]; expected exactly one",
    )
    return None


def _configmap_name(document: Mapping[Any, Any]) -> Any:
    metadata = document.get("metadata")
    return metadata.get("name") if isinstance(metadata, Mapping) else None


def _configmap_text(
    document: Mapping[Any, Any], text: str, index: int, issues: _Issues
) -> _ConfigMapText | None:
    name = _configmap_name(document)
    label = f"ConfigMap {name!r}" if isinstance(name, str) else "the ConfigMap"
    data = document.get("data")
    if not isinstance(data, Mapping):
        issues.error("data", f"{label} has no data (expected data[{CONFIG_KEY!r}])")
        return None
    if CONFIG_KEY not in data:
        keys = ", ".join(repr(str(k)) for k in data) or "none"
        issues.error("data", f"{label} has no key {CONFIG_KEY!r} in data (its keys: {keys})")
        return None
    value = data[CONFIG_KEY]
    if not isinstance(value, str):
        issues.error(
            f"data[{CONFIG_KEY!r}]",
            f"must be a string holding the config.yaml text (a `|` block); got {_kind(value)}",
        )
        return None
    if isinstance(name, str) and name != CONFIGMAP_NAME:
        issues.warn(
            "metadata.name",
            f"the ConfigMap is named {name!r}; the operator reads {CONFIGMAP_NAME!r}",
        )
    line, column = _block_offset(text, index)
    return _ConfigMapText(value, line, column)


def _block_offset(text: str, index: int) -> tuple[int | None, int]:
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
    node = _child(_child(documents[index], "data"), CONFIG_KEY)
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
    exc: yaml.MarkedYAMLError, text: str, source: str, embedded: _ConfigMapText | None
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


def _outer_line(line: int, embedded: _ConfigMapText | None) -> int:
    if embedded is not None and embedded.line_offset is not None:
        return embedded.line_offset + line + 1
    return line + 1


# --------------------------------------------------------------------------- flat lists


def _ungroup_flat_lists(
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
        if trial is not None and _fits(table, trial):
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


# --------------------------------------------------------------------------- checks


def _check_geometries(config: DeviceConfig, issues: _Issues) -> None:
    """Catalog checks: models known, profiles known, counts >= 1, each geometry fits."""
    claimed: dict[str, int] = {}
    for k, entry in enumerate(config.nvidia.known_mig_geometries):
        base: Loc = ("nvidia", "knownMigGeometries", k)
        _warn_extra(issues, base, entry.model_extra)
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
    issues: _Issues,
    loc: Loc,
    g: int,
    entry_label: str,
    geometry: Sequence[MigGeometryEntry],
    groups: Sequence[tuple[str, ProfileTable]],
) -> None:
    counts_ok = True
    for j, item in enumerate(geometry):
        _warn_extra(issues, (*loc, j), item.model_extra)
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
            if not _fits(table, counts):
                shown = _describe((item.name, item.count) for item in geometry)
                issues.error(
                    loc,
                    f"geometry {g} of {label} ({shown}) does not fit on {table.memory_slots} "
                    f"memory slots{_why_not(table, counts)}",
                )


def _check_memory(
    issues: _Issues, loc: Loc, g: int, label: str, item: MigGeometryEntry, profile: MigProfile
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


def _fits(table: ProfileTable, counts: Mapping[str, int]) -> bool:
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


def _warn_extra(issues: _Issues, loc: Loc, extra: Mapping[str, Any] | None) -> None:
    for key in extra or {}:
        issues.warn((*loc, key), "unknown key, ignored (a typo?)")


# --------------------------------------------------------------------------- messages

_TYPE_MESSAGES: Final = {
    "model_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "missing": "required key is missing",
}


_BOUND_MESSAGES: Final = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be greater than"),
    "less_than_equal": ("le", "must be at most"),
}


def _pydantic_message(err: Mapping[str, Any]) -> str:
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return _TYPE_MESSAGES[kind]
    if kind in {"too_short", "string_too_short"} and ctx.get("min_length") == 1:
        message = "must not be empty"
    elif kind in _BOUND_MESSAGES and _BOUND_MESSAGES[kind][0] in ctx:
        key, text = _BOUND_MESSAGES[kind]
        bound = ctx[key]
        message = f"{text} {bound:g}" if isinstance(bound, float) else f"{text} {bound}"
    else:
        message = _TYPE_MESSAGES.get(kind, str(err["msg"]))
    return f"{message} (got {_show(err.get('input'))})"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_show(value)}"


def _format_loc(loc: Loc) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _PLAIN_KEY.match(part):
            parts.append(f".{part}" if parts else part)
        else:
            parts.append(f"[{part!r}]")
    return "".join(parts)


def _describe(profiles: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in profiles)


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
            lines.append(f"        {_describe((item.name, item.count) for item in geometry)}")
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
