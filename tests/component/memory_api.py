"""In-memory stand-ins for the API calls the agent makes (no HTTP).

`MemoryPods` holds pods by `namespace/name` and shows one node's pods as the agent's
field-selected list and watch do; `MemoryNodes` keeps node labels and status and applies
the agent's JSON patches of the status.

`MemoryObjects` keeps cluster-scoped objects like the API server does where the agent
depends on it: `metadata.generation` grows only when `spec` changes, every write gets a
new `resourceVersion`, `create` of an existing name is a Conflict, a status patch changes
only `status` and a main patch never does, label selectors `key=value`, and watches
deliver every change after the resourceVersion they start from.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from migweaver.k8s.client import JSON_PATCH, ApiError, Conflict, JsonDict, Listing, NotFound


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MemoryObjects:
    def __init__(self) -> None:
        self.objects: dict[str, JsonDict] = {}
        self.version = 0
        self.history: list[tuple[int, str, JsonDict]] = []
        self.changed = asyncio.Condition()

    def _matches(self, obj: Mapping[str, Any], selector: str | None) -> bool:
        if not selector:
            return True
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(
            labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(","))
        )

    async def _record(self, kind: str, obj: JsonDict) -> JsonDict:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, kind, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()
        return copy.deepcopy(obj)

    async def list(self, label_selector: str | None = None) -> Listing:
        items = [
            copy.deepcopy(o)
            for _, o in sorted(self.objects.items())
            if self._matches(o, label_selector)
        ]
        return Listing(items=items, resource_version=str(self.version))

    async def get(self, name: str) -> JsonDict:
        if name not in self.objects:
            raise NotFound(404, "not found", f"get {name}")
        return copy.deepcopy(self.objects[name])

    async def create(self, body: Mapping[str, Any]) -> JsonDict:
        obj = copy.deepcopy(dict(body))
        name = obj["metadata"]["name"]
        if name in self.objects:
            raise Conflict(409, "AlreadyExists", f"create {name}")
        obj.pop("status", None)
        obj["metadata"]["generation"] = 1
        obj["metadata"].setdefault("uid", f"uid-{name}")
        self.objects[name] = obj
        return await self._record("ADDED", obj)

    async def patch(self, name: str, patch: Mapping[str, Any]) -> JsonDict:
        obj = self.objects.get(name)
        if obj is None:
            raise NotFound(404, "not found", f"patch {name}")
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", f"patch {name}")
        before = copy.deepcopy(obj.get("spec"))
        _merge(obj, {k: v for k, v in patch.items() if k != "status"})
        if obj.get("spec") != before:
            obj["metadata"]["generation"] += 1
        return await self._record("MODIFIED", obj)

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> JsonDict:
        obj = self.objects.get(name)
        if obj is None:
            raise NotFound(404, "not found", f"patch status {name}")
        status = obj.setdefault("status", {})
        _merge(status, patch.get("status") or {})
        return await self._record("MODIFIED", obj)

    async def watch(
        self, resource_version: str, label_selector: str | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        seen = int(resource_version or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for version, kind, obj in self.history:
                if version > seen:
                    seen = version
                    if self._matches(obj, label_selector):
                        yield kind, copy.deepcopy(obj)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            async with self.changed:
                try:
                    await asyncio.wait_for(
                        self.changed.wait_for(functools.partial(self._newer_than, seen)),
                        remaining,
                    )
                except TimeoutError:
                    return

    def _newer_than(self, version: int) -> bool:
        return self.version > version

    async def wait_for(self, predicate: Any) -> None:
        """Until `predicate(self)` holds; callers bound it with `asyncio.timeout`."""
        async with self.changed:
            await self.changed.wait_for(lambda: predicate(self))


class MemoryNodes:
    """Nodes with labels and a status; `patch_node_status` applies JSON patches (RFC 6902)
    as the API server does: all operations or none, 422 when one cannot apply."""

    def __init__(self, labels: dict[str, dict[str, str]] | None = None) -> None:
        self.labels = labels or {}
        self.status: dict[str, JsonDict] = {
            name: {"capacity": {"cpu": "8", "pods": "110"}, "allocatable": {"cpu": "8"}}
            for name in self.labels
        }
        self.status_patches: list[tuple[str, Any, str]] = []
        self.changed = asyncio.Condition()

    async def read_node(self, name: str) -> JsonDict:
        if name not in self.labels:
            raise NotFound(404, "not found", f"read_node {name}")
        return {
            "metadata": {"name": name, "labels": self.labels[name]},
            "status": copy.deepcopy(self.status.get(name, {})),
        }

    async def patch_node_status(self, name: str, patch: Any, content_type: str) -> JsonDict:
        if name not in self.labels:
            raise NotFound(404, "not found", f"patch_node_status {name}")
        if content_type != JSON_PATCH:
            raise ApiError(415, f"unsupported {content_type}", "patch_node_status")
        self.status_patches.append((name, copy.deepcopy(patch), content_type))
        document = {"status": copy.deepcopy(self.status.get(name, {}))}
        try:
            for op in patch:
                apply_json_patch_op(document, op)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ApiError(422, f"json patch: {exc}", "patch_node_status") from exc
        self.status[name] = document["status"]
        async with self.changed:
            self.changed.notify_all()
        return await self.read_node(name)

    async def wait_for(self, name: str, predicate: Any, within_s: float = 10) -> None:
        """Until `predicate(status of node name)` holds after a status patch, bounded."""
        async with asyncio.timeout(within_s), self.changed:
            await self.changed.wait_for(lambda: predicate(self.status[name]))


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json_patch_op(document: dict[str, Any], op: Mapping[str, Any]) -> None:
    """`add` and `remove` of RFC 6902 on objects (all the agent writes)."""
    *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
    target: Any = document
    for token in parents:
        target = target[token]
    if not isinstance(target, dict):
        raise TypeError(f"{op['path']}: parent is not an object")
    if op["op"] == "add":
        target[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del target[last]
    else:
        raise ValueError(f"unsupported op {op['op']}")


class MemoryPods(MemoryObjects):
    """Pods of all namespaces (keyed `namespace/name`), as `k8s.client.NodePods` sees the
    ones of `node`: list and watch select `spec.nodeName`, patches are merge patches with
    an optional `metadata.resourceVersion` precondition. `patches` logs every patch."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self.patches: list[tuple[str, JsonDict]] = []

    def _on_node(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("spec") or {}).get("nodeName") == self.node

    async def add(self, pod: Mapping[str, Any]) -> JsonDict:
        obj = copy.deepcopy(dict(pod))
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if key in self.objects:
            raise Conflict(409, "AlreadyExists", f"create pod {key}")
        meta.setdefault("uid", f"uid-{meta['namespace']}-{meta['name']}")
        self.objects[key] = obj
        return await self._record("ADDED", obj)

    async def list(self, label_selector: str | None = None) -> Listing:  # type: ignore[override]
        listing = await super().list(label_selector)
        return Listing([p for p in listing.items if self._on_node(p)], listing.resource_version)

    async def get(self, namespace: str, name: str) -> JsonDict:  # type: ignore[override]
        return await super().get(f"{namespace}/{name}")

    async def patch(  # type: ignore[override]
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> JsonDict:
        self.patches.append((f"{namespace}/{name}", copy.deepcopy(dict(patch))))
        obj = self.objects.get(f"{namespace}/{name}")
        if obj is None:
            raise NotFound(404, "not found", f"patch pod {namespace}/{name}")
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", f"patch pod {namespace}/{name}")
        body = copy.deepcopy(dict(patch))
        (body.get("metadata") or {}).pop("resourceVersion", None)
        _merge(obj, body)
        return await self._record("MODIFIED", obj)

    async def set_phase(self, namespace: str, name: str, phase: str) -> JsonDict:
        obj = self.objects[f"{namespace}/{name}"]
        obj.setdefault("status", {})["phase"] = phase
        return await self._record("MODIFIED", obj)

    async def delete(self, namespace: str, name: str) -> None:
        obj = self.objects.pop(f"{namespace}/{name}")
        await self._record("DELETED", obj)

    async def watch(  # type: ignore[override]
        self, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]:
        async for kind, obj in super().watch(resource_version, None, timeout_s):
            if self._on_node(obj):
                yield kind, obj

    def annotations(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.objects[f"{namespace}/{name}"]["metadata"].get("annotations") or {})


class MemoryEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    async def record(
        self, involved: Mapping[str, Any], reason: str, message: str, event_type: Any = "Normal"
    ) -> None:
        name = str((involved.get("metadata") or {}).get("name"))
        self.events.append((name, reason, message, str(event_type)))

    def reasons(self, name: str) -> list[str]:
        return [reason for n, reason, _, _ in self.events if n == name]
