"""Pod requests: a HAMi-style pod manifest turned into a typed GPU demand.

The input is a pod exactly as the Kubernetes API returns it (camelCase keys, quantities
as strings), but nothing here trusts its shape: `parse_pod` never raises, it either returns
a `PodDemand` or an `InvalidRequest` listing every bad field, so the operator can keep the
pod Pending with an Event that says exactly what to fix (docs/design.md, "Resources").

The rules follow HAMi's request parsing (docs/mig-reference.md section 5): per container, a resource
in `limits` wins over the same resource in `requests`; memory, memory-percentage or cores
without `nvidia.com/gpu` mean `default_gpu_num` devices; with no memory given, the default
memory or else 100 % of the device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final, TypeGuard

from migweaver.core.resources.api import json_text, json_type
from migweaver.core.resources.node_fit import EMPTY_CONSTRAINTS, PodConstraints, pod_constraints

__all__ = [
    "ANNOTATION_GPU_SCHEDULER_POLICY",
    "ANNOTATION_NODE_SCHEDULER_POLICY",
    "ANNOTATION_NOUSE_GPUTYPE",
    "ANNOTATION_NOUSE_GPUUUID",
    "ANNOTATION_USE_GPUTYPE",
    "ANNOTATION_USE_GPUUUID",
    "ANNOTATION_VGPU_MODE",
    "SCHEDULER_POLICIES",
    "DEFAULTS",
    "ContainerDemand",
    "FieldError",
    "InvalidRequest",
    "PodDemand",
    "RequestDefaults",
    "VgpuMode",
    "parse_pod",
    "parse_quantity",
    "wants_gpu",
]

ANNOTATION_VGPU_MODE: Final = "nvidia.com/vgpu-mode"
ANNOTATION_USE_GPUTYPE: Final = "nvidia.com/use-gputype"
ANNOTATION_NOUSE_GPUTYPE: Final = "nvidia.com/nouse-gputype"
ANNOTATION_USE_GPUUUID: Final = "nvidia.com/use-gpuuuid"
ANNOTATION_NOUSE_GPUUUID: Final = "nvidia.com/nouse-gpuuuid"
ANNOTATION_GPU_SCHEDULER_POLICY: Final = "hami.io/gpu-scheduler-policy"
ANNOTATION_NODE_SCHEDULER_POLICY: Final = "hami.io/node-scheduler-policy"
SCHEDULER_POLICIES: Final = ("binpack", "spread")

# HAMi stores counts, MiB and priorities in int32; larger values wrap there, so they are
# refused here rather than silently meaning something else.
_INT32_MAX: Final = 2**31 - 1
# Kubernetes quantities are bounded by int64 when read as integers (Quantity.AsInt64).
_INT64_MAX: Final = 2**63 - 1
# FieldError values end up in Events, whose messages Kubernetes truncates at 1 KiB.
_MAX_SHOWN: Final = 100


@dataclass(frozen=True, slots=True)
class RequestDefaults:
    """Resource names and defaults, as in the `nvidia:` block of HAMi's configuration."""

    resource_count: str = "nvidia.com/gpu"
    resource_memory: str = "nvidia.com/gpumem"
    resource_memory_percentage: str = "nvidia.com/gpumem-percentage"
    resource_cores: str = "nvidia.com/gpucores"
    resource_priority: str = "nvidia.com/priority"
    default_memory: int = 0
    """MiB per device when a container gives neither memory nor percentage; 0 = 100 %."""
    default_cores: int = 0
    default_gpu_num: int = 1
    """Devices assumed when memory or cores are given without a count; 0 = none."""

    @property
    def gpu_resources(self) -> tuple[str, str, str, str]:
        """The four resource names that make a container ask for a GPU."""
        return (
            self.resource_count,
            self.resource_memory,
            self.resource_memory_percentage,
            self.resource_cores,
        )


class VgpuMode(StrEnum):
    """Which kind of device a pod accepts (annotation `nvidia.com/vgpu-mode`)."""

    MIG = "mig"
    HAMI_CORE = "hami-core"


@dataclass(frozen=True, slots=True)
class ContainerDemand:
    """What one container asks for.

    Exactly one of `memory_mib` and `memory_percentage` is set: MiB when the container (or
    `default_memory`) gives an amount, otherwise a percentage of the device (100 when
    nothing at all is given).
    """

    name: str
    count: int
    memory_mib: int | None
    memory_percentage: int | None
    cores: int
    priority: int | None


