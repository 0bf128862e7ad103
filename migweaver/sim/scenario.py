"""Simulation scenarios: the YAML file `migweaver simulate` reads, as strict models.

A scenario names the fleet (nodes, their operating mode and GPUs), the device
configuration, a few timing knobs, and groups of pods that arrive, run for a while and
leave. Pods are ordinary Pod manifests (HAMi's resource API: `nvidia.com/gpu`,
`nvidia.com/gpumem`, annotations such as `nvidia.com/vgpu-mode`), parsed by the same
`requests.parse_pod` the operator uses. The format is documented in docs/simulator.md.

Unknown keys are errors (typos are caught), and every problem is reported at once, each
message naming the file and the field (`day.yaml: pods[2].duration: ...`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from migweaver.core.config import DeviceConfig, load_device_config
from migweaver.core.mig.catalog import get_model, match_model, model_keys
from migweaver.core.planning.cluster_file import InputError, yaml_documents
from migweaver.core.resources.api import format_timestamp, parse_timestamp
from migweaver.core.resources.requests import InvalidRequest, PodDemand, parse_pod

__all__ = [
    "GpuGroup",
    "LoadedScenario",
    "NodeGroup",
    "PodGroup",
    "Scenario",
    "ScenarioError",
    "SimPod",
    "load_scenario",
    "load_scenario_text",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string `90s`, `15m`, `2h`, `1.5d`; other values pass
    through unchanged (the float validator then names what is wrong with them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"expected seconds or a duration such as 90s, 15m, 2h or 1d, got {value!r}"
            )
        return float(match.group("number")) * _UNITS[match.group("unit")]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class GpuGroup(_Model):
    """`count` identical GPUs of a catalog `model` (key or NVML name)."""

    model: str = Field(min_length=1)
    count: int = Field(default=1, ge=1, le=64)
    mig_enabled: bool | None = None
    """MIG mode at the start (default: on for `mig` nodes, off for `hami-core` nodes)."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        model = get_model(value) or match_model(value)
        if model is None:
            raise ValueError(f"unknown model {value!r} (known: {', '.join(model_keys())})")
        return model.key


class NodeGroup(_Model):
    """One node, or `count` identical nodes named `<name>-1` ... `<name>-<count>`."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    mode: Literal["mig", "hami-core"]
    count: int = Field(default=1, ge=1, le=1000)
    gpus: list[GpuGroup] = Field(min_length=1)

    def node_names(self) -> list[str]:
        if self.count == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(1, self.count + 1)]


class PodGroup(_Model):
    """`count` copies of a pod manifest, the first arriving at `at`, then one every
    `every`; each runs for `duration` once started. Copies are named `<name>-<i>`."""

    at: Duration = Field(default=0.0, ge=0)
    every: Duration = Field(default=0.0, ge=0)
    count: int = Field(default=1, ge=1, le=100_000)
    duration: Duration = Field(gt=0)
    pod: dict[str, Any]


class Scenario(_Model):
    """The whole scenario file."""

    name: str = Field(min_length=1)
    description: str = ""
    device_config: str | None = None
    """The geometry ConfigMap (or bare config.yaml), relative to the scenario file; without
    it no geometries are configured and HAMi's defaults apply."""
    start: str = "2024-05-01T00:00:00Z"
    """The wall-clock time of t=0 (pods' creationTimestamp; only the planner's anti-
    starvation rule looks at it)."""
    batch_window: Duration = Field(default=10.0, ge=0)
    """Gated pods are collected this long before the operator plans them."""
    reconfigure_seconds: Duration = Field(default=20.0, ge=0)
    """Added to a pod's start when an instance had to be created for it."""
    end: Duration | None = Field(default=None, gt=0)
    """Stop here; pods still pending count as not placed (default: when nothing is left)."""
    nodes: list[NodeGroup] = Field(min_length=1)
    pods: list[PodGroup] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _start_is_rfc3339(cls, value: str) -> str:
        if parse_timestamp(value) == math.inf:
            raise ValueError(
                f"expected an RFC 3339 time such as 2024-05-01T00:00:00Z, got {value!r}"
            )
        return value


@dataclass(frozen=True, slots=True)
class SimPod:
    """One pod of the scenario: its manifest, parsed demand, arrival and run time."""

    key: str
    manifest: Mapping[str, Any]
    demand: PodDemand
    arrival: float
    duration: float
    group: int


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    """A checked scenario with its device configuration and expanded pods."""

    scenario: Scenario
    config: DeviceConfig | None
    pods: tuple[SimPod, ...]
    source: str
    epoch: float
    """Seconds since the epoch of t=0."""

    @property
    def name(self) -> str:
        return self.scenario.name


