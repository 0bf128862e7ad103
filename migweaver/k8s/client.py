"""Typed, dict-based access to the Kubernetes API for the agent and the operator.

This is the only package that imports `kubernetes_asyncio`. Objects travel as plain dicts
(exactly the JSON the API server sends), so the pydantic models of `core.resources.models` parse
them directly and tests can compare bodies without client model classes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from migweaver.core.resources.api import GROUP, VERSION, format_timestamp
from migweaver.logs import get_logger

JsonDict = dict[str, Any]

log = get_logger(__name__)

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


TOO_MANY_REQUESTS = 429
RETRIES_ON_429 = 8
"""How often one call is retried when the API server says it is overloaded (429)."""
MAX_BACKOFF_S = 5.0


def backoff_s(attempt: int, retry_after: str | None) -> float:
    """How long to wait before retry `attempt` (0-based) of a call answered 429: the
    server's `Retry-After` when it gives one, else 0.1 s doubling; never above 5 s."""
    try:
        wanted = float(retry_after) if retry_after else 0.1 * 2**attempt
    except ValueError:
        wanted = 0.1 * 2**attempt
    return max(0.0, min(wanted, MAX_BACKOFF_S))


async def _answer(response: Any) -> JsonDict:
    """The decoded JSON body of a raw (`_preload_content=False`) response; an error status
    is raised as kubernetes_asyncio raises it (`ApiException`, with body and headers).

    Raw because the client's own decoding builds a model object per field of every pod
    (and parses every timestamp) only for us to turn it back into a dict: that was most of
    the operator's CPU time on a large cluster (docs/benchmarks.md)."""
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = data.decode(errors="replace")
        error.headers = response.headers
        raise error
    return cast(JsonDict, json.loads(data)) if data else {}


async def call_json(method: Any, *args: Any, call: str, **kwargs: Any) -> JsonDict:
    """`method(*args, **kwargs)` of a kubernetes_asyncio API class, as the plain JSON the
    server sent; a failure is an ApiError naming `call`. A 429 (API Priority and Fairness
    or max-in-flight refusing a request) is retried after the server's `Retry-After`, with
    backoff, a few times before it is raised."""
    for attempt in range(RETRIES_ON_429 + 1):
        try:
            return await _answer(await method(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            if exc.status == TOO_MANY_REQUESTS and attempt < RETRIES_ON_429:
                retry_after = (getattr(exc, "headers", None) or {}).get("Retry-After")
                log.debug("API server overloaded (429): retrying", call=call, retry=attempt + 1)
                await asyncio.sleep(backoff_s(attempt, retry_after))
                continue
            raise _translate(exc, call) from exc
        except _FAILURES as exc:
            raise _translate(exc, call) from exc
    raise AssertionError("unreachable")  # pragma: no cover


class _RawWatch(watch.Watch):
    """kubernetes_asyncio's watch, minus what migweaver never reads: decoding each event's
    object into a client model (a pod's takes milliseconds; `raw_object` is what we use),
    and the ApiClient it makes for that decoding (an SSL context loaded for every watch).
    `__init__` and `close` are the parent's without that client."""

    def __init__(self) -> None:
        self._raw_return_type = None
        self._stop = False
        self.resource_version = None
        self.resp = None

    def get_return_type(self, func: object) -> None:  # type: ignore[override]
        return None

    async def close(self) -> None:
        if self.resp is not None:
            self.resp.release()
            self.resp = None


async def watch_events(
    list_call: Any, *args: Any, call: str, **kwargs: Any
) -> AsyncIterator[tuple[str, JsonDict]]:
    """The (type, object) events of a watch over `list_call(*args, **kwargs)` until the
    server ends it; an ERROR event (410 Gone, for one) or a failed call is an ApiError."""
    stream = _RawWatch()
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
        return await call_json(
            getattr(self._api, name),
            GROUP,
            VERSION,
            self.plural,
            *args,
            call=f"{name} {self.plural}",
            **kwargs,
        )

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

    async def _call(self, call: str, method: str, *args: Any, **kwargs: Any) -> JsonDict:
        """`CoreV1Api.<method>(*args, **kwargs)` as a plain dict; a failure is an ApiError
        naming `call`."""
        return await call_json(getattr(self._core, method), *args, call=call, **kwargs)


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
