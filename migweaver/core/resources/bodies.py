"""The shapes of the raw API objects core reads: pods, object metadata, MigLayouts,
NodeConfigs and Nodes, as the API server returns them (camelCase keys).

These are TypedDicts, not models: core still checks every value it reads (an object from
the API, or a test, may lack a field or hold the wrong type), so each field is optional
and code reads them with `.get` and `isinstance`. What they add is the list of keys core
depends on, checked by mypy. The shells (`migweaver.operator`, `migweaver.agent`) declare
that what a list or watch returned has this shape with a `cast`, in one place each.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ContainerBody",
    "MigLayoutBody",
    "NodeBody",
    "NodeConfigBody",
    "ObjectMeta",
    "PodBody",
    "PodSpecBody",
    "PodStatusBody",
    "ResourceRequirements",
    "SchedulingGate",
]


class ObjectMeta(TypedDict, total=False):
    """`metadata` of any object."""

    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]
    finalizers: list[str]


class ResourceRequirements(TypedDict, total=False):
    """A container's `resources`: quantities by resource name (strings or numbers)."""

    limits: dict[str, Any]
    requests: dict[str, Any]


class ContainerBody(TypedDict, total=False):
    """One entry of `spec.containers` (or `initContainers`)."""

    name: str
    image: str
    resources: ResourceRequirements


class SchedulingGate(TypedDict, total=False):
    """One entry of `spec.schedulingGates`."""

    name: str


class PodSpecBody(TypedDict, total=False):
    """The parts of a pod's `spec` migweaver reads."""

    nodeName: str
    containers: list[ContainerBody]
    initContainers: list[ContainerBody]
    schedulingGates: list[SchedulingGate]
    nodeSelector: dict[str, str]
    affinity: dict[str, Any]
    tolerations: list[dict[str, Any]]
    priority: int


class PodStatusBody(TypedDict, total=False):
    """The parts of a pod's `status` migweaver reads."""

    phase: str
    conditions: list[dict[str, Any]]


class PodBody(TypedDict, total=False):
    """A pod as the API returns it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpecBody
    status: PodStatusBody


class MigLayoutBody(TypedDict, total=False):
    """A MigLayout as the API returns it; `spec` and `status` are parsed by
    `core.resources.models.MigLayout.from_api`."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: dict[str, Any]


class NodeConfigBody(TypedDict, total=False):
    """A NodeConfig as the API returns it (parsed by `NodeConfig.from_api`)."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: dict[str, Any]


class NodeBody(TypedDict, total=False):
    """A Node as the API returns it: labels, `spec.unschedulable` and taints, and
    `status` (conditions, capacity) are what the operator and agent read."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    status: dict[str, Any]
