"""A small generic Kubernetes client for the e2e tests, over kubernetes_asyncio's ApiClient.

The same code talks to the emulator and to a real cluster (authentication, TLS and the
server address all come from the kubeconfig through kubernetes_asyncio), so a test that
passes against one is meaningful against the other. Objects are plain dicts.

`wait_for`/`wait_for_list` wait on watch events, never on sleeps: they list, check the
predicate, then watch from the list's resourceVersion and re-check on every event,
re-listing when the server ends the watch or answers 410 Gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

JsonDict = dict[str, Any]
Objects = list[JsonDict]  # (an alias: `Kube.list` shadows `list` in the class body)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """An API call failed: HTTP `status`, the Status body's `reason`, `message` and body."""

    def __init__(self, status: int, body: Any, call: str) -> None:
        self.status = status
        self.body: JsonDict = body if isinstance(body, dict) else {"message": str(body)}
        self.reason = str(self.body.get("reason", ""))
        self.message = str(self.body.get("message", ""))
        super().__init__(f"{call}: HTTP {status} {self.reason}: {self.message}")


@dataclass(frozen=True, slots=True)
class Ref:
    """A resource type: where its objects live in the API."""

    api_version: str
    plural: str
    namespaced: bool
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Ref("v1", "pods", True, "Pod")
NODES = Ref("v1", "nodes", False, "Node")
NAMESPACES = Ref("v1", "namespaces", False, "Namespace")
EVENTS = Ref("v1", "events", True, "Event")
CONFIGMAPS = Ref("v1", "configmaps", True, "ConfigMap")
SECRETS = Ref("v1", "secrets", True, "Secret")
LEASES = Ref("coordination.k8s.io/v1", "leases", True, "Lease")
MUTATING_WEBHOOKS = Ref(
    "admissionregistration.k8s.io/v1",
    "mutatingwebhookconfigurations",
    False,
    "MutatingWebhookConfiguration",
)
CRDS = Ref(
    "apiextensions.k8s.io/v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)
MIGLAYOUTS = Ref("migweaver.io/v1alpha1", "miglayouts", False, "MigLayout")
NODECONFIGS = Ref("migweaver.io/v1alpha1", "nodeconfigs", False, "NodeConfig")
KNOWN = {(r.api_version, r.kind): r for r in (
    PODS, NODES, NAMESPACES, EVENTS, CONFIGMAPS, SECRETS, LEASES, MUTATING_WEBHOOKS, CRDS,
    MIGLAYOUTS, NODECONFIGS,
)}  # fmt: skip


def meta(obj: Mapping[str, Any]) -> JsonDict:
    return cast(JsonDict, obj.get("metadata") or {})


def condition(obj: Mapping[str, Any] | None, type_: str) -> JsonDict | None:
    """`status.conditions[type == type_]` of an object, if any."""
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return cast(JsonDict, item)
    return None


@dataclass
class Kube:
    """A connection to the cluster under test, plus helpers and per-test clean-up."""

    kubeconfig: Path
    api: client.ApiClient
    namespace: str
    prefix: str = ""
    emulator: Any = None  # the Emulator when the tests run against it
    _created: list[tuple[Ref, str, str | None]] = field(default_factory=list)
    _discovered: dict[tuple[str, str], Ref] = field(default_factory=dict)

    @classmethod
    async def connect(
        cls, kubeconfig: Path, namespace: str, prefix: str = "", emulator: Any = None
    ) -> Kube:
        api = await config.new_client_from_config(config_file=str(kubeconfig))
        return cls(kubeconfig, api, namespace, prefix, emulator)

    async def close(self) -> None:
        await self.api.close()

    @property
    def is_emulator(self) -> bool:
        return self.emulator is not None

    def name(self, base: str) -> str:
        """A cluster-scoped name for this test run (unprefixed on the private emulator)."""
        return f"{self.prefix}{base}"

    # ------------------------------------------------------------------ raw calls

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; the decoded JSON answer, or KubeError."""
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object", 202: "object"},
                _return_http_data_only=True,
            )
        except ApiException as exc:
            try:
                parsed = json.loads(exc.body) if exc.body else {}
            except ValueError:
                parsed = {"message": str(exc.body)}
            raise KubeError(int(exc.status or 0), parsed, f"{method} {path}") from exc

    async def ref_for(self, obj: Mapping[str, Any]) -> Ref:
        """The resource type of an object, from its apiVersion and kind (via discovery)."""
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        key = (api_version, kind)
        if key in KNOWN:
            return KNOWN[key]
        if key not in self._discovered:
            path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            listing = await self.request("GET", path)
            for resource in listing.get("resources") or []:
                if "/" not in resource["name"]:
                    ref = Ref(
                        api_version, resource["name"], resource["namespaced"], resource["kind"]
                    )
                    self._discovered[(api_version, resource["kind"])] = ref
        if key not in self._discovered:
            raise KubeError(404, {"reason": "NotFound"}, f"discovery of {api_version} {kind}")
        return self._discovered[key]

    # ------------------------------------------------------------------ objects

    def track(self, ref: Ref, name: str, namespace: str | None = None) -> None:
        """Delete this object when the current test ends (created by the code under test)."""
        entry = (ref, name, namespace if ref.namespaced else None)
        if entry not in self._created:
            self._created.append(entry)

    async def create(
        self, ref: Ref, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonDict:
        namespace = self._ns(ref, body, namespace)
        created = cast(JsonDict, await self.request("POST", ref.path(namespace), dict(body)))
        self.track(ref, meta(created)["name"], namespace)
        return created

    async def apply(self, document: str | Mapping[str, Any]) -> Objects:
        """Create each object of a YAML text or dict, or merge-patch it when it exists."""
        docs: Iterable[Any] = (
            yaml.safe_load_all(document) if isinstance(document, str) else [document]
        )
        results = []
        for doc in docs:
            if not doc:
                continue
            ref = await self.ref_for(doc)
            try:
                results.append(await self.create(ref, doc))
            except KubeError as exc:
                if exc.reason != "AlreadyExists":
                    raise
                patch = {k: v for k, v in doc.items() if k not in ("status",)}
                patch["metadata"] = {
                    k: v for k, v in meta(doc).items() if k not in ("resourceVersion",)
                }
                namespace = self._ns(ref, doc, None)
                results.append(await self.patch(ref, meta(doc)["name"], patch, namespace))
        return results

    async def get(self, ref: Ref, name: str, namespace: str | None = None) -> JsonDict:
        return cast(
            JsonDict, await self.request("GET", ref.path(self._ns(ref, None, namespace), name))
        )

    async def get_or_none(
        self, ref: Ref, name: str, namespace: str | None = None
    ) -> JsonDict | None:
        try:
            return await self.get(ref, name, namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_with_version(
        self,
        ref: Ref,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[Objects, str]:
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        path = ref.path(namespace if ref.namespaced else None)
        body = await self.request("GET", path, query=query)
        return list(body.get("items") or []), str(meta(body).get("resourceVersion", ""))

    async def list(
        self,
        ref: Ref,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Objects:
        items, _ = await self.list_with_version(ref, namespace, label_selector, field_selector)
        return items

    async def patch(
        self,
        ref: Ref,
        name: str,
        patch: Any,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> JsonDict:
        path = ref.path(self._ns(ref, None, namespace), name, subresource)
        return cast(JsonDict, await self.request("PATCH", path, patch, content_type=content_type))

    async def replace(
        self, ref: Ref, body: Mapping[str, Any], subresource: str | None = None
    ) -> JsonDict:
        namespace = self._ns(ref, body, None)
        path = ref.path(namespace, meta(body)["name"], subresource)
        return cast(JsonDict, await self.request("PUT", path, dict(body)))

    async def delete(
        self,
        ref: Ref,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JsonDict:
        """DELETE; pods default to a grace period of 0 (no kubelet confirms a stop)."""
        if grace_period_seconds is None and ref == PODS:
            grace_period_seconds = 0
        query = {"gracePeriodSeconds": grace_period_seconds}
        path = ref.path(self._ns(ref, None, namespace), name)
        return cast(JsonDict, await self.request("DELETE", path, query=query))

    def _ns(self, ref: Ref, body: Mapping[str, Any] | None, namespace: str | None) -> str | None:
        if not ref.namespaced:
            return None
        return namespace or (meta(body).get("namespace") if body else None) or self.namespace

    # ------------------------------------------------------------------ watching

    async def watch(
        self,
        ref: Ref,
        resource_version: str | None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: float = 60,
        bookmarks: bool = True,
    ) -> AsyncGenerator[tuple[str, JsonDict], None]:
        """The raw events of one watch request: (type, object) until the server closes it."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": str(max(1, int(timeout_s))),
            "allowWatchBookmarks": "true" if bookmarks else None,
        }
        path = ref.path(namespace if ref.namespaced else None)
        response = await self.api.call_api(
            path,
            "GET",
            query_params=[(k, v) for k, v in query.items() if v is not None],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        try:
            if response.status != 200:
                raise KubeError(response.status, await response.json(), f"watch {path}")
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    yield str(event["type"]), cast(JsonDict, event["object"])
        finally:
            response.close()

    async def wait_for_list(
        self,
        ref: Ref,
        predicate: Callable[[Objects], bool],
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: float = 10.0,
    ) -> Objects:
        """Wait until `predicate(objects)` holds for the matching objects; returns them."""
        objects: dict[tuple[str, str], JsonDict] = {}

        def key(obj: JsonDict) -> tuple[str, str]:
            return (str(meta(obj).get("namespace", "")), str(meta(obj)["name"]))

        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    items, rv = await self.list_with_version(
                        ref, namespace, label_selector, field_selector
                    )
                    objects = {key(o): o for o in items}
                    if predicate(list(objects.values())):
                        return list(objects.values())
                    remaining = max(1.0, deadline - time.monotonic())
                    events = self._resumable(
                        ref, rv, namespace, label_selector, field_selector, remaining
                    )
                    with contextlib.suppress(_Gone):
                        async with contextlib.aclosing(events):
                            async for kind, obj in events:
                                if kind == "DELETED":
                                    objects.pop(key(obj), None)
                                elif kind in ("ADDED", "MODIFIED"):
                                    objects[key(obj)] = obj
                                else:
                                    continue
                                if predicate(list(objects.values())):
                                    return list(objects.values())
        except TimeoutError:
            shown = json.dumps(list(objects.values()), indent=1)[:4000]
            raise AssertionError(
                f"timed out after {timeout_s}s waiting on {ref.plural} "
                f"(namespace={namespace}, labels={label_selector}, fields={field_selector}); "
                f"last seen:\n{shown}"
            ) from None

    async def _resumable(
        self,
        ref: Ref,
        rv: str,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        timeout_s: float,
    ) -> AsyncGenerator[tuple[str, JsonDict], None]:
        async for kind, obj in self.watch(
            ref, rv, namespace, label_selector, field_selector, timeout_s
        ):
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise KubeError(int(obj.get("code") or 0), obj, f"watch {ref.plural}")
            yield kind, obj

    async def wait_for(
        self,
        ref: Ref,
        name: str,
        predicate: Callable[[JsonDict | None], bool],
        namespace: str | None = None,
        timeout_s: float = 10.0,
    ) -> JsonDict | None:
        """Wait until `predicate(object or None when absent)` holds; returns the object."""
        namespace = self._ns(ref, None, namespace)

        def check(items: Objects) -> bool:
            return predicate(items[0] if items else None)

        items = await self.wait_for_list(
            ref, check, namespace, field_selector=f"metadata.name={name}", timeout_s=timeout_s
        )
        return items[0] if items else None

    async def wait_gone(
        self, ref: Ref, name: str, namespace: str | None = None, timeout_s: float = 60
    ) -> None:
        await self.wait_for(ref, name, lambda o: o is None, namespace, timeout_s)

    async def ensure_crds(self, paths: Iterable[Path]) -> tuple[str, ...]:
        """Create the CRDs in these files that are missing and wait until they are served.

        Returns the names of those this call created (the others are left as they are:
        on a real cluster they may belong to an installed migweaver).
        """
        created = []
        for path in sorted(paths):
            crd = yaml.safe_load(path.read_text())
            name = meta(crd)["name"]
            try:
                await self.request("POST", CRDS.path(), crd)
                created.append(name)
            except KubeError as exc:
                if exc.reason != "AlreadyExists":
                    raise
            await self.wait_for(CRDS, name, _established)
        return tuple(created)

    # ------------------------------------------------------------------ clean-up

    async def cleanup(self) -> None:
        """Delete what the current test created or tracked, newest first, and wait."""
        created, self._created = self._created, []
        for ref, name, namespace in reversed(created):
            try:
                await self.delete(ref, name, namespace)
                obj = await self.get_or_none(ref, name, namespace)
                if obj is not None and meta(obj).get("finalizers"):
                    # Nobody else will remove them once the test's controllers are gone.
                    await self.patch(ref, name, {"metadata": {"finalizers": None}}, namespace)
                await self.wait_gone(ref, name, namespace)
            except KubeError as exc:
                if exc.status != 404:
                    raise


def _established(crd: JsonDict | None) -> bool:
    found = condition(crd, "Established")
    return bool(found and found.get("status") == "True")


class _Gone(Exception):
    """A watch answered 410: re-list."""
