"""The operator's work: rounds of read everything, decide (core), write, explain.

Kopf's handlers only *notify* this object (`pod_arrived`, `capacity_changed`,
`layout_changed`, ...); one task (`run`) does the work in rounds, one at a time, so every
write of the operator is serialised and made from a fresh read of the API:

1. read pods, MigLayouts, NodeConfigs and Nodes (`core.operator.state.cluster_state`);
2. NodeConfigs: `spec.migEnabled` of their GPUs, their status and Events;
3. releases: every reserved pod whose devices are Ready gets its one patch; a released
   pod whose Node was deleted before binding is evicted or explained
   (`core.operator.vanished`);
4. when the batching window is due: plan, write the changed MigLayout specs (409 re-reads
   and re-plans, never overwrites), then the pods' reservation annotations, then Events
   and the pods' `migweaver.io/Placement` condition (`core.operator.pod_condition`).

Everything it knows comes from the API in step 1, so a restarted operator continues
where the last one stopped (docs/design.md, "Safety rules"). The only memory kept between rounds is
what avoids repeating itself: the batching window, whether pods wait for room, the last
`MigUnschedulable` reason per pod, the MigLayouts already logged as left out, and since
when each released pod's Node has been missing (its grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from migweaver.core.config import CONFIGMAP_NAME
from migweaver.core.config.reload import ConfigInForce, ReloadOutcome, reload
from migweaver.core.operator.batching import BatchWindow
from migweaver.core.operator.metric_rows import InvalidLayout
from migweaver.core.operator.nodeconfig_actions import (
    mode_changes,
    nodeconfig_reports,
    status_patch,
)
from migweaver.core.operator.plan_writes import (
    LayoutWrite,
    layout_change_message,
    plan_writes,
    planned_message,
    unschedulable_events,
)
from migweaver.core.operator.pod_condition import (
    PlacementCondition,
    condition_patch,
    planned_condition,
    ready_condition,
    reasons_already_told,
    unplaceable_condition,
)
from migweaver.core.operator.release import NotReady, ready_allocation, release_patch, ungate_patch
from migweaver.core.operator.state import (
    ClusterState,
    WaitingPod,
    allocated_rows,
    build_snapshot,
    cluster_state,
    instance_owners,
)
from migweaver.core.operator.vanished import (
    Stranded,
    already_told,
    due_for_action,
    stranded_pods,
    stranded_since,
    vanished_condition,
    vanished_message,
)
from migweaver.core.planning.plan import PlannerOptions
from migweaver.core.planning.planner import plan
from migweaver.core.resources.allocation import Allocation
from migweaver.core.resources.api import format_timestamp, metadata_of, parse_timestamp
from migweaver.core.resources.bodies import MigLayoutBody, NodeBody, NodeConfigBody, PodBody
from migweaver.core.resources.requests import RequestDefaults
from migweaver.k8s.client import ApiError, Conflict, NotFound
from migweaver.k8s.events import EventType
from migweaver.logs import get_logger
from migweaver.operator.access import OperatorApi
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.settings import OperatorOptions

log = get_logger("migweaver.operator")


_PodWritten = Literal["written", "stale", "refused"]


@dataclass
class _Outcome:
    """What a pass did: `wrote` (re-read before planning), `again` (plan again soon)."""

    wrote: bool = False
    again: bool = False


class Operator:
    """The operator's state between rounds, its triggers and its rounds."""

    def __init__(
        self,
        api: OperatorApi,
        options: OperatorOptions,
        metrics: OperatorMetrics,
        *,
        planner_options: PlannerOptions | None = None,
        leading: Callable[[], Awaitable[bool]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._leading = leading
        self.metrics = metrics
        self.planner_options = planner_options or PlannerOptions()
        self._mono = monotonic
        self._wall = wall
        self.pods = api.pods
        self.layouts = api.layouts
        self.nodeconfigs = api.nodeconfigs
        self.nodes = api.nodes
        self.configmaps = api.configmaps
        self.events = api.events
        self.window = BatchWindow(options.batch_idle, options.batch_max)
        self.config = ConfigInForce()
        self.ready = asyncio.Event()
        """Set after the first complete round."""
        self.rounds = 0
        self._wake = asyncio.Event()
        """A round is wanted now."""
        self._reschedule = asyncio.Event()
        """The batching window changed: recompute when the next round is due."""
        self._said: dict[str, str] = {}
        self._unplaced = False
        self._config_lock = asyncio.Lock()
        self._left_out: dict[str, str] = {}
        self._ignored: dict[str, str] = {}
        self._arrivals = 0
        self._without_node: set[str] = set()
        """MigLayouts already reported as having no Node."""
        self._stranded_since: dict[str, float] = {}
        """Released pods whose Node is gone -> when first seen so (monotonic)."""
        self._grace_timer: asyncio.TimerHandle | None = None

    def request_defaults(self) -> RequestDefaults:
        """Resource names and request defaults of the configuration in force."""
        return self.config.config.request_defaults()

    # ------------------------------------------------------------------ triggers

    def pod_arrived(self) -> None:
        """A gated pod without a reservation appeared or changed: it opens (or extends) a
        batch. No round now: the loop only recomputes when the batch is due."""
        self.window = self.window.arrive(self._mono())
        self._arrivals += 1
        self._reschedule.set()

    def capacity_changed(self) -> None:
        """Something that may free or create room changed (a pod ended, a layout's status,
        a NodeConfig, a Node): a round now, and a plan if pods are waiting for room."""
        if self._unplaced:
            self.window = self.window.arrive(self._mono())
        self._wake.set()

    # ------------------------------------------------------------------ loop

    async def leading(self) -> bool:
        """Whether this replica may write (always, without peering)."""
        if self._leading is None:
            return True
        try:
            return await self._leading()
        except ApiError as exc:
            log.warning("cannot read the peering object", error=str(exc))
        except Exception:
            # Outside the round's own guard: a bug here must not end the work loop.
            log.exception("cannot decide whether this replica leads; standing by")
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop`: on triggers, when the batch is due, every `resync_s`.

        A replica that is not the active peer makes no round; it looks again every few
        seconds and starts with a full round (resync) when it becomes active.
        """
        last = -math.inf
        while not stop.is_set():
            leading = await self.leading()
            self.metrics.set_leader(leading)
            if not leading:
                last = -math.inf
                await _wait_any(self.options.standby_poll_s, stop)
                continue
            now = self._mono()
            until_resync = max(0.0, last + self.options.resync_s - now)
            until_batch = self.window.wait(now)
            timeout = until_resync if until_batch is None else min(until_resync, until_batch)
            self._reschedule.clear()
            if not self._wake.is_set() and timeout > 0:
                await _wait_any(timeout, self._wake, stop, self._reschedule)
            if stop.is_set():
                return
            now = self._mono()
            resync = now >= last + self.options.resync_s
            if not (self._wake.is_set() or resync or self.window.due(now)):
                continue  # only the window moved: wait again until it is due
            self._wake.clear()
            if resync:
                last = self._mono()
            try:
                await self.round(resync=resync)
            except ApiError as exc:
                log.warning("round failed, retrying", error=str(exc))
                await _wait_any(1.0, stop)
            except Exception:
                # A bug must not stop the operator for good: say so loudly, try again.
                log.exception("round failed unexpectedly, retrying")
                await _wait_any(5.0, stop)

    async def read(self) -> ClusterState:
        pods, layouts, configs, nodes = await asyncio.gather(
            self.pods.list(), self.layouts.list(), self.nodeconfigs.list(), self.nodes.list()
        )
        # The API's answers, declared as the shapes core reads (core checks every value).
        return cluster_state(
            pods=cast("list[PodBody]", pods.items),
            layouts=cast("list[MigLayoutBody]", layouts.items),
            nodeconfigs=cast("list[NodeConfigBody]", configs.items),
            nodes=cast("list[NodeBody]", nodes.items),
            defaults=self.request_defaults(),
        )

    def _log_left_out(self, state: ClusterState, invalid: Sequence[InvalidLayout]) -> None:
        """Log each MigLayout left out (it does not parse, or a second one for a GPU), once
        per reason (not every round)."""
        now = dict(state.invalid_layouts)
        now.update((item.name, item.reason) for item in invalid)
        for name, reason in now.items():
            if self._left_out.get(name) != reason:
                log.warning("MigLayout left out", layout=name, reason=reason)
        self._left_out = now

    async def round(self, *, resync: bool = False) -> None:
        """One round: NodeConfigs, releases, and a plan when the batch is due."""
        arrivals = self._arrivals
        if resync:
            await self.refresh_config()
        state = await self.read()
        self._log_left_out(state, self.metrics.update_layouts(state.layouts.values()))
        self.metrics.update_allocated(allocated_rows(state))
        self.metrics.set_pending(len(state.waiting))
        self.metrics.update_health(state, self._wall())
        await self._report_without_node(state)
        await self._stranded(state)
        wrote = await self._nodeconfigs(state)
        wrote = await self._releases(state) or wrote
        # A resync plans whenever pods wait: starving pods' holds, and reservations that
        # stopped serving their pod (a person edited the layout) are looked at again.
        due = self.window.due(self._mono()) or resync
        if due and state.waiting:
            if wrote:
                state = await self.read()
            outcome = await self._plan(state)
            if outcome.again:
                self.window = self.window.arrive(self._mono() - self.options.batch_idle)
                self._wake.set()
            else:
                self.window = self._closed_window(arrivals)
        elif due:
            self.window = self._closed_window(arrivals)
            self._unplaced = False
        self.rounds += 1
        self.ready.set()

    async def _report_without_node(self, state: ClusterState) -> None:
        """MigLayouts whose Node is gone: a Warning Event and a log line once per layout,
        and the gauge. The planner leaves them out; the garbage collector deletes them
        with their owner Node (the agent sets it), older ones need `kubectl delete`."""
        found = state.without_node
        self.metrics.set_without_node(len(found))
        for name, node in found.items():
            if name in self._without_node:
                continue
            message = f"Node {node} does not exist: no pod is placed on this GPU"
            log.warning("MigLayout without a Node: no pod is placed on it", layout=name, node=node)
            await self.events.record(state.layout_bodies[name], "NodeMissing", message, "Warning")
        self._without_node = set(found)

    async def _stranded(self, state: ClusterState) -> None:
        """Released pods whose Node was deleted before they were bound
        (`core.operator.vanished`): after the grace period, evict those with a controller
        (it re-creates them, the new pod is planned again); explain it on bare ones."""
        stranded = stranded_pods(state.released_bodies.values(), state.node_facts)
        now = self._mono()
        self._stranded_since = stranded_since(self._stranded_since, stranded, now)
        due, wait = due_for_action(
            stranded, self._stranded_since, now, self.options.node_vanished_grace_s
        )
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        if wait is not None:
            # A round when the next grace ends, not only at the next resync.
            self._grace_timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
        for pod in due:
            if pod.evict:
                await self._evict(pod)
            elif not already_told(pod):
                message = vanished_message(pod)
                log.warning("pod released to a Node that no longer exists", pod=pod.key)
                await self.events.record(pod.body, "NodeVanished", message, "Warning")
                await self._condition(pod.body, vanished_condition(pod))

    async def _evict(self, pod: Stranded) -> None:
        """Evict the pod (never a plain delete: a PodDisruptionBudget is respected). A
        refusal (429 while a budget forbids it, 403, ...) is logged and tried again in a
        later round; a server failing as a whole fails the round."""
        meta = metadata_of(pod.body)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            await self.pods.evict(namespace, name, str(meta.get("uid") or ""))
        except (NotFound, Conflict):
            return  # gone, or re-created under its name: nothing left to evict
        except ApiError as exc:
            if not _refused(exc):
                raise
            log.warning("could not evict the pod", pod=pod.key, error=str(exc))
            return
        self._stranded_since.pop(pod.key, None)
        log.warning("evicted a pod released to a Node that no longer exists", pod=pod.key)
        await self.events.record(pod.body, "NodeVanished", vanished_message(pod), "Warning")

    def _closed_window(self, arrivals: int) -> BatchWindow:
        """The window after a round that planned (or found nobody waiting), given the
        arrivals counted before its read. A pod that arrived while the round was under way
        is not in what it read: its arrival opens the next window instead of being lost
        until the next resync."""
        last = self.window.last
        if self._arrivals == arrivals or last is None:
            return self.window.close()
        return self.window.close().arrive(last)

    # ------------------------------------------------------------------ config

    async def refresh_config(self) -> str:
        """Read (list) the geometry ConfigMap and take it into account; the list's
        resourceVersion, to watch the ConfigMap from, is returned.

        The read happens under the same lock as `reload_config`: a version the watch
        delivers while this read is on its way is taken after it, never overwritten by it.
        """
        async with self._config_lock:
            listing = await self.configmaps.list_named(CONFIGMAP_NAME)
            configmap = listing.items[0] if listing.items else None
            self.config, outcome = reload(self.config, configmap)
        await self._report_reload(configmap, outcome)
        return listing.resource_version

    async def reload_config(self, configmap: Mapping[str, Any] | None) -> None:
        """Take a new version of the geometry ConfigMap (or its absence) into account."""
        async with self._config_lock:
            self.config, outcome = reload(self.config, configmap)
        await self._report_reload(configmap, outcome)

    async def _report_reload(
        self, configmap: Mapping[str, Any] | None, outcome: ReloadOutcome
    ) -> None:
        if outcome.outcome == "unchanged":
            return
        if outcome.warnings:
            # Unknown keys (typos), HAMi settings migweaver does not use, ...: never
            # ignored silently, whether or not the version is taken.
            for warning in outcome.warnings:
                log.warning("geometry configuration: %s", warning)
            if configmap is not None:
                await self.events.record(
                    configmap, "ConfigWarning", "; ".join(outcome.warnings), "Warning"
                )
        if outcome.outcome == "invalid" and configmap is not None:
            self.metrics.config_reload_failed()
            message = "kept the last valid configuration: " + "; ".join(outcome.errors)
            log.warning("invalid geometry configuration", detail=message)
            await self.events.record(configmap, "ConfigInvalid", message, "Warning")
            return
        if configmap is not None:
            warnings = f" ({len(outcome.warnings)} warning(s))" if outcome.warnings else ""
            await self.events.record(configmap, "ConfigLoaded", f"configuration in force{warnings}")
        log.info("geometry configuration reloaded", outcome=outcome.outcome)
        self.capacity_changed()

    # ------------------------------------------------------------------ NodeConfigs

    async def _nodeconfigs(self, state: ClusterState) -> bool:
        changes, waiting = mode_changes(state)
        wrote = False
        for change in changes:
            try:
                body = await self.layouts.patch(change.name, change.patch)
            except (Conflict, NotFound):
                self._wake.set()  # re-read and decide again
                continue
            except ApiError as exc:
                if not _refused(exc):
                    raise
                log.warning(
                    "the API server refused the MIG mode", layout=change.name, error=str(exc)
                )
                continue
            wrote = True
            mode = "on" if change.mig_enabled else "off (hami-core)"
            await self.events.record(
                body, "LayoutChanged", f"MIG mode {mode}, as the node's NodeConfig says"
            )
        for report in nodeconfig_reports(state, waiting):
            config = state.config_bodies[report.name]
            patch = status_patch(config, report, format_timestamp(self._wall()))
            if patch is None:
                continue
            try:
                await self.nodeconfigs.patch_status(report.name, patch)
            except NotFound:
                continue
            except ApiError as exc:
                if not _refused(exc):
                    raise
                log.warning(
                    "the API server refused the status", nodeconfig=report.name, error=str(exc)
                )
                continue
            kind: EventType = (
                "Normal" if report.ready or report.reason == "Switching" else "Warning"
            )
            await self.events.record(config, report.reason, report.message, kind)
        return wrote

    # ------------------------------------------------------------------ releases

    async def _releases(self, state: ClusterState) -> bool:
        wrote = False
        self._report_ignored(state)
        owners = instance_owners(state)
        for waiting in state.waiting:
            if waiting.reservation is None:
                continue
            uid = str(metadata_of(waiting.body).get("uid") or "")
            allocation = ready_allocation(waiting.key, waiting.reservation, state, owners, uid=uid)
            if isinstance(allocation, NotReady):
                log.debug("pod waits for its instances", pod=waiting.key, reason=allocation.reason)
                continue
            wrote = await self._release(waiting, allocation, state) or wrote
        return wrote

    def _report_ignored(self, state: ClusterState) -> None:
        """Log each dropped reservation once per reason (docs/security.md)."""
        for key, why in state.ignored_reservations.items():
            if self._ignored.get(key) != why:
                log.warning(
                    "pod %s: reservation annotation ignored, the pod is planned afresh: %s",
                    key,
                    why,
                )
        self._ignored = dict(state.ignored_reservations)

    async def _release(
        self, waiting: WaitingPod, allocation: Allocation, state: ClusterState
    ) -> bool:
        now = self._wall()
        patch = release_patch(waiting.body, allocation, state.hostname(allocation.node), int(now))
        meta = metadata_of(waiting.body)
        written = await self._patch_pod(waiting.key, patch)
        if written != "written":
            if written == "stale":
                self._wake.set()
            return False
        self.metrics.pods_placed()
        created = parse_timestamp(meta.get("creationTimestamp"))
        if math.isfinite(created):
            self.metrics.observe_pod_wait(max(0.0, now - created))
        shown = "; ".join(
            f"{c.name}: {', '.join(d.describe() for d in c.devices)}" for c in allocation.containers
        )
        await self.events.record(
            waiting.body, "MigReady", f"released to {allocation.node}: {shown}"
        )
        await self._condition(waiting.body, ready_condition(allocation), only_if_present=True)
        log.info("released pod", pod=waiting.key, node=allocation.node)
        return True

    async def _patch_pod(self, key: str, patch: Mapping[str, Any]) -> _PodWritten:
        """Merge-patch the pod `key` (`namespace/name`).

        `written`; `stale` when it changed or went meanwhile (409, 404: the caller re-reads);
        `refused` (logged) when the API server refuses this pod's write (403, 422, an
        admission webhook's denial), so one pod never stops every round for all the others.
        An API server not reached or failing (0, 5xx) raises: the whole round is retried.
        """
        namespace, _, name = key.partition("/")
        try:
            await self.pods.patch(namespace, name, patch)
        except (Conflict, NotFound):
            return "stale"
        except ApiError as exc:
            if not _refused(exc):
                raise
            log.warning("the API server refused the write of a pod", pod=key, error=str(exc))
            return "refused"
        return "written"

    async def _condition(
        self,
        pod: PodBody,
        wanted: PlacementCondition,
        *,
        only_if_present: bool = False,
    ) -> None:
        """Make the pod's `migweaver.io/Placement` condition say `wanted` (nothing when it
        already does). Best effort, like an Event: a failure is logged, the round goes on."""
        patch = condition_patch(
            pod, wanted, format_timestamp(self._wall()), only_if_present=only_if_present
        )
        if patch is None:
            return
        meta = metadata_of(pod)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            await self.pods.patch_status(namespace, name, patch)
        except NotFound:
            log.debug("pod is gone: no condition", pod=f"{namespace}/{name}")
        except ApiError as exc:
            log.warning(
                "could not set the pod's condition",
                pod=f"{namespace}/{name}",
                reason=wanted.reason,
                error=str(exc),
            )

    # ------------------------------------------------------------------ planning

    async def _plan(self, state: ClusterState) -> _Outcome:
        snapshot = build_snapshot(state, self._wall())
        started = self._mono()
        result = plan(snapshot, state.demands, self.config.config, self.planner_options)
        self.metrics.observe_plan(self._mono() - started)
        writes = plan_writes(result, state, snapshot)
        for name in writes.skipped:
            log.error("withheld a MigLayout patch that would drop a busy instance", layout=name)
        outcome = _Outcome()
        for write in writes.layouts:
            if not await self._write_layout(write):
                outcome.again = True
                return outcome  # re-read and re-plan: never write pods against a stale layout
            outcome.wrote = True
        by_key = {w.key: w for w in state.waiting}
        for pod_write in writes.pods:
            written = await self._patch_pod(pod_write.key, pod_write.patch)
            if written != "written":
                outcome.again = outcome.again or written == "stale"
                continue
            outcome.wrote = True
            if pod_write.reservation is not None:
                body = by_key[pod_write.key].body
                message = planned_message(pod_write.reservation)
                await self.events.record(body, "MigPlanned", message)
                await self._condition(body, planned_condition(message), only_if_present=True)
        for key in writes.ungate:
            if await self._patch_pod(key, ungate_patch(by_key[key].body)) == "stale":
                outcome.again = True
        told = reasons_already_told({w.key: w.body for w in state.waiting})
        events, self._said = unschedulable_events({**told, **self._said}, writes.unplaceable)
        for key, reason in events.items():
            await self.events.record(by_key[key].body, "MigUnschedulable", reason, "Warning")
        for key, reason in writes.unplaceable.items():
            waiting = by_key[key]
            await self._condition(waiting.body, unplaceable_condition(waiting.demand, reason))
        self._unplaced = bool(writes.unplaceable)
        return outcome

    async def _write_layout(self, write: LayoutWrite) -> bool:
        try:
            body = await self.layouts.patch(write.name, write.patch)
        except Conflict:
            self.metrics.reconfiguration("conflict")
            log.info("MigLayout changed meanwhile: re-planning", layout=write.name)
            return False
        except ApiError as exc:
            self.metrics.reconfiguration("failed")
            log.warning("could not write the MigLayout", layout=write.name, error=str(exc))
            return False
        self.metrics.reconfiguration("applied")
        await self.events.record(body, "LayoutChanged", layout_change_message(write))
        return True


def _refused(exc: ApiError) -> bool:
    """Whether the API server refused this one write (403, 422, an admission webhook's
    denial: a 4xx), rather than failing as a whole (0: not reached, 5xx). A refused write is
    logged and the round goes on with the other objects; a failing server fails the round,
    which is retried. Conflict (409) and NotFound (404) are each caller's own business."""
    return 400 <= exc.status < 500


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Until any of the events is set or `seconds` passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
