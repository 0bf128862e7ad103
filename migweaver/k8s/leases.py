"""`coordination.k8s.io/v1` Leases of one namespace: read, create, conditional replace."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes_asyncio import client

from migweaver.k8s.client import _FAILURES, JsonDict, _or_none, _translate


def now_micro() -> str:
    """Now as a Lease's MicroTime (`renewTime`, `acquireTime`) wants it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leases:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api_client = api
        self._coordination: Any = client.CoordinationV1Api(api)
        self.namespace = namespace

    async def _call(self, call: str, method: str, *args: Any) -> JsonDict:
        try:
            result = await getattr(self._coordination, method)(*args)
        except _FAILURES as exc:
            raise _translate(exc, call) from exc
        return cast(JsonDict, self._api_client.sanitize_for_serialization(result))

    async def get(self, name: str) -> JsonDict | None:
        """The Lease, or None when it does not exist."""
        where = f"{self.namespace}/{name}"
        return await _or_none(
            self._call(f"get lease {where}", "read_namespaced_lease", name, self.namespace)
        )

    async def create(self, name: str, spec: Mapping[str, Any]) -> JsonDict:
        """Create the Lease; `Conflict` when another replica created it first."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "migweaver"}},
            "spec": dict(spec),
        }
        return await self._call(
            f"create lease {self.namespace}/{name}", "create_namespaced_lease", self.namespace, body
        )

    async def replace(self, lease: Mapping[str, Any], spec: Mapping[str, Any]) -> JsonDict:
        """Replace the spec of `lease` as read: `Conflict` when it changed since (its
        resourceVersion travels with it), so two replicas never both take it."""
        metadata = cast(Mapping[str, Any], lease.get("metadata") or {})
        name = str(metadata.get("name"))
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": dict(metadata),
            "spec": dict(spec),
        }
        return await self._call(
            f"replace lease {self.namespace}/{name}",
            "replace_namespaced_lease",
            name,
            self.namespace,
            body,
        )
