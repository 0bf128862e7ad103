"""The operator's work: rounds of read, decide (core), write, explain.

The watches (`operator/pods.py`, `operator/miglayouts.py`, kopf's handlers for NodeConfigs
and Nodes) only feed this object's stores (`observed`) and *notify* it (`pod_arrived`,
`capacity_changed`); one task (`run`) does the work in rounds, one at a time:

1. read: the stores (`core.operator.object_store`), or pods, MigLayouts, NodeConfigs and
   Nodes listed afresh when the round resyncs, is the first, or follows a write refused
   as stale; then `core.operator.state.cluster_state`;
2. NodeConfigs: `spec.migEnabled` of their GPUs, their status and Events;
3. releases: every reserved pod whose devices are Ready gets its one patch; a released
   pod whose Node was deleted before binding is evicted or explained
   (`core.operator.vanished`);
4. when the batching window is due: plan, write the changed MigLayout specs (409 re-reads
   and re-plans, never overwrites), then the pods' reservation annotations, then Events
   and the pods' `migweaver.io/Placement` condition (`core.operator.pod_condition`).

The writes of a step go out together (bounded), each conditional on the resourceVersion
it was decided from, and their answers go to the stores. Events are queued and posted
between rounds (`k8s.events.EventQueue`). Everything the operator decides from comes from
the API, so a restarted operator continues where the last one stopped (docs/design.md,
"Safety rules"). The only memory kept between rounds besides the stores is what avoids
repeating itself: the batching window, whether pods wait for room, the last
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
from typing import Any, Literal, TypeVar, cast

from migweaver.core.config import CONFIGMAP_NAME
from migweaver.core.config.reload import ConfigInForce, ReloadOutcome, reload
from migweaver.core.operator.batching import BatchWindow
from migweaver.core.operator.metric_rows import InvalidLayout
from migweaver.core.operator.nodeconfig_actions import (
    mode_changes,
    nodeconfig_reports,
    status_patch,
)
from migweaver.core.operator.object_store import ObjectStore, object_key
from migweaver.core.operator.plan_writes import (
    LayoutWrite,
    PodWrite,
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
    ParseMemo,
    WaitingPod,
    allocated_rows,
    build_snapshot,
    cluster_state,
    concerns_operator,
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
from migweaver.core.resources.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL
from migweaver.core.resources.requests import RequestDefaults
from migweaver.k8s.client import ApiError, Conflict, NotFound
from migweaver.k8s.events import EventQueue, EventType
from migweaver.logs import get_logger
from migweaver.operator.access import OperatorApi
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.settings import OperatorOptions

log = get_logger("migweaver.operator")


_PodWritten = Literal["written", "stale", "refused"]
_T = TypeVar("_T")
_R = TypeVar("_R")


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
        self.events = EventQueue(api.events)
        self._writes = asyncio.Semaphore(options.write_concurrency)
        """Bounds the API writes a round has in flight at once."""
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
        self._parsed = ParseMemo()
        self.seen: dict[str, ObjectStore] = {
            kind: ObjectStore() for kind in ("pods", MIGLAYOUT_PLURAL, NODECONFIG_PLURAL, "nodes")
        }
        """What the watches delivered and the writes answered, per kind (see `read`)."""
        self._stale = False
        """A write was refused as stale (409, 404): the next read lists everything."""

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
        posting = asyncio.create_task(self._post_events(), name="migweaver-events")
        try:
            await self._rounds(stop)
        finally:
            posting.cancel()
            await asyncio.gather(posting, return_exceptions=True)

    async def _post_events(self) -> None:
        run = getattr(self.events, "run", None)  # tests may put a plain recorder there
        if run is not None:
            await run()

    async def _rounds(self, stop: asyncio.Event) -> None:
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
                self.events.open.clear()  # the round's writes first (k8s.events.EventQueue)
                await self.round(resync=resync)
            except ApiError as exc:
                log.warning("round failed, retrying", error=str(exc))
                await _wait_any(1.0, stop)
            except Exception:
                # A bug must not stop the operator for good: say so loudly, try again.
                log.exception("round failed unexpectedly, retrying")
                await _wait_any(5.0, stop)
            finally:
                self.events.open.set()

    def observed(self, kind: str, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event of `kind` (`pods`, `miglayouts`, `nodeconfigs`, `nodes`)."""
        store = self.seen[kind]
        if kind == "pods" and event_type != "DELETED" and not concerns_operator(cast(PodBody, obj)):
            if store.get(object_key(obj)) is not None:
                store.forget(obj)  # it no longer concerns the operator
            return
        store.observe(event_type, obj)

    def listed(self, kind: str, objects: Sequence[Mapping[str, Any]], version: str) -> None:
        """A full list of `kind`, answered at resourceVersion `version`."""
        if kind == "pods":
            objects = [o for o in objects if concerns_operator(cast(PodBody, o))]
        self.seen[kind].replace(objects, version)

    async def read(self, *, full: bool = False) -> ClusterState:
        """The cluster as the watches and this operator's own writes left it; everything
        listed afresh when `full` (a resync), before the first full list, and after a
        write was refused as stale (the watch may be behind: never loop on its lag)."""
        if full or self._stale or not all(store.synced for store in self.seen.values()):
            self._stale = False
            pods, layouts, configs, nodes = await asyncio.gather(
                self.pods.list(), self.layouts.list(), self.nodeconfigs.list(), self.nodes.list()
            )
            self.listed("pods", pods.items, pods.resource_version)
            self.listed(MIGLAYOUT_PLURAL, layouts.items, layouts.resource_version)
            self.listed(NODECONFIG_PLURAL, configs.items, configs.resource_version)
            self.listed("nodes", nodes.items, nodes.resource_version)
        # The API's answers, declared as the shapes core reads (core checks every value).
        state = cluster_state(
            pods=cast("list[PodBody]", self.seen["pods"].items()),
            layouts=cast("list[MigLayoutBody]", self.seen[MIGLAYOUT_PLURAL].items()),
            nodeconfigs=cast("list[NodeConfigBody]", self.seen[NODECONFIG_PLURAL].items()),
            nodes=cast("list[NodeBody]", self.seen["nodes"].items()),
            defaults=self.request_defaults(),
            memo=self._parsed,
        )
        self._parsed.sweep()
        return state

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
        # The store, which holds every pod whose arrival opened or extended the batch (the
        # pod watch stores a pod before it notifies); a resync lists everything afresh.
        due = self.window.due(self._mono()) or resync
        state = await self.read(full=resync)
        log.debug(
            "round",
            round=self.rounds,
            waiting=len(state.waiting),
            layouts=len(state.layouts),
            plan_due=due,
        )
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
                log.warning("geometry configuration warning", detail=warning)
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
                self._stale = True
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
            self.seen[MIGLAYOUT_PLURAL].store(body)
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
                self.seen[NODECONFIG_PLURAL].store(
                    await self.nodeconfigs.patch_status(report.name, patch)
                )
            except NotFound:
                self._stale = True
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
        self._report_ignored(state)
        owners = instance_owners(state)
        ready: list[tuple[WaitingPod, Allocation]] = []
        for waiting in state.waiting:
            if waiting.reservation is None:
                continue
            uid = str(metadata_of(waiting.body).get("uid") or "")
            allocation = ready_allocation(waiting.key, waiting.reservation, state, owners, uid=uid)
            if isinstance(allocation, NotReady):
                log.debug("pod waits for its instances", pod=waiting.key, reason=allocation.reason)
                continue
            ready.append((waiting, allocation))
        # Each pod's release is one conditional patch of that pod alone: they are
        # independent, so they go out together (bounded), not one round trip after another.
        done = await self._each(ready, lambda item: self._release(*item, state))
        return any(done)

    async def _each(self, items: Sequence[_T], write: Callable[[_T], Awaitable[_R]]) -> list[_R]:
        """`write(item)` for every item, at most `options.write_concurrency` at once; the
        results in order. The first exception (an API server failing) is raised once every
        write has ended."""

        async def bounded(item: _T) -> _R:
            async with self._writes:
                return await write(item)

        results = await asyncio.gather(*(bounded(i) for i in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return cast(list[_R], results)

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
            self.seen["pods"].store(await self.pods.patch(namespace, name, patch))
        except (Conflict, NotFound):
            self._stale = True
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
            self.seen["pods"].store(await self.pods.patch_status(namespace, name, patch))
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
        # Each layout patch is conditional on the version planned from; they go out
        # together. A layout written while another is refused is harmless: no pod is
        # reserved on it before the re-plan, which sees it as it now is.
        layouts_written = await self._each(writes.layouts, self._write_layout)
        outcome.wrote = any(layouts_written)
        if not all(layouts_written):
            outcome.again = True
            return outcome  # re-read and re-plan: never write pods against a stale layout
        by_key = {w.key: w for w in state.waiting}

        async def reserve(pod_write: PodWrite) -> _PodWritten:
            written = await self._patch_pod(pod_write.key, pod_write.patch)
            if written == "written" and pod_write.reservation is not None:
                body = by_key[pod_write.key].body
                message = planned_message(pod_write.reservation)
                await self.events.record(body, "MigPlanned", message)
                await self._condition(body, planned_condition(message), only_if_present=True)
            return written

        async def ungate(key: str) -> _PodWritten:
            return await self._patch_pod(key, ungate_patch(by_key[key].body))

        pods_written = await self._each(writes.pods, reserve)
        pods_written += await self._each(writes.ungate, ungate)
        outcome.wrote = outcome.wrote or "written" in pods_written[: len(writes.pods)]
        outcome.again = "stale" in pods_written
        told = reasons_already_told({w.key: w.body for w in state.waiting})
        events, self._said = unschedulable_events({**told, **self._said}, writes.unplaceable)
        for key, reason in events.items():
            await self.events.record(by_key[key].body, "MigUnschedulable", reason, "Warning")

        async def unplaceable(item: tuple[str, str]) -> None:
            waiting = by_key[item[0]]
            await self._condition(waiting.body, unplaceable_condition(waiting.demand, item[1]))

        await self._each(list(writes.unplaceable.items()), unplaceable)
        self._unplaced = bool(writes.unplaceable)
        return outcome

    async def _write_layout(self, write: LayoutWrite) -> bool:
        try:
            body = await self.layouts.patch(write.name, write.patch)
        except Conflict:
            self._stale = True
            self.metrics.reconfiguration("conflict")
            log.info("MigLayout changed meanwhile: re-planning", layout=write.name)
            return False
        except ApiError as exc:
            self.metrics.reconfiguration("failed")
            log.warning("could not write the MigLayout", layout=write.name, error=str(exc))
            return False
        self.metrics.reconfiguration("applied")
        self.seen[MIGLAYOUT_PLURAL].store(body)
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