class ScenarioError(Exception):
    """The scenario cannot be used; `errors` are complete messages naming file and field."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def _loc(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part or "(" in part:
            continue  # pydantic's names of union members and validators: noise
        else:
            text += f".{part}" if text else part
    return text


def _pydantic_errors(source: str, exc: ValidationError) -> list[str]:
    messages = []
    for err in exc.errors(include_url=False):
        where = _loc(err["loc"])
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        messages.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
    return messages


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and check a scenario file; raises `ScenarioError` listing every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError([f"{path}: cannot read: {reason}"]) from None
    return load_scenario_text(text, str(path), base=file.parent)


def load_scenario_text(text: str, source: str, base: Path | None = None) -> LoadedScenario:
    """Check a scenario given as text; `base` resolves a relative `deviceConfig`."""
    try:
        documents = [d for d in yaml_documents(text, source) if d is not None]
    except InputError as exc:
        raise ScenarioError(exc.errors) from None
    expected = f"{source}: expected a mapping with name, nodes and pods"
    if len(documents) > 1:
        raise ScenarioError([f"{expected}, got {len(documents)} YAML documents"])
    document = documents[0] if documents else None
    if not isinstance(document, Mapping):
        raise ScenarioError([expected])
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as exc:
        raise ScenarioError(_pydantic_errors(source, exc)) from None
    errors: list[str] = []
    config = _device_config(scenario, source, base, errors)
    _check_nodes(scenario, source, errors)
    epoch = parse_timestamp(scenario.start)
    pods = _expand_pods(scenario, source, config, epoch, errors)
    if errors:
        raise ScenarioError(errors)
    return LoadedScenario(scenario, config, tuple(pods), source, epoch)


def _device_config(
    scenario: Scenario, source: str, base: Path | None, errors: list[str]
) -> DeviceConfig | None:
    if scenario.device_config is None:
        return None
    path = Path(scenario.device_config)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        errors.append(f"{source}: deviceConfig: cannot read {scenario.device_config}: {reason}")
        return None
    result = load_device_config(text, scenario.device_config)
    if not result.ok:
        errors.extend(
            f"{source}: deviceConfig: {issue.in_file(scenario.device_config)}"
            for issue in result.errors
        )
        return None
    return result.config


def _check_nodes(scenario: Scenario, source: str, errors: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, group in enumerate(scenario.nodes):
        for name in group.node_names():
            if name in seen:
                errors.append(
                    f"{source}: nodes[{i}].name: node {name!r} is also defined by "
                    f"nodes[{seen[name]}]"
                )
            seen.setdefault(name, i)


def _expand_pods(
    scenario: Scenario,
    source: str,
    config: DeviceConfig | None,
    epoch: float,
    errors: list[str],
) -> list[SimPod]:
    defaults = config.request_defaults() if config is not None else None
    pods: list[SimPod] = []
    seen: dict[str, int] = {}
    for i, group in enumerate(scenario.pods):
        where = f"{source}: pods[{i}].pod"
        metadata = group.pod.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
            errors.append(f"{where}.metadata.name: required (the pod's name)")
            continue
        if "creationTimestamp" in metadata:
            errors.append(
                f"{where}.metadata.creationTimestamp: set by the simulation from `at`; remove it"
            )
            continue
        kind = group.pod.get("kind", "Pod")
        if kind != "Pod":
            errors.append(f"{where}.kind: expected Pod, got {kind!r}")
            continue
        late = _unrepresentable_arrival(group, epoch)
        if late is not None:
            errors.append(f"{source}: pods[{i}].{late}")
            continue
        for n in range(group.count):
            arrival = group.at + n * group.every
            name = metadata["name"] if group.count == 1 else f"{metadata['name']}-{n + 1}"
            created = format_timestamp(epoch + arrival)
            manifest = {
                **group.pod,
                "metadata": {
                    **metadata,
                    "name": name,
                    "namespace": metadata.get("namespace") or "default",
                    "creationTimestamp": created,
                },
            }
            result = parse_pod(manifest, defaults) if defaults else parse_pod(manifest)
            if isinstance(result, InvalidRequest):
                errors.extend(f"{where}.{e}" for e in result.errors)
                break
            if not result.containers:
                errors.append(
                    f"{where}.spec.containers: the pod asks for no GPU (nvidia.com/gpu, "
                    "nvidia.com/gpumem, nvidia.com/gpumem-percentage or nvidia.com/gpucores)"
                )
                break
            if result.key in seen:
                errors.append(
                    f"{where}.metadata.name: pod {result.key} is also defined by "
                    f"pods[{seen[result.key]}]"
                )
                break
            seen[result.key] = i
            pods.append(SimPod(result.key, manifest, result, arrival, group.duration, i))
    pods.sort(key=lambda p: (p.arrival, p.group, p.key))
    return pods


def _unrepresentable_arrival(group: PodGroup, epoch: float) -> str | None:
    """`at: ...` or `every: ...` (the field to blame, with why) when a copy of the group
    would arrive after the last time a creationTimestamp can hold (the year 9999)."""
    last = group.at + (group.count - 1) * group.every
    for field, seconds in (("at", group.at), ("every", last)):
        try:
            format_timestamp(epoch + seconds)
        except (OverflowError, ValueError, OSError):
            return (
                f"{field}: the pods would arrive {seconds:g} s after the start, later than "
                "a creationTimestamp can be (the year 9999)"
            )
    return None