@dataclass(frozen=True, slots=True)
class PodDemand:
    """The GPU demand of one pod; `containers` is empty when the pod asks for no GPU."""

    namespace: str
    name: str
    uid: str
    containers: tuple[ContainerDemand, ...]
    mode: VgpuMode | None = None
    use_gputype: tuple[str, ...] = ()
    nouse_gputype: tuple[str, ...] = ()
    use_gpuuuid: tuple[str, ...] = ()
    nouse_gpuuuid: tuple[str, ...] = ()
    pod_priority: int = 0
    created: str | None = None
    gpu_scheduler_policy: str | None = None
    node_scheduler_policy: str | None = None
    constraints: PodConstraints = EMPTY_CONSTRAINTS
    """What the pod asks of its node: nodeSelector, required node affinity, tolerations."""

    @property
    def key(self) -> str:
        """`namespace/name`, the pod's identity in logs, Events and the planner."""
        return f"{self.namespace}/{self.name}"

    @property
    def total_devices(self) -> int:
        """Devices asked for by all containers together."""
        return sum(c.count for c in self.containers)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field of a pod: where it is, what it holds, and why that is refused."""

    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field} = {_quote(self.value)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A pod whose GPU request cannot be honoured as written; `errors` is never empty."""

    pod: str
    errors: tuple[FieldError, ...]

    @property
    def message(self) -> str:
        """Every error on one line, for an Event or a pod condition."""
        return "; ".join(str(e) for e in self.errors)

    def __str__(self) -> str:
        return f"pod {self.pod}: {self.message}"


DEFAULTS: Final = RequestDefaults()
"""HAMi's stock resource names and defaults."""


# --- quantities -----------------------------------------------------------------------

