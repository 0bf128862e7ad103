"""The agent's view of its node's pods: who holds which device (in-use accounting).

An instance allocated to a pod is in use from the moment the operator writes the pod's
`migweaver.io/allocation`, even before a process runs on it: the MigLayout status shows
`inUse: true` and `pod: ns/name`, and the reconciler never destroys it. The watcher lists
and watches the pods of its node (field selector `spec.nodeName`), keeps
`core.resources.allocation.held_devices` of them, and when that changes asks the agent to refresh
the layouts of the GPUs concerned, so a pod that ends releases its instance at once.

`held` is a live read-only mapping for `NodeAgent(held_by_pods=...)`: the reconciler runs
in the GPU thread and re-reads it at every observation; the watcher swaps in a new dict
(never mutates one), so a reader always sees one consistent version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from migweaver.agent.waiting import pause, until_stopped
from migweaver.core.resources.allocation import HeldDevice, held_devices
from migweaver.k8s.client import ApiError, JsonDict, Listing
from migweaver.logs import Repeated, get_logger

log = get_logger("migweaver.agent.pods")


class PodStore(Protocol):
    """The pod calls of the agent (`k8s.client.NodePods` fits): its node's pods only."""

    async def list(self) -> Listing: ...
    async def get(self, namespace: str, name: str) -> JsonDict: ...
    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict: ...
    def watch(
        self, resource_version: str, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]: ...


class LiveHeld(Mapping[str, str]):
    """Read-only view of the watcher's current holders (MIG/GPU UUID -> `ns/name`)."""

    def __init__(self, watcher: PodWatcher) -> None:
        self._watcher = watcher

    def __getitem__(self, key: str) -> str:
        return self._watcher.held_devices[key].pod

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._watcher.held_devices))

    def __len__(self) -> int:
        return len(self._watcher.held_devices)


class PodWatcher:
    """Lists and watches the node's pods; keeps `held_devices` and reports its changes.

    `on_change(gpu_uuids)` is awaited with the GPUs whose holders changed. `ready` is set
    after the first successful list: before it the agent must not reconcile (it would not
    know which instances pods hold).
    """

    def __init__(
        self,
        node: str,
        pods: PodStore,
        *,
        on_change: Callable[[frozenset[str]], Awaitable[None]] | None = None,
        resync_s: int = 30,
        retry_s: float = 5.0,
    ) -> None:
        self.node = node
        self._pods = pods
        self._on_change = on_change
        self._resync_s = resync_s
        self._retry_s = retry_s
        self.pods: dict[str, JsonDict] = {}
        self.held_devices: dict[str, HeldDevice] = {}
        self.held = LiveHeld(self)
        self.ready = asyncio.Event()
        self._repeats = Repeated(log)

    async def run(self, stop: asyncio.Event) -> None:
        """List, then watch until the server ends the watch, and again, until `stop`."""
        while not stop.is_set():
            try:
                listing = await self.sync()
                self._repeats.clear()
                await self._watch(listing.resource_version, stop)
            except ApiError as exc:
                # A 410 Gone (resourceVersion too old) lands here too: list again. An API
                # that stays away is said once, then ever more rarely with a count.
                self._repeats.warning(
                    "watch", "cannot follow the node's pods", node=self.node, error=str(exc)
                )
                await pause(stop, self._retry_s)

    async def sync(self) -> Listing:
        """Read every pod of the node afresh."""
        listing = await self._pods.list()
        self.pods = {_uid(p): p for p in listing.items}
        await self._update()
        self.ready.set()
        return listing

    async def apply(self, kind: str, obj: JsonDict) -> None:
        """One watch event."""
        if kind == "DELETED":
            self.pods.pop(_uid(obj), None)
        elif kind in {"ADDED", "MODIFIED"}:
            self.pods[_uid(obj)] = obj
        else:
            return  # BOOKMARK: nothing changed
        await self._update()

    async def _watch(self, resource_version: str, stop: asyncio.Event) -> None:
        async def consume() -> None:
            async for kind, obj in self._pods.watch(resource_version, timeout_s=self._resync_s):
                await self.apply(kind, obj)

        await until_stopped(consume(), stop, self._resync_s + 5)

    async def _update(self) -> None:
        before = self.held_devices
        after = held_devices(self.pods.values(), self.node)
        if after == before:
            return
        self.held_devices = after  # swapped, never mutated: the GPU thread reads it
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        gpus = frozenset(
            d.gpu_uuid for k in changed for d in (before.get(k), after.get(k)) if d is not None
        )
        log.info(
            "devices held by pods changed",
            node=self.node,
            devices=len(after),
            gpus=", ".join(sorted(gpus)),
        )
        if self._on_change is not None:
            try:
                await self._on_change(gpus)
            except ApiError as exc:
                # The next resync reports it; the holders are already in force.
                log.warning(
                    "could not refresh layouts after a pod change", node=self.node, error=str(exc)
                )
            except Exception:  # the agent's failure must not end the pod watch
                log.exception("refreshing layouts after a pod change failed", node=self.node)


def _uid(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
