"""Cluster-wide reads and writes the operator makes itself (kopf only watches for it).

- `Pods`: every pod (list), one pod (get), a merge patch (optionally conditional on the
  pod's `resourceVersion`), a strategic merge patch of its status (`patch_status`), an
  eviction (`evict`);
- `Nodes`: the node list (labels, for NodeConfig selectors and the hostname label);
- `ConfigMaps`: one ConfigMap in one namespace, read and watched by name;
- `connection_settings`: what kopf needs to log in, taken from the same kubeconfig (or
  service account) the kubernetes_asyncio client was made from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from migweaver.k8s.client import (
    STRATEGIC_MERGE_PATCH,
    CoreApi,
    JsonDict,
    Listing,
    PodCalls,
    _listing,
    _or_none,
    watch_events,
)


class Pods(PodCalls):
    """Pods in every namespace."""

    async def list(self) -> Listing:
        return _listing(await self._call("list pods", "list_pod_for_all_namespaces"), "Pod")

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        """Strategic-merge-patch the `pods/status` subresource (`{"status": {...}}`).

        Strategic, not JSON merge: pod conditions merge by `type`, so a patch naming one
        condition leaves the scheduler's and the kubelet's in place.
        """
        return await self._call(
            f"patch status of pod {namespace}/{name}",
            "patch_namespaced_pod_status",
            name,
            namespace,
            dict(patch),
            _content_type=STRATEGIC_MERGE_PATCH,
        )

    async def evict(self, namespace: str, name: str, uid: str) -> None:
        """Create the pod's `pods/eviction` (policy/v1): the apiserver deletes the pod unless
        a PodDisruptionBudget forbids it now (429). The UID precondition makes sure it is
        this very pod, not one re-created under the same name (a StatefulSet's)."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}},
        }
        await self._call(
            f"evict pod {namespace}/{name}", "create_namespaced_pod_eviction", name, namespace, body
        )

    async def watch(
        self, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        """Events of every pod after `resource_version` (see `ClusterObjects.watch`)."""
        async for item in watch_events(
            self._core.list_pod_for_all_namespaces,
            call="watch pods",
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
        ):
            yield item


class Nodes(CoreApi):
    async def list(self) -> Listing:
        return _listing(await self._call("list nodes", "list_node"), "Node")


class ConfigMaps(CoreApi):
    """One namespace's ConfigMaps, by name."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(api)
        self.namespace = namespace

    async def get(self, name: str) -> JsonDict | None:
        """The ConfigMap, or None when it does not exist."""
        return await _or_none(
            self._call(
                f"get configmap {self.namespace}/{name}",
                "read_namespaced_config_map",
                name,
                self.namespace,
            )
        )

    async def list_named(self, name: str) -> Listing:
        """The named ConfigMap (zero or one item) and the resourceVersion to watch it from."""
        return _listing(
            await self._call(
                f"list configmap {self.namespace}/{name}",
                "list_namespaced_config_map",
                self.namespace,
                field_selector=f"metadata.name={name}",
            ),
            "ConfigMap",
        )

    async def watch(
        self, name: str, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        """Events of the named ConfigMap after `resource_version` (of `list_named`), until
        the server ends the watch. A real API server answers a watch without a
        resourceVersion from its watch cache, which can lag behind etcd: 504 "Too large
        resource version", every time. So a watch always starts from its own list."""
        async for item in watch_events(
            self._core.list_namespaced_config_map,
            self.namespace,
            call="watch configmap",
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
        ):
            yield item


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How to reach the API server, as kopf's `ConnectionInfo` wants it."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


async def connection_settings(api: client.ApiClient) -> ConnectionSettings:
    """The server, TLS files and token of a kubernetes_asyncio client's configuration."""
    config: Any = api.configuration
    token: str | None = None
    if "BearerToken" in (config.api_key or {}):
        value = await config.get_api_key_with_prefix("BearerToken")
        if value:
            token = str(value).removeprefix("Bearer ").strip() or None
    return ConnectionSettings(
        server=str(config.host),
        ca_path=config.ssl_ca_cert or None,
        insecure=not bool(config.verify_ssl),
        token=token,
        certificate_path=config.cert_file or None,
        private_key_path=config.key_file or None,
    )
