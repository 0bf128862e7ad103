"""Typed, dict-based access to the Kubernetes API for the agent and the operator.

This is the only package that imports `kubernetes_asyncio`. Objects travel as plain dicts
(exactly the JSON the API server sends), so the pydantic models of `core.resources.models` parse
them directly and tests can compare bodies without client model classes.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from migweaver.core.resources.api import GROUP, VERSION, format_timestamp

JsonDict = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, call: str) -> None:
        self.status = status
        self.reason = reason
        self.call = call
        super().__init__(f"{call}: HTTP {status} {reason}")


class NotFound(ApiError):
    """404: the object does not exist."""


class Conflict(ApiError):
    """409: the object changed since it was read (stale resourceVersion) or already exists."""


# What a call raises when the API server is not reached at all (restarting, network
# down): the same ApiError, status 0, so every caller's retry path covers it.
_FAILURES = (ApiException, aiohttp.ClientError, TimeoutError)


def _translate(exc: BaseException, call: str) -> ApiError:
    if not isinstance(exc, ApiException):
        return ApiError(0, f"API server not reached: {exc!r}", call)
    status = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or "")
    body = getattr(exc, "body", None)
    if body:
        reason = f"{reason}: {str(body)[:500]}"
    if status == 404:
        return NotFound(status, reason, call)
    if status == 409:
        return Conflict(status, reason, call)
    return ApiError(status, reason, call)


async def watch_events(
    list_call: Any, *args: Any, call: str, **kwargs: Any
) -> AsyncIterator[tuple[str, JsonDict]]:
    """The (type, object) events of a watch over `list_call(*args, **kwargs)` until the
    server ends it; an ERROR event (410 Gone, for one) or a failed call is an ApiError."""
    stream = watch.Watch()
    try:
        async with stream.stream(list_call, *args, **kwargs) as events:
            async for event in events:
                kind = str(event.get("type", ""))
                obj = event.get("raw_object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code", 0) or 0)
                    raise ApiError(code, str(obj.get("message", "")), call)
                yield kind, cast(JsonDict, obj)
    except _FAILURES as exc:
        raise _translate(exc, call) from exc


async def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from `kubeconfig`, `$KUBECONFIG`, or the pod's service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return await config.new_client_from_config(config_file=path)
    # Untyped in kubernetes_asyncio; it reads the service account token and CA.
    load_incluster: Any = config.load_incluster_config
    load_incluster()
    return client.ApiClient()


def now_rfc3339() -> str:
    return format_timestamp(time.time())


@dataclass(frozen=True, slots=True)
class Listing:
    """A list response: the items and the resourceVersion to watch from."""

    items: list[JsonDict]
    resource_version: str


def _listing(body: JsonDict, kind: str | None = None) -> Listing:
    """A list response as a `Listing`; with `kind`, each item gets the `apiVersion` (v1)
    and `kind` that a list of built-in objects leaves out (Events and messages need them)."""
    items = list(body.get("items") or [])
    if kind is not None:
        for item in items:
            item.setdefault("apiVersion", "v1")
            item.setdefault("kind", kind)
    return Listing(
        items=items,
        resource_version=str((body.get("metadata") or {}).get("resourceVersion", "")),
    )


async def _or_none(call: Awaitable[JsonDict]) -> JsonDict | None:
    """The object `call` reads, or None when it does not exist (404)."""
    try:
        return await call
    except NotFound:
        return None


class ClusterObjects:
    """One cluster-scoped custom resource kind (`miglayouts`, `nodeconfigs`) of migweaver.io."""

    def __init__(self, api: client.ApiClient, plural: str) -> None:
        self._api: Any = client.CustomObjectsApi(api)
        self.plural = plural

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> JsonDict:
        try:
            result = await getattr(self._api, name)(GROUP, VERSION, self.plural, *args, **kwargs)
        except _FAILURES as exc:
            raise _translate(exc, f"{name} {self.plural}") from exc
        return cast(JsonDict, result)

    async def list(self, label_selector: str | None = None) -> Listing:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        return _listing(await self._call("list_cluster_custom_object", **kwargs))

    async def get(self, name: str) -> JsonDict:
        return await self._call("get_cluster_custom_object", name)

    async def create(self, body: Mapping[str, Any]) -> JsonDict:
        return await self._call("create_cluster_custom_object", dict(body))

    async def patch(self, name: str, patch: Mapping[str, Any]) -> JsonDict:
        """Merge-patch the object (status is ignored by the server: it has a subresource).

        Put `metadata.resourceVersion` into `patch` for optimistic concurrency: the server
        then answers 409 (`Conflict`) when the object changed since it was read.
        """
        return await self._call(
            "patch_cluster_custom_object", name, dict(patch), _content_type=MERGE_PATCH
        )

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> JsonDict:
        """Merge-patch the status subresource (`{"status": {...}}`); spec is left alone."""
        return await self._call(
            "patch_cluster_custom_object_status", name, dict(patch), _content_type=MERGE_PATCH
        )

    async def delete(self, name: str) -> JsonDict:
        return await self._call("delete_cluster_custom_object", name)

    async def watch(
        self, resource_version: str, label_selector: str | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        """Events after `resource_version`: (`ADDED`|`MODIFIED`|`DELETED`|`BOOKMARK`, object).

        Ends when the server closes the watch (after `timeout_s`); the caller re-lists or
        resumes from the last seen resourceVersion. A 410 Gone becomes `ApiError(410)`.
        """
        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "timeout_seconds": timeout_s,
            "allow_watch_bookmarks": True,
        }
        if label_selector:
            kwargs["label_selector"] = label_selector
        async for item in watch_events(
            self._api.list_cluster_custom_object,
            GROUP,
            VERSION,
            self.plural,
            call=f"watch {self.plural}",
            **kwargs,
        ):
            yield item


class CoreApi:
    """Base of the core/v1 helpers: the client, and its answers as plain dicts."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api_client = api
        # The generated signatures want client model classes; we pass plain dicts, which
        # the client serializes the same way.
        self._core: Any = client.CoreV1Api(api)

    def _plain(self, obj: Any) -> JsonDict:
        return cast(JsonDict, self._api_client.sanitize_for_serialization(obj))

    async def _call(self, call: str, method: str, *args: Any, **kwargs: Any) -> JsonDict:
        """`CoreV1Api.<method>(*args, **kwargs)` as a plain dict; a failure is an ApiError
        naming `call`."""
        try:
            result = await getattr(self._core, method)(*args, **kwargs)
        except _FAILURES as exc:
            raise _translate(exc, call) from exc
        return self._plain(result)


