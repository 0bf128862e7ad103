"""In-memory stand-ins for the API calls the agent makes (no HTTP).

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

from migweaver.k8s.client import Conflict, JsonDict, Listing, NotFound


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
    def __init__(self, labels: dict[str, dict[str, str]] | None = None) -> None:
        self.labels = labels or {}

    async def read_node(self, name: str) -> JsonDict:
        if name not in self.labels:
            raise NotFound(404, "not found", f"read_node {name}")
        return {"metadata": {"name": name, "labels": self.labels[name]}}


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
