"""The custom resources `MigLayout` and `NodeConfig` (docs/design.md, "Resources") as models.

Python code uses snake_case; the wire (the Kubernetes API, YAML) uses camelCase. Two wire
names are spelled by hand because the generated alias would differ: `gpuUUID` (not
`gpuUuid`) and `memoryMiB` (not `memoryMib`).

Specs, which people write, reject unknown fields so that a typo (`gpuIndx: 1`) fails loudly
instead of silently meaning "default". Statuses, which the agent writes, ignore unknown
fields, so that an operator one version behind can still read what a newer agent reports.

The field descriptions are the CRDs' documentation: `migweaver.core.resources.crds` generates the
OpenAPI schema in `crds/` from these models, so `kubectl explain miglayout.spec` shows them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Protocol, Self, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.api import API_VERSION

__all__ = [
    "CONDITION_APPLIED",
    "CONDITION_CATALOG_MISMATCH",
    "CONDITION_DEGRADED",
    "CONDITION_READY",
    "MIGLAYOUT_KIND",
    "MIGLAYOUT_PLURAL",
    "NODECONFIG_KIND",
    "NODECONFIG_PLURAL",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "FilterDevices",
    "GpuInfo",
    "InstanceStatus",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LayoutInstance",
    "MigLayout",
    "MigLayoutSpec",
    "MigLayoutStatus",
    "MigModeState",
    "MigModeStatus",
    "NodeConfig",
    "NodeConfigSpec",
    "NodeConfigStatus",
    "OperatingMode",
    "Phase",
    "PlacementModel",
    "Policy",
    "ProfileStatus",
    "SelectorOperator",
    "SpecModel",
    "find_condition",
    "layout_name",
    "node_label_value",
    "set_condition",
    "summarize_instances",
    "used_summary",
]

MIGLAYOUT_KIND: Final = "MigLayout"
MIGLAYOUT_PLURAL: Final = "miglayouts"
NODECONFIG_KIND: Final = "NodeConfig"
NODECONFIG_PLURAL: Final = "nodeconfigs"

CONDITION_READY: Final = "Ready"
CONDITION_APPLIED: Final = "Applied"
CONDITION_DEGRADED: Final = "Degraded"
CONDITION_CATALOG_MISMATCH: Final = "CatalogMismatch"
"""True when NVML's profile table of the GPU differs from the built-in catalog's entry for
its model (the message lists how); False when they agree; Unknown for a model the
catalog does not know."""

Policy: TypeAlias = Literal["dynamic", "static"]
OperatingMode: TypeAlias = Literal["mig", "hami-core"]
Phase: TypeAlias = Literal["Pending", "Applying", "Ready", "Degraded", "Failed"]
MigModeState: TypeAlias = Literal["Enabled", "Disabled"]
ConditionStatus: TypeAlias = Literal["True", "False", "Unknown"]
SelectorOperator: TypeAlias = Literal["In", "NotIn", "Exists", "DoesNotExist"]

# Kubernetes object names (DNS-1123 subdomain) and label values have these limits.
_MAX_NAME: Final = 253
_MAX_LABEL_VALUE: Final = 63
_NOT_NAME_CHAR = re.compile(r"[^a-z0-9.-]+")


class ApiModel(BaseModel):
    """Base of every resource model: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored (what a status needs: a newer writer may add fields).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Self:
        """Parse an object as the Kubernetes API returns it (any nested Mappings, e.g. kopf's)."""
        return cls.model_validate(_plain(obj))

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(ApiModel):
    """Base of the models a person writes: unknown fields are errors, so typos are caught."""

    model_config = ConfigDict(extra="forbid")


def _plain(value: Any) -> Any:
    """Deep copy of Mappings/lists into dicts/lists (kopf bodies are read-only Mapping views)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Shared parts


class PlacementModel(SpecModel):
    """A run of memory slots on one GPU, as NVML's GPU-instance placement."""

    start: int = Field(ge=0, description="First memory slot the GPU instance occupies (from 0).")
    size: int = Field(ge=1, description="Number of consecutive memory slots it occupies.")

    def to_placement(self) -> Placement:
        """The core dataclass used by geometry and planning."""
        return Placement(self.start, self.size)

    @classmethod
    def from_placement(cls, placement: Placement) -> Self:
        """The wire model of a core `Placement`."""
        return cls(start=placement.start, size=placement.size)


def _unique_condition_types(conditions: list[Condition]) -> list[Condition]:
    # The CRD declares conditions a list-map keyed by type: the API server refuses
    # duplicates, so refuse them here too, before a write fails.
    seen: set[str] = set()
    for condition in conditions:
        if condition.type in seen:
            raise ValueError(f"duplicate condition type {condition.type!r}")
        seen.add(condition.type)
    return conditions