class PodCalls(CoreApi):
    """Reading and merge-patching one pod: what the agent and the operator both do."""

    async def get(self, namespace: str, name: str) -> JsonDict:
        return await self._call(
            f"get pod {namespace}/{name}", "read_namespaced_pod", name, namespace
        )

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        """Merge-patch the pod; a `metadata.resourceVersion` in `patch` makes it conditional
        (409 `Conflict` when the pod changed since it was read)."""
        return await self._call(
            f"patch pod {namespace}/{name}",
            "patch_namespaced_pod",
            name,
            namespace,
            dict(patch),
            _content_type=MERGE_PATCH,
        )


class CoreObjects(CoreApi):
    """The few core/v1 calls migweaver makes: nodes, node status, events."""

    async def read_node(self, name: str) -> JsonDict:
        return await self._call("read_node", "read_node", name)

    async def patch_node_status(self, name: str, patch: Any, content_type: str) -> JsonDict:
        return await self._call(
            "patch_node_status", "patch_node_status", name, patch, _content_type=content_type
        )

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call(
            "create_namespaced_event", "create_namespaced_event", namespace, dict(body)
        )


class NodePods(PodCalls):
    """The pods of one node (field selector `spec.nodeName=<node>`), for the agent.

    The agent reads its node's pods (the allocation annotations) and patches their
    annotations (the bind phase); it never creates, deletes or evicts a pod.
    """

    def __init__(self, api: client.ApiClient, node: str) -> None:
        super().__init__(api)
        self.node = node
        self.field_selector = f"spec.nodeName={node}"

    async def list(self) -> Listing:
        body = await self._call(
            "list pods", "list_pod_for_all_namespaces", field_selector=self.field_selector
        )
        return _listing(body)

    async def watch(
        self, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        """Events of the node's pods after `resource_version` (see `ClusterObjects.watch`)."""
        async for item in watch_events(
            self._core.list_pod_for_all_namespaces,
            call="watch pods",
            field_selector=self.field_selector,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
        ):
            yield item
