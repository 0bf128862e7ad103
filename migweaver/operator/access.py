"""What the operator's work loop needs of the Kubernetes API, as Protocols.

`Operator` takes an `OperatorApi`: one object per kind it reads or writes. `operator_api`
builds the real ones over a kubernetes_asyncio client (`migweaver.k8s`); a test passes
its own fakes for the parts it exercises (`dataclasses.replace(operator_api(...), pods=fake)`)
instead of reaching into the operator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from migweaver.core.resources.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL
from migweaver.k8s.client import ClusterObjects, CoreObjects, JsonDict, Listing
from migweaver.k8s.cluster import ConfigMaps, Nodes, Pods
from migweaver.k8s.events import EventRecorder, Recorder
from migweaver.operator.settings import COMPONENT

__all__ = [
    "ConfigMapStore",
    "LayoutStore",
    "NodeConfigStore",
    "NodeLister",
    "OperatorApi",
    "PodStore",
    "operator_api",
]


class PodStore(Protocol):
    """Every pod (list, watch); a merge patch of one; a strategic merge patch of its status;
    an eviction (only of a pod released to a node that no longer exists)."""

    async def list(self) -> Listing: ...
    def watch(
        self, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]: ...
    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict: ...
    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> JsonDict: ...
    async def evict(self, namespace: str, name: str, uid: str) -> None: ...


class LayoutStore(Protocol):
    """The MigLayouts: list, watch, and a merge patch of one's spec (409 on a stale
    version)."""

    async def list(self, label_selector: str | None = None) -> Listing: ...
    def watch(
        self, resource_version: str, label_selector: str | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]: ...
    async def patch(self, name: str, patch: Mapping[str, Any]) -> JsonDict: ...


class NodeConfigStore(Protocol):
    """The NodeConfigs: list, and a merge patch of one's status."""

    async def list(self, label_selector: str | None = None) -> Listing: ...
    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> JsonDict: ...


class NodeLister(Protocol):
    async def list(self) -> Listing: ...


class ConfigMapStore(Protocol):
    """The operator's namespace's ConfigMaps, listed and watched (from the list) by name."""

    async def list_named(self, name: str) -> Listing: ...
    def watch(
        self, name: str, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]: ...


@dataclass(frozen=True, slots=True)
class OperatorApi:
    """Everything the operator reads and writes, one object per kind."""

    pods: PodStore
    layouts: LayoutStore
    nodeconfigs: NodeConfigStore
    nodes: NodeLister
    configmaps: ConfigMapStore
    events: Recorder


def operator_api(api: client.ApiClient, namespace: str) -> OperatorApi:
    """The real API access over one kubernetes_asyncio client; ConfigMaps of `namespace`."""
    return OperatorApi(
        pods=Pods(api),
        layouts=ClusterObjects(api, MIGLAYOUT_PLURAL),
        nodeconfigs=ClusterObjects(api, NODECONFIG_PLURAL),
        nodes=Nodes(api),
        configmaps=ConfigMaps(api, namespace),
        events=EventRecorder(CoreObjects(api), COMPONENT),
    )
