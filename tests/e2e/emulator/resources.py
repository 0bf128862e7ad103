"""The kinds the emulator serves: built-in ones and those registered by CRDs.

A `ResourceType` holds what the apiserver's per-kind "strategy" decides and what the
emulator must therefore reproduce: scope, whether `status` is a subresource (and so
isolated from the main resource), how `metadata.generation` moves, whether an update
without `metadata.resourceVersion` is allowed, and which field selectors are supported.
Objects are stored per (group, plural), whatever version they were written with: like a
CRD with `conversion: None`, only `apiVersion` differs between served versions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

JsonDict = dict[str, Any]

# When metadata.generation grows: on `spec` changes (kinds with a status subresource),
# on any change outside metadata (custom resources without one, webhook
# configurations), or never (ConfigMap, Node, Event...: the real apiserver leaves
# generation unset on them).
Generation = Literal["spec", "all", "none"]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]

METADATA_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
POD_FIELDS = METADATA_FIELDS | {
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
}
EVENT_FIELDS = METADATA_FIELDS | {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served group/version/resource and the behaviour of its strategy."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Nodes may be created with their status (a kubelet registers that way); every other
    # kind with a status subresource has the status of a create dropped.
    keep_status_on_create: bool = False
    generation: Generation = "none"
    # False for custom resources and CRDs: a PUT must carry metadata.resourceVersion.
    unconditional_update: bool = True
    field_labels: frozenset[str] = METADATA_FIELDS
    extra_subresources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, kind, verbs)
    schema: JsonDict | None = field(default=None, compare=False, hash=False)
    custom: bool = False
    crd_name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The storage key: all served versions of a kind share their objects."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[JsonDict]:
        """This kind's entries in an APIResourceList, subresources included."""
        main: JsonDict = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": SUBRESOURCE_VERBS,
                }
            )
        for name, kind, verbs in self.extra_subresources:
            entries.append(
                {
                    "name": f"{self.plural}/{name}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": kind,
                    "verbs": list(verbs),
                }
            )
        return entries


def _core(plural: str, kind: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, **kw)


CRD_TYPE = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    False,
    short_names=("crd", "crds"),
    status_subresource=True,
    generation="spec",
    unconditional_update=False,
)

BUILTIN: tuple[ResourceType, ...] = (
    # Pods: generation follows spec changes as on Kubernetes >= 1.33.
    _core(
        "pods",
        "Pod",
        True,
        short_names=("po",),
        categories=("all",),
        status_subresource=True,
        generation="spec",
        field_labels=POD_FIELDS,
        extra_subresources=(
            ("binding", "Binding", ("create",)),
            ("eviction", "Eviction", ("create",)),
        ),
    ),
    _core(
        "nodes",
        "Node",
        False,
        short_names=("no",),
        status_subresource=True,
        keep_status_on_create=True,
        field_labels=METADATA_FIELDS | {"spec.unschedulable"},
    ),
    _core(
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        status_subresource=True,
        field_labels=METADATA_FIELDS | {"status.phase"},
    ),
    _core("events", "Event", True, short_names=("ev",), field_labels=EVENT_FIELDS),
    _core("configmaps", "ConfigMap", True, short_names=("cm",)),
    _core("secrets", "Secret", True, field_labels=METADATA_FIELDS | {"type"}),
    _core(
        "serviceaccounts",
        "ServiceAccount",
        True,
        short_names=("sa",),
        extra_subresources=(("token", "TokenRequest", ("create",)),),
    ),
    _core(
        "services",
        "Service",
        True,
        short_names=("svc",),
        categories=("all",),
        status_subresource=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        generation="all",
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        generation="all",
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        status_subresource=True,
        generation="spec",
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
        generation="spec",
    ),
    # Stored only (no RBAC here): a test sets up a tenant as on a real cluster.
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    CRD_TYPE,
    # Stored apart from core/v1 events (no conversion between the two shapes).
    ResourceType("events.k8s.io", "v1", "events", "Event", True, short_names=("ev",)),
)


def types_of_crd(crd: JsonDict) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        has_status = "status" in (version.get("subresources") or {})
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource=has_status,
                generation="spec" if has_status else "all",
                unconditional_update=False,
                schema=copy.deepcopy((version.get("schema") or {}).get("openAPIV3Schema")),
                custom=True,
                crd_name=str(crd["metadata"]["name"]),
            )
        )
    return types


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes version priority: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > x."""
    match = _VERSION.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


class Registry:
    """Every served resource type, by (group, version, plural)."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTIN:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def any_version(self, group: str, plural: str) -> ResourceType | None:
        """Some served version of (group, plural), for storage-level work."""
        return next((t for t in self if t.key == (group, plural)), None)

    def register_crd(self, crd: JsonDict) -> None:
        """(Re-)register the kinds a CRD defines; replaces what an older version served."""
        self.unregister_crd(str(crd["metadata"]["name"]))
        for rt in types_of_crd(crd):
            self._add(rt)

    def unregister_crd(self, name: str) -> None:
        for key, rt in list(self._types.items()):
            if rt.crd_name == name:
                del self._types[key]

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions, preferred first; core ("") included."""
        result: dict[str, list[str]] = {}
        for rt in self:
            versions = result.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return {g: sorted(v, key=version_priority) for g, v in result.items()}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self if rt.group == group and rt.version == version]
