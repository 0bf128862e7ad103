"""`Allocate`: the devices of the container the kubelet is admitting, from its pod's
allocation annotation, checked against the GPUs before they are handed out.

The decision is `migweaver.core.agent.binding.decide` (pure, documented there); this shell reads
its inputs afresh for every call (the node's pods from the API, the GPUs concerned
through the agent's GPU thread), writes the outcome on the pod and remembers which
containers of a pod it has answered:

- success: the container's environment; after the pod's last GPU container, the pod's
  `migweaver.io/bind-phase` becomes `success` (a conditional patch: if the pod's
  allocation changed meanwhile, the call fails rather than hand out old devices);
- failure: a `BindError` whose message names the pod and the device; that pod (only that
  one) gets bind-phase `failed`, the reason in `migweaver.io/bind-error` and a Warning
  Event `MigAllocateFailed`. When no pod matched at all, nothing is written anywhere.

Calls are serialised: the kubelet admits one pod at a time anyway, and the per-pod
progress must not interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from migweaver.agent.deviceplugin.gpus import GpuReadError, GpuView
from migweaver.agent.deviceplugin.hami_core import HamiCoreHost
from migweaver.agent.pods import PodStore
from migweaver.core.agent.binding import (
    BindError,
    BindErrorCode,
    ContainerGrant,
    ContainerMatch,
    DeviceListStrategy,
    PodRef,
    decide,
    match_container,
)
from migweaver.core.resources.allocation import (
    BIND_ALLOCATING,
    BIND_FAILED,
    BIND_SUCCESS,
    bind_patch,
)
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    annotations_of,
)
from migweaver.core.resources.bodies import PodBody
from migweaver.k8s.client import ApiError, Conflict, NotFound
from migweaver.k8s.events import Recorder
from migweaver.logs import get_logger

__all__ = ["EVENT_ALLOCATED", "EVENT_ALLOCATE_FAILED", "AllocateFailed", "Allocator"]

log = get_logger("migweaver.agent.deviceplugin")

EVENT_ALLOCATE_FAILED: Final = "MigAllocateFailed"
EVENT_ALLOCATED: Final = "MigAllocated"
_PATCH_ATTEMPTS: Final = 3


class AllocateFailed(Exception):
    """`Allocate` must fail with this gRPC status code and message."""

    def __init__(self, code: BindErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Allocator:
    """Answers `Allocate` for the node `node`, passing devices by `strategy`
    (`binding.container_env`: CDI device names by default); `hami_core` mounts HAMi-core
    into containers with a hami-core share (None: limits by environment only, which
    nothing enforces unless the image loads HAMi-core itself)."""

    def __init__(
        self,
        node: str,
        pods: PodStore,
        gpus: GpuView,
        events: Recorder,
        *,
        strategy: DeviceListStrategy = "cdi",
        hami_core: HamiCoreHost | None = None,
    ) -> None:
        self.node = node
        self.strategy = strategy
        self.hami_core = hami_core
        self._pods = pods
        self._gpus = gpus
        self._events = events
        self._lock = asyncio.Lock()
        self.progress: dict[str, frozenset[str]] = {}
        """Pod uid -> its containers answered so far (until the pod's bind-phase is final)."""

    async def allocate(self, requests: Sequence[Sequence[str]]) -> list[ContainerGrant]:
        """One `Allocate` call: a list of device ids per container; all or nothing."""
        async with self._lock:
            pods = await self._list_pods()
            # Pods no longer waiting (answered, failed, gone) need no progress any more.
            waiting = {
                PodRef.of(p).uid
                for p in pods
                if annotations_of(p).get(ANNOTATION_BIND_PHASE) == BIND_ALLOCATING
            }
            self.progress = {uid: c for uid, c in self.progress.items() if uid in waiting}
            if self.hami_core is not None:
                self.hami_core.prune({PodRef.of(p).uid for p in pods})
            progress = dict(self.progress)
            grants: list[ContainerGrant] = []
            for device_ids in requests:
                result = await self._decide(pods, len(device_ids), progress)
                if isinstance(result, BindError):
                    await self._fail(result)
                    raise AllocateFailed(result.code, result.message)
                prepared = self._prepare(result)
                if prepared is not None:
                    await self._fail(prepared)
                    raise AllocateFailed(prepared.code, prepared.message)
                grants.append(result)
                uid = result.match.pod.uid
                progress[uid] = progress.get(uid, frozenset()) | {result.match.container}
            for grant in grants:
                if grant.last:
                    error = await self._succeed(grant.match, pods)
                    if error is not None:
                        await self._fail(error)
                        raise AllocateFailed(error.code, error.message)
                    progress.pop(grant.match.pod.uid, None)
            self.progress = progress
        for grant in grants:
            await self._announce(grant)
        return grants

    async def _list_pods(self) -> list[PodBody]:
        # Always a fresh list, never a cache: a cached pod that was deleted a moment ago
        # could still look like it waits, and its devices would go to another pod.
        try:
            return cast("list[PodBody]", (await self._pods.list()).items)
        except ApiError as exc:
            message = f"cannot read the pods of node {self.node}: {exc}"
            log.warning("Allocate failed", node=self.node, detail=message)
            raise AllocateFailed(BindErrorCode.UNAVAILABLE, message) from exc

    async def _decide(
        self, pods: list[PodBody], count: int, progress: Mapping[str, frozenset[str]]
    ) -> ContainerGrant | BindError:
        # Match first, only to learn which GPUs to read; `decide` then makes the whole
        # decision on the same inputs (so it matches the same container).
        match = match_container(pods, node=self.node, device_count=count, progress=progress)
        if isinstance(match, BindError):
            return match
        wanted = {d.gpu_uuid for d in match.allocation.devices}
        try:
            gpus = await self._gpus.observe(wanted)
        except GpuReadError as exc:
            return BindError(
                BindErrorCode.UNAVAILABLE,
                f"pod {match.pod.key} container {match.container}: {exc}",
                pod=match.pod,
            )
        return decide(
            pods,
            node=self.node,
            device_count=count,
            gpus=gpus,
            progress=progress,
            strategy=self.strategy,
            hami_core=self.hami_core.setup if self.hami_core is not None else None,
        )

    def _prepare(self, grant: ContainerGrant) -> BindError | None:
        """HAMi-core's files for a container that gets them: the library must be there
        (else the limits would silently not apply: fail instead), and a fresh cache
        directory is made."""
        if not grant.mounts or self.hami_core is None:
            return None
        match = grant.match
        problem = self.hami_core.problem()
        if problem is None:
            try:
                self.hami_core.prepare(match.pod.uid, match.container)
            except OSError as exc:
                problem = f"cannot prepare HAMi-core's cache directory: {exc}"
        if problem is None:
            return None
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"pod {match.pod.key} container {match.container}: {problem}",
            pod=match.pod,
        )

    async def _succeed(self, match: ContainerMatch, pods: list[PodBody]) -> BindError | None:
        """Set bind-phase `success`, only if the pod still waits with the same allocation."""
        pod: PodBody | None = next((p for p in pods if PodRef.of(p).uid == match.pod.uid), None)
        for _ in range(_PATCH_ATTEMPTS):
            if pod is None or not _unchanged(pod, match):
                break
            patch = bind_patch(BIND_SUCCESS)
            version = (pod.get("metadata") or {}).get("resourceVersion")
            if version:  # a merge patch with null would delete the precondition, not set it
                patch["metadata"]["resourceVersion"] = version
            try:
                await self._pods.patch(match.pod.namespace, match.pod.name, patch)
                return None
            except Conflict:
                pass  # read the pod again below
            except NotFound:
                break
            except ApiError as exc:
                return _unrecorded(match, exc)
            try:
                pod = await self._get(match.pod)
            except ApiError as exc:  # the re-read fails too: not an INTERNAL error
                return _unrecorded(match, exc)
        return BindError(
            BindErrorCode.FAILED_PRECONDITION,
            f"pod {match.pod.key} changed while its devices were allocated "
            f"({ANNOTATION_ALLOCATION} or {ANNOTATION_BIND_PHASE} rewritten, or the pod "
            "deleted): nothing handed out",
            pod=match.pod,
        )

    async def _get(self, ref: PodRef) -> PodBody | None:
        try:
            pod = cast(PodBody, await self._pods.get(ref.namespace, ref.name))
        except NotFound:
            return None
        return pod if PodRef.of(pod).uid == ref.uid else None

    async def _fail(self, error: BindError) -> None:
        log.warning(
            "Allocate failed",
            node=self.node,
            pod=error.pod.key if error.pod else None,
            detail=error.message,
        )
        if error.pod is None:
            return  # no pod matched: nothing to mark
        self.progress.pop(error.pod.uid, None)
        try:
            await self._pods.patch(
                error.pod.namespace, error.pod.name, bind_patch(BIND_FAILED, error.message)
            )
        except ApiError as exc:
            log.warning(
                "could not mark the pod", pod=error.pod.key, bind_phase=BIND_FAILED, error=str(exc)
            )
        await self._events.record(
            _involved(error.pod), EVENT_ALLOCATE_FAILED, error.message, "Warning"
        )

    async def _announce(self, grant: ContainerGrant) -> None:
        devices = ", ".join(d.describe() for d in grant.devices)
        await self._events.record(
            _involved(grant.match.pod),
            EVENT_ALLOCATED,
            f"container {grant.match.container}: {devices}",
        )


def _unrecorded(match: ContainerMatch, exc: ApiError) -> BindError:
    return BindError(
        BindErrorCode.UNAVAILABLE,
        f"pod {match.pod.key}: cannot record {ANNOTATION_BIND_PHASE}={BIND_SUCCESS}: {exc}",
        pod=match.pod,
    )


def _unchanged(pod: PodBody, match: ContainerMatch) -> bool:
    annotations = annotations_of(pod)
    return (
        annotations.get(ANNOTATION_ALLOCATION) == match.annotation
        and annotations.get(ANNOTATION_BIND_PHASE) == BIND_ALLOCATING
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def _involved(ref: PodRef) -> dict[str, Any]:
    # Listed pods carry no apiVersion/kind; an Event's involvedObject needs both.
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
    }