# Kubernetes' quantity grammar (k8s.io/apimachinery resource.ParseQuantity): a signed
# decimal number, then a binary suffix, a decimal SI suffix or a decimal exponent. ASCII
# digits only; `\d` would also accept other scripts' digits. The exponent is capped at
# three digits so that "1e999999999" cannot make us build an enormous integer.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]{1,3}))?"
)
_SUFFIXES: Final[Mapping[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_MAX_QUANTITY_TEXT: Final = 64


class _QuantityError(ValueError):
    """A quantity that is not a non-negative integer; `reason` omits the value itself."""

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"quantity {_quote(json_text(value))}: {reason}")
        self.reason = reason


def parse_quantity(text: object) -> int:
    """A Kubernetes quantity as a non-negative integer: `2`, `"8000"`, `"8k"`, `"16Gi"`.

    Fractions are accepted only when they land on an integer (`"2000m"` is 2); `"1.5"`,
    negatives, text that is not a quantity and values beyond int64 raise `ValueError`.
    """
    if isinstance(text, bool):
        raise _QuantityError(text, "a boolean is not a quantity")
    if isinstance(text, int):
        value = Fraction(text)
    elif isinstance(text, float):
        if not math.isfinite(text):
            raise _QuantityError(text, "not a finite number")
        value = Fraction(text)
    elif isinstance(text, str):
        value = _parse_quantity_text(text)
    else:
        raise _QuantityError(text, f"a {json_type(text)} is not a quantity")
    if value < 0:
        raise _QuantityError(text, "negative")
    if value.denominator != 1:
        raise _QuantityError(text, "not a whole number")
    if value > _INT64_MAX:
        raise _QuantityError(text, "too large")
    return int(value)


def _parse_quantity_text(text: str) -> Fraction:
    match = _QUANTITY.fullmatch(text) if len(text) <= _MAX_QUANTITY_TEXT else None
    if match is None:
        raise _QuantityError(text, "not a Kubernetes quantity (e.g. 2, 8000, 8k, 16Gi)")
    value = Fraction(match["number"])
    if match["exponent"] is not None:
        value *= Fraction(10) ** int(match["exponent"])
    else:
        value *= _SUFFIXES[match["suffix"] or ""]
    return -value if match["sign"] == "-" else value


# --- field rules ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """The accepted range of one resource, and how to describe it in an error."""

    maximum: int
    expected: str


_COUNT = _Rule(_INT32_MAX, "a whole number of devices, 0 or more")
_MEMORY = _Rule(_INT32_MAX, "a whole number of MiB per device, 0 or more (8 GiB is 8192, not 8Gi)")
_PERCENT_MEMORY = _Rule(100, "a percentage of device memory, 0 to 100")
_PERCENT_CORES = _Rule(100, "a percentage of the device's compute (SMs), 0 to 100")
_PRIORITY = _Rule(_INT32_MAX, "a whole number, 0 or more (HAMi: 0 is high, 1 is low)")


class _Collector:
    """Gathers every FieldError of one pod, so the user sees them all at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, value: object, reason: str) -> None:
        self.errors.append(FieldError(field=field, value=json_text(value), reason=reason))

    def quantity(self, field: str, value: object, rule: _Rule) -> int | None:
        """The value if it obeys `rule`, else None with the error recorded."""
        try:
            number = parse_quantity(value)
        except _QuantityError as exc:
            self.add(field, value, f"{exc.reason}; expected {rule.expected}")
            return None
        if number > rule.maximum:
            self.add(field, value, f"above {rule.maximum}; expected {rule.expected}")
            return None
        return number


# --- pods -------------------------------------------------------------------------------


def parse_pod(
    pod: Mapping[str, Any], defaults: RequestDefaults = DEFAULTS
) -> PodDemand | InvalidRequest:
    """The GPU demand of `pod`, or every reason it cannot be honoured. Never raises.

    Only `spec.containers` count (HAMi ignores init containers). A pod that asks for no
    GPU gets a `PodDemand` with no containers, not an error.
    """
    errors = _Collector()
    if not isinstance(pod, Mapping):
        errors.add("pod", pod, "expected a pod object")
        return InvalidRequest(pod="/", errors=tuple(errors.errors))

    metadata = _mapping(errors, pod.get("metadata"), "metadata")
    # At admission a pod may have only `generateName`, and its namespace comes with the
    # AdmissionReview rather than the object, so missing identity fields are not errors.
    namespace = _string(errors, metadata.get("namespace"), "metadata.namespace") or ""
    name = _string(errors, metadata.get("name"), "metadata.name") or ""
    uid = _string(errors, metadata.get("uid"), "metadata.uid") or ""
    created = metadata.get("creationTimestamp")
    annotations = _mapping(errors, metadata.get("annotations"), "metadata.annotations")

    spec = _mapping(errors, pod.get("spec"), "spec")
    containers: list[ContainerDemand] = []
    for index, raw in enumerate(_sequence(errors, spec.get("containers"), "spec.containers")):
        demand = _parse_container(errors, raw, f"spec.containers[{index}]", defaults)
        if demand is not None:
            containers.append(demand)

    pod_priority = spec.get("priority")
    if pod_priority is None:
        pod_priority = 0
    elif isinstance(pod_priority, bool) or not isinstance(pod_priority, int):
        errors.add("spec.priority", pod_priority, "expected an integer")
        pod_priority = 0

    def annotation(key: str) -> str | None:
        return _string(errors, annotations.get(key), f"metadata.annotations[{_quote(key)}]")

    mode = _parse_mode(errors, annotation(ANNOTATION_VGPU_MODE))
    result = PodDemand(
        namespace=namespace,
        name=name,
        uid=uid,
        containers=tuple(containers),
        mode=mode,
        use_gputype=_comma_list(annotation(ANNOTATION_USE_GPUTYPE)),
        nouse_gputype=_comma_list(annotation(ANNOTATION_NOUSE_GPUTYPE)),
        use_gpuuuid=_comma_list(annotation(ANNOTATION_USE_GPUUUID)),
        nouse_gpuuuid=_comma_list(annotation(ANNOTATION_NOUSE_GPUUUID)),
        pod_priority=pod_priority,
        created=created if isinstance(created, str) else None,
        gpu_scheduler_policy=_parse_policy(
            errors, ANNOTATION_GPU_SCHEDULER_POLICY, annotation(ANNOTATION_GPU_SCHEDULER_POLICY)
        ),
        node_scheduler_policy=_parse_policy(
            errors, ANNOTATION_NODE_SCHEDULER_POLICY, annotation(ANNOTATION_NODE_SCHEDULER_POLICY)
        ),
        constraints=pod_constraints(pod),
    )
    if errors.errors:
        return InvalidRequest(pod=result.key, errors=tuple(errors.errors))
    return result


def wants_gpu(pod: Mapping[str, Any], defaults: RequestDefaults = DEFAULTS) -> bool:
    """Whether any container names a GPU resource (count, memory, percentage or cores).

    Presence is enough, whatever the value: a pod with a bad value must still be held
    back so that it gets an Event explaining the problem. Never raises.
    """
    if not isinstance(pod, Mapping):
        return False
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return False
    containers = spec.get("containers")
    if not _is_sequence(containers):
        return False
    for container in containers:
        if not isinstance(container, Mapping):
            continue
        resources = container.get("resources")
        if not isinstance(resources, Mapping):
            continue
        for section in (resources.get("limits"), resources.get("requests")):
            if isinstance(section, Mapping) and any(
                name in section for name in defaults.gpu_resources
            ):
                return True
    return False


def _parse_container(
    errors: _Collector, raw: object, path: str, defaults: RequestDefaults
) -> ContainerDemand | None:
    """The container's demand, or None when it asks for no GPU or has a bad value."""
    container = _mapping(errors, raw, path)
    name = _string(errors, container.get("name"), f"{path}.name") or ""
    resources = _mapping(errors, container.get("resources"), f"{path}.resources")
    limits = _mapping(errors, resources.get("limits"), f"{path}.resources.limits")
    requests = _mapping(errors, resources.get("requests"), f"{path}.resources.requests")
    before = len(errors.errors)

    def read(resource: str, rule: _Rule) -> tuple[bool, int | None]:
        """(given at all, value that applies); limits win over requests, like HAMi.

        A bad value in either section is reported even when limits shadow requests: the
        apiserver would refuse the pod for it anyway, so the user should see it now.
        """
        values: list[int | None] = []
        for section, where in ((limits, "limits"), (requests, "requests")):
            if resource in section:
                field = f"{path}.resources.{where}[{_quote(resource)}]"
                values.append(errors.quantity(field, section[resource], rule))
        return (bool(values), values[0] if values else None)

    has_count, count = read(defaults.resource_count, _COUNT)
    has_memory, memory = read(defaults.resource_memory, _MEMORY)
    has_percentage, percentage = read(defaults.resource_memory_percentage, _PERCENT_MEMORY)
    has_cores, cores = read(defaults.resource_cores, _PERCENT_CORES)
    _, priority = read(defaults.resource_priority, _PRIORITY)
    if len(errors.errors) > before:
        return None

    if not has_count:
        # HAMi's webhook adds `default_gpu_num` devices when only memory or cores are
        # given; a default of 0 leaves the container without a GPU, as in HAMi.
        named = has_memory or has_percentage or has_cores
        count = max(defaults.default_gpu_num, 0) if named else 0
    if not count:
        # An explicit count of 0 asks for no device, whatever else is set (HAMi drops
        # requests with Nums == 0).
        return None

    # An explicit 0 for gpumem is "not given", as in HAMi (its Memreq 0 falls through to
    # the percentage / default). migweaver treats a 0 percentage the same way, where HAMi
    # would compute 0 MiB and fit anything: either memory field at 0 reads as unset, and
    # the container gets the default rather than the smallest instance.
    memory_mib: int | None = memory or None
    memory_percentage: int | None = None
    if memory_mib is None:
        if percentage:
            memory_percentage = percentage
        elif defaults.default_memory > 0:
            memory_mib = defaults.default_memory
        else:
            memory_percentage = 100
    return ContainerDemand(
        name=name,
        count=count,
        memory_mib=memory_mib,
        memory_percentage=memory_percentage,
        # An explicit 0 here is kept: it means "no compute floor" and overrides the
        # default, as HAMi's explicit gpucores does.
        cores=defaults.default_cores if cores is None else cores,
        priority=priority,
    )


def _parse_mode(errors: _Collector, value: str | None) -> VgpuMode | None:
    # A blank value is read as absent: charts often render optional annotations as "".
    if value is None or not value.strip():
        return None
    try:
        return VgpuMode(value.strip().lower())
    except ValueError:
        choices = " or ".join(_quote(m.value) for m in VgpuMode)
        errors.add(
            f"metadata.annotations[{_quote(ANNOTATION_VGPU_MODE)}]", value, f"expected {choices}"
        )
        return None


def _parse_policy(errors: _Collector, key: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    policy = value.strip().lower()
    if policy not in SCHEDULER_POLICIES:
        choices = " or ".join(_quote(p) for p in SCHEDULER_POLICIES)
        errors.add(f"metadata.annotations[{_quote(key)}]", value, f"expected {choices}")
        return None
    return policy


def _comma_list(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


# --- shape checks: wrong types become FieldErrors and an empty stand-in -------------------


def _mapping(errors: _Collector, value: object, field: str) -> Mapping[Any, Any]:
    """`value` if it is an object; JSON null reads as absent, anything else is an error."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    errors.add(field, value, f"expected an object, got a {json_type(value)}")
    return {}


def _sequence(errors: _Collector, value: object, field: str) -> Sequence[Any]:
    if value is None:
        return ()
    if _is_sequence(value):
        return value
    errors.add(field, value, f"expected a list, got a {json_type(value)}")
    return ()


def _string(errors: _Collector, value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    errors.add(field, value, f"expected a string, got a {json_type(value)}")
    return None


def _is_sequence(value: object) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return isinstance(value, list | tuple)


def _quote(text: str) -> str:
    """`text` in double quotes, with anything unprintable escaped so it stays on one line."""
    body = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
    return '"' + body.replace('"', '\\"') + '"'