class Condition(ApiModel):
    """One aspect of the resource's state, in the shape of Kubernetes' metav1.Condition."""

    type: str = Field(
        min_length=1, description="Kind of condition, e.g. Ready, Applied or Degraded."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word saying why, for machines.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str | None = Field(
        default=None,
        description="When status last changed (RFC 3339, e.g. 2024-05-01T12:00:00Z).",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


ConditionList: TypeAlias = Annotated[list[Condition], AfterValidator(_unique_condition_types)]

# Conditions are a map keyed by type on the API server (as in every built-in resource), so
# server-side apply merges them per type and duplicates are refused.
_CONDITIONS_LIST_MAP: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of this type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: Sequence[Condition], new: Condition, now: str) -> list[Condition]:
    """`conditions` with `new` put in place of the one of its type (or appended).

    `lastTransitionTime` moves only when the status changes (Kubernetes' convention), so a
    condition re-reported every reconcile does not look as if it had just flipped; `now`
    is an RFC 3339 timestamp, passed in to keep this function pure.
    """
    old = find_condition(conditions, new.type)
    if old is not None and old.status == new.status and old.last_transition_time:
        stamp: str | None = old.last_transition_time
    else:
        stamp = new.last_transition_time or now
    updated = new.model_copy(update={"last_transition_time": stamp})
    result = [updated if c.type == new.type else c for c in conditions]
    if old is None:
        result.append(updated)
    return result


# ---------------------------------------------------------------------------------------------
# MigLayout


class LayoutInstance(SpecModel):
    """One GPU instance the GPU should have: a MIG profile at a placement."""

    profile: str = Field(min_length=1, description="MIG profile name, e.g. 3g.40gb or 1g.10gb.")
    placement: PlacementModel = Field(description="Where on the GPU the instance sits.")


class MigLayoutSpec(SpecModel):
    """The desired MIG layout of one GPU."""

    node_name: str = Field(min_length=1, description="Node the GPU is on.")
    gpu_index: int = Field(ge=0, description="NVML index of the GPU on its node.")
    gpu_uuid: str = Field(
        alias="gpuUUID",
        min_length=1,
        description="UUID of the GPU (GPU-...), as NVML reports it; guards against "
        "index changes after a reboot or hardware change.",
    )
    policy: Policy = Field(
        default="dynamic",
        description="dynamic: the operator plans the instances; static: only a person "
        "edits them and the operator leaves the GPU alone.",
    )
    mig_enabled: bool = Field(
        default=True, description="Whether MIG mode should be on (false on hami-core GPUs)."
    )
    instances: list[LayoutInstance] = Field(
        default_factory=list,
        description="The GPU instances the GPU should have, each with its placement. "
        "Instances that exist and are not listed are destroyed unless in use.",
    )


class GpuInfo(ApiModel):
    """The GPU as NVML describes it."""

    model: str = Field(description="Device name, e.g. NVIDIA A100-SXM4-80GB.")
    memory_mib: int = Field(alias="memoryMiB", ge=0, description="Total memory in MiB.")
    mig_capable: bool = Field(description="Whether the GPU supports MIG.")
    pci_device_id: int | None = Field(
        default=None,
        ge=0,
        description="PCI device id (e.g. 9013 = 0x2335 for an H200), which names the model "
        "more precisely than the device name.",
    )


class MigModeStatus(ApiModel):
    """MIG mode now and after the next GPU reset."""

    current: MigModeState = Field(description="MIG mode in force: Enabled or Disabled.")
    pending: MigModeState | None = Field(
        default=None,
        description="MIG mode after the next GPU reset; differs from current while a "
        "switch waits for the GPU to become idle.",
    )


class ProfileStatus(ApiModel):
    """A GPU-instance profile the GPU supports, as NVML reports it."""

    name: str = Field(description="Profile name, e.g. 1g.10gb.")
    id: int = Field(ge=0, description="NVML GPU-instance profile id (not the profile index).")
    memory_mib: int = Field(alias="memoryMiB", ge=0, description="Memory of one instance in MiB.")
    slices: int = Field(ge=0, description="Compute slices of one instance (NVML sliceCount).")
    placements: list[PlacementModel] = Field(
        default_factory=list, description="Every placement NVML allows for this profile."
    )
    max_count: int | None = Field(
        default=None, ge=0, description="Most instances of this profile the GPU can hold."
    )
    sm_count: int | None = Field(
        default=None, ge=0, description="Streaming multiprocessors of one instance."
    )


class InstanceStatus(ApiModel):
    """A GPU instance that exists on the GPU now."""

    profile: str = Field(description="MIG profile name, e.g. 3g.40gb.")
    placement: PlacementModel = Field(description="Where on the GPU the instance sits.")
    gpu_instance_id: int | None = Field(
        default=None, ge=0, description="NVML GPU-instance id (assigned by the driver)."
    )
    compute_instance_id: int | None = Field(
        default=None, ge=0, description="NVML compute-instance id inside the GPU instance."
    )
    uuid: str | None = Field(
        default=None, description="MIG device UUID (MIG-...), once a compute instance exists."
    )
    in_use: bool = Field(
        default=False, description="A process or an allocated pod holds the instance."
    )
    pod: str | None = Field(
        default=None, description="namespace/name of the pod the instance is allocated to."
    )


class MigLayoutStatus(ApiModel):
    """What the agent found on the GPU and how far it got applying the spec."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec this status reflects."
    )
    phase: Phase | None = Field(
        default=None, description="Pending, Applying, Ready, Degraded or Failed."
    )
    gpu: GpuInfo | None = Field(default=None, description="The GPU as NVML describes it.")
    mig_mode: MigModeStatus | None = Field(
        default=None, description="MIG mode now and after the next GPU reset."
    )
    profiles: list[ProfileStatus] = Field(
        default_factory=list,
        description="GPU-instance profiles NVML reports for this GPU, MIG mode on or off. "
        "The operator plans with this table; the built-in catalog only stands in for a GPU "
        "whose agent has not reported one.",
    )
    instances: list[InstanceStatus] = Field(
        default_factory=list, description="The GPU instances that exist on the GPU now."
    )
    conditions: ConditionList = Field(
        default_factory=list,
        description="Ready, Applied and Degraded, with reason and message; CatalogMismatch "
        "when NVML's profile table differs from the built-in catalog's.",
        json_schema_extra=_CONDITIONS_LIST_MAP,
    )
    # The three summaries exist for `kubectl get`: printer columns are JSONPath and cannot
    # count or join, so the agent writes them next to the data they summarise.
    mode: OperatingMode | None = Field(
        default=None, description="How the GPU is shared: mig or hami-core."
    )
    instances_summary: str | None = Field(
        default=None,
        description="The instances in one line, e.g. 3g.40gb,1g.10gbx3 (- when none).",
    )
    used: str | None = Field(
        default=None, description="Instances in use / instances, e.g. 1/4 (- when none)."
    )

    def with_summaries(self) -> Self:
        """A copy whose `instancesSummary` and `used` describe its `instances`."""
        return self.model_copy(
            update={
                "instances_summary": summarize_instances(self.instances),
                "used": used_summary(self.instances),
            }
        )


class MigLayout(ApiModel):
    """The MIG layout of one GPU: what it should be (spec, written by the operator or a
    person) and what it is (status, written by the node's agent). One per managed GPU,
    named <node>-gpu<index>."""

    api_version: str = Field(default=API_VERSION, description="migweaver.io/v1alpha1.")
    kind: Literal["MigLayout"] = Field(default="MigLayout", description="MigLayout.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard metadata.")
    spec: MigLayoutSpec = Field(description="The desired layout of the GPU.")
    status: MigLayoutStatus | None = Field(
        default=None, description="What exists on the GPU, reported by the node's agent."
    )

    @property
    def name(self) -> str:
        """metadata.name, or "" before the object has one."""
        return str(self.metadata.get("name") or "")


class _HasProfile(Protocol):
    @property
    def profile(self) -> str: ...


def summarize_instances(instances: Iterable[_HasProfile]) -> str:
    """`3g.40gb,1g.10gbx3`: profiles in order of first appearance, `xN` when N > 1; `-` if none.

    Printer columns show an empty string as nothing at all, so "none" is spelled `-`.
    """
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance.profile] = counts.get(instance.profile, 0) + 1
    if not counts:
        return "-"
    return ",".join(name if n == 1 else f"{name}x{n}" for name, n in counts.items())


def used_summary(instances: Sequence[InstanceStatus]) -> str:
    """`1/4`: instances in use over instances; `-` when the GPU has no instances."""
    if not instances:
        return "-"
    return f"{sum(1 for i in instances if i.in_use)}/{len(instances)}"


def layout_name(node: str, gpu_index: int) -> str:
    """The MigLayout name of a GPU: `<node>-gpu<index>`, a valid DNS-1123 subdomain.

    Node names are already DNS-1123 subdomains on a real cluster; anything else is
    lower-cased and its invalid characters become `-`. A name that would pass 253
    characters is cut and given a hash of the node name, so it stays unique.
    """
    if gpu_index < 0:
        raise ValueError(f"gpu index must be >= 0, got {gpu_index}")
    suffix = f"-gpu{gpu_index}"
    text = _NOT_NAME_CHAR.sub("-", node.lower())
    # Each dot-separated label must start and end with a letter or digit.
    base = ".".join(part.strip("-") for part in text.split(".") if part.strip("-"))
    base = base or "node"
    if len(base) + len(suffix) > _MAX_NAME:
        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        keep = _MAX_NAME - len(suffix) - len(digest) - 1
        base = f"{base[:keep].rstrip('.-')}-{digest}"
    return base + suffix


def node_label_value(node: str) -> str:
    """The value of label `migweaver.io/node` for a node.

    Label values are limited to 63 characters while node names may have 253; a longer
    name is cut and given a hash of the whole name, so selecting by it stays exact.
    """
    if len(node) <= _MAX_LABEL_VALUE:
        return node
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    keep = _MAX_LABEL_VALUE - len(digest) - 1
    return f"{node[:keep].rstrip('.-_')}-{digest}"


# ---------------------------------------------------------------------------------------------
# NodeConfig


class LabelSelectorRequirement(SpecModel):
    """One label requirement, as in Kubernetes' LabelSelector."""

    key: str = Field(min_length=1, description="Label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(
        default_factory=list,
        description="Label values: at least one for In and NotIn, none for Exists and "
        "DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> Self:
        wants_values = self.operator in ("In", "NotIn")
        if wants_values and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if not wants_values and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels satisfies the requirement."""
        match self.operator:
            case "In":
                return labels.get(self.key) in self.values
            case "NotIn":
                return labels.get(self.key) not in self.values
            case "Exists":
                return self.key in labels
            case "DoesNotExist":
                return self.key not in labels


class LabelSelector(SpecModel):
    """Selects nodes by label; all terms must hold. An empty selector selects every node."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must have, with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Label requirements a node must satisfy."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels is selected (Kubernetes' semantics)."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


class FilterDevices(SpecModel):
    """GPUs migweaver must leave alone on the selected nodes."""

    uuid: list[str] = Field(default_factory=list, description="GPU UUIDs (GPU-...) to skip.")
    index: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list, description="NVML GPU indices to skip."
    )


class NodeConfigSpec(SpecModel):
    """How migweaver runs the GPUs of one node, or of the nodes a selector picks."""

    model_config = ConfigDict(
        json_schema_extra={
            # The model validator below, enforced by the API server as well (CEL).
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.nodeName) != has(self.nodeSelector)",
                    "message": "exactly one of nodeName or nodeSelector must be set",
                }
            ]
        }
    )

    node_name: str | None = Field(
        default=None, min_length=1, description="The node this applies to (or nodeSelector)."
    )
    node_selector: LabelSelector | None = Field(
        default=None, description="The nodes this applies to, by label (or nodeName)."
    )
    operating_mode: OperatingMode = Field(
        default="hami-core",
        description="mig: GPUs are split into MIG instances on demand; hami-core: GPUs "
        "are shared whole, with HAMi-core memory and compute limits.",
    )
    filter_devices: FilterDevices = Field(
        default_factory=FilterDevices, description="GPUs migweaver must leave alone."
    )

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Self:
        if (self.node_name is None) == (self.node_selector is None):
            raise ValueError("exactly one of nodeName or nodeSelector must be set")
        return self

    def applies_to(self, node_name: str, labels: Mapping[str, str]) -> bool:
        """Whether this configuration is for the node with this name and these labels."""
        if self.node_name is not None:
            return self.node_name == node_name
        return self.node_selector is not None and self.node_selector.matches(labels)


class NodeConfigStatus(ApiModel):
    """Which nodes the configuration applies to and whether it is in force."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec this status reflects."
    )
    matched_nodes: list[str] = Field(
        default_factory=list, description="Names of the nodes this configuration applies to."
    )
    conditions: ConditionList = Field(
        default_factory=list,
        description="Conditions with reason and message.",
        json_schema_extra=_CONDITIONS_LIST_MAP,
    )


class NodeConfig(ApiModel):
    """How migweaver runs the GPUs of a node: MIG (split on demand) or hami-core (shared
    whole), and which GPUs it must leave alone. Nodes without one run in hami-core mode."""

    api_version: str = Field(default=API_VERSION, description="migweaver.io/v1alpha1.")
    kind: Literal["NodeConfig"] = Field(default="NodeConfig", description="NodeConfig.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard metadata.")
    spec: NodeConfigSpec = Field(description="The nodes and how their GPUs are run.")
    status: NodeConfigStatus | None = Field(
        default=None, description="The nodes matched, reported by the operator."
    )

    @property
    def name(self) -> str:
        """metadata.name, or "" before the object has one."""
        return str(self.metadata.get("name") or "")
