"""What the operator has seen of one kind of object, fed by watch events and its own writes.

Listing every pod, MigLayout, NodeConfig and Node every round cost a 500-pod burst most of
its time (docs/benchmarks.md). Instead, the work loop keeps the objects the watches deliver
(`observe`), the answers of its own writes (`store`: the next round must see what this one
wrote, before the watch delivers it), and replaces everything with a full list now and then
(`replace`: the first round, every resync, and after any write refused as stale).

Which version wins is decided by resourceVersion: the API server's versions are etcd
revisions, which only grow (an opaque string by contract; a version that is not a number
is taken as newer, as an informer would). An event older than what is held is ignored, so
a write's answer is never undone by the watch catching up, and an object deleted is not
brought back by an older event or answer arriving after its deletion (its tombstone, kept
until the next full list, says when it went).

Pure: no I/O, no clock. The operator's writes are conditional on resourceVersion, so a
store that lags behind the API server costs a refused write and a re-read, never a wrong
one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from migweaver.core.resources.api import metadata_of

__all__ = ["ObjectStore", "kept", "object_key", "version_of"]


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name` (`name` for a cluster-scoped object)."""
    meta = metadata_of(obj)
    namespace = meta.get("namespace")
    name = str(meta.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


def version_of(obj: Mapping[str, Any]) -> int | None:
    """The object's resourceVersion as a number; None when it has none or not a number."""
    try:
        return int(str(metadata_of(obj).get("resourceVersion")))
    except ValueError:
        return None


def kept(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object without `metadata.managedFields`: server-side apply's bookkeeping, often
    the largest part of a pod or MigLayout, which nothing in migweaver reads."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _newer(candidate: int | None, held: int | None) -> bool:
    """Whether a version should replace the one held (unknown versions always do)."""
    return candidate is None or held is None or candidate > held


class ObjectStore:
    """Objects of one kind by `namespace/name`, newest version wins."""

    def __init__(self) -> None:
        self._objects: dict[str, Mapping[str, Any]] = {}
        self._gone: dict[str, int | None] = {}
        """Key -> the version at which it was deleted (until the next full list)."""
        self._listed: int | None = None
        self.synced = False
        """Whether a full list has filled the store (before it, it knows nothing)."""

    def __len__(self) -> int:
        return len(self._objects)

    def items(self) -> list[Mapping[str, Any]]:
        return list(self._objects.values())

    def get(self, key: str) -> Mapping[str, Any] | None:
        return self._objects.get(key)

    def replace(self, objects: Iterable[Mapping[str, Any]], list_version: str) -> None:
        """Everything, from a full list answered at `list_version`.

        What was observed after the list was made (while its answer was on the way) is
        newer than the list and stays: an object of a later version, a later deletion."""
        try:
            listed: int | None = int(list_version)
        except ValueError:
            listed = None
        fresh = {object_key(o): kept(o) for o in objects}
        gone: dict[str, int | None] = {}
        if listed is not None:
            for key, held in self._objects.items():
                version = version_of(held)
                if version is not None and version > listed:
                    fresh[key] = held
            for key, version in self._gone.items():
                if version is not None and version > listed:
                    fresh.pop(key, None)
                    gone[key] = version
        self._objects, self._gone, self._listed = fresh, gone, listed
        self.synced = True

    def store(self, obj: Mapping[str, Any]) -> None:
        """An object as the API server answered a write (or a watch delivered it)."""
        obj = kept(obj)
        key = object_key(obj)
        version = version_of(obj)
        held = self._objects.get(key)
        if held is not None:
            if _newer(version, version_of(held)):
                self._objects[key] = obj
            return
        if key in self._gone and not _newer(version, self._gone[key]):
            return  # deleted after this version
        if (
            key not in self._gone
            and self._listed is not None
            and version is not None
            and version <= self._listed
        ):
            return  # absent from a list made after this version: deleted since
        self._objects[key] = obj
        self._gone.pop(key, None)

    def forget(self, obj: Mapping[str, Any]) -> None:
        """The object was deleted (or stopped concerning the operator) at its version."""
        key = object_key(obj)
        held = self._objects.get(key)
        version = version_of(obj)
        if held is not None and not _newer(version, version_of(held)) and version is not None:
            return  # an older deletion notice than what is held: keep it
        self._objects.pop(key, None)
        if key not in self._gone or _newer(version, self._gone[key]):
            self._gone[key] = version

    def observe(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event (`ADDED`, `MODIFIED`, `DELETED`; None for a listing's object)."""
        if event_type == "DELETED":
            self.forget(obj)
        else:
            self.store(obj)
