"""The agent's Kubernetes shell: one `MigLayout` per managed GPU, kept true both ways.

On start the agent reads its GPUs, the NodeConfig in force and the MigLayouts labelled
with its node. A GPU without a MigLayout gets one whose spec is what exists now
(adoption: nothing is destroyed at start-up). Then it reconciles every layout and
watches its node's MigLayouts, reconciling on each spec change; every `resync_s` it lists
again, so processes that start or stop and retries after a backoff are reported too.
`refresh` re-reconciles chosen GPUs at once (the pod watch calls it when a pod gets or
releases an instance), and `listeners` hear of every pass (the device plugin's health).

Safety: it acts only on layouts it has just read from a successful list or watch; when
the API cannot be read it does nothing to the GPUs (fail closed). NVML calls run in one
worker thread, one GPU at a time, through the `Reconciler`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from migweaver.agent.backends.protocol import BackendError, GpuBackend, GpuDevice
from migweaver.agent.reconciler import GpuObservation, Reconciler, ReconcileResult
from migweaver.agent.status import catalog_condition, layout_status, observed_status
from migweaver.agent.waiting import pause, until_stopped
from migweaver.core.resources.allocation import field_path
from migweaver.core.resources.api import API_VERSION, LABEL_NODE
from migweaver.core.resources.models import (
    MIGLAYOUT_KIND,
    LayoutInstance,
    MigLayout,
    MigLayoutSpec,
    NodeConfig,
    PlacementModel,
    layout_name,
    node_label_value,
)
from migweaver.core.resources.nodeconfig import NodeSettings, settings_for
from migweaver.k8s.client import ApiError, Conflict, JsonDict, Listing, NotFound, now_rfc3339
from migweaver.k8s.events import Recorder
from migweaver.logs import Repeated, get_logger

log = get_logger("migweaver.agent")

T = TypeVar("T")


class LayoutStore(Protocol):
    """What the agent needs of the MigLayout API (`k8s.client.ClusterObjects` fits)."""

    async def list(self, label_selector: str | None = None) -> Listing: ...
    async def get(self, name: str) -> JsonDict: ...
    async def create(self, body: Mapping[str, Any]) -> JsonDict: ...
    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> JsonDict: ...
    def watch(
        self, resource_version: str, label_selector: str | None = None, timeout_s: int = 300
    ) -> AsyncIterator[tuple[str, JsonDict]]: ...


class ConfigStore(Protocol):
    async def list(self, label_selector: str | None = None) -> Listing: ...


class NodeReader(Protocol):
    async def read_node(self, name: str) -> JsonDict: ...


def adopted_spec(node: str, observation: GpuObservation) -> MigLayoutSpec:
    """A spec equal to what exists on the GPU, so applying it changes nothing."""
    return MigLayoutSpec(
        node_name=node,
        gpu_index=observation.device.index,
        gpu_uuid=observation.device.uuid,
        policy="dynamic",
        mig_enabled=observation.mig_mode.current,
        instances=[
            LayoutInstance(profile=i.profile, placement=PlacementModel.from_placement(i.placement))
            for i in sorted(observation.instances, key=lambda i: i.placement)
        ],
    )


def new_layout_body(node: str, observation: GpuObservation) -> JsonDict:
    """The MigLayout the agent creates for a GPU it finds without one."""
    layout = MigLayout(
        api_version=API_VERSION,
        kind=MIGLAYOUT_KIND,
        metadata={
            "name": layout_name(node, observation.device.index),
            "labels": {LABEL_NODE: node_label_value(node)},
        },
        spec=adopted_spec(node, observation),
    )
    return layout.to_api()


@dataclass
class AgentState:
    """What the agent knows between passes (rebuilt from the API and NVML on restart)."""

    devices: dict[int, GpuDevice] = field(default_factory=dict)
    settings: NodeSettings | None = None
    phases: dict[str, str] = field(default_factory=dict)
    """Per layout name: the phase of its last pass, or `Invalid` (the spec does not parse),
    `GpuNotFound` / `GpuFiltered` (not applied). A turn is announced with an Event."""
    observations: dict[int, GpuObservation] = field(default_factory=dict)
    """The latest observation of each GPU (by index) that a reconcile could read."""
    catalog_mismatches: dict[str, str] = field(default_factory=dict)
    """Per GPU UUID: the catalog mismatch last announced by an Event (said once)."""
    synced: bool = False


class NodeAgent:
    """Keeps the MigLayouts of one node and its GPUs in agreement."""

    def __init__(
        self,
        node: str,
        backend: GpuBackend,
        layouts: LayoutStore,
        configs: ConfigStore,
        nodes: NodeReader,
        events: Recorder,
        *,
        reconciler: Reconciler | None = None,
        held_by_pods: Callable[[], Mapping[str, str]] | None = None,
        resync_s: int = 30,
    ) -> None:
        self.node = node
        self._backend = backend
        self._layouts = layouts
        self._configs = configs
        self._nodes = nodes
        self._events = events
        self._reconciler = reconciler or Reconciler(backend)
        self._held = held_by_pods or dict
        self._resync_s = resync_s
        # NVML is not thread-safe in our use and the reconciler keeps per-GPU state:
        # every GPU call goes through this one thread.
        self._gpu_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml")
        self.state = AgentState()
        self.ready = asyncio.Event()
        self.selector = f"{LABEL_NODE}={node_label_value(node)}"
        self.listeners: list[Callable[[], None]] = []
        """Called (on the event loop) after every reconcile pass and status report."""
        self.pass_observers: list[Callable[[ReconcileResult, float], None]] = []
        """Called with every reconcile pass's result and how long it took (seconds)."""
        self._repeats = Repeated(log)
        # One pass at a time: the watch, the resync and `refresh` may all want a layout,
        # and a status computed from an older read must not overwrite a newer one.
        self._pass = asyncio.Lock()
        self._own_writes: dict[str, str] = {}
        """The resourceVersion our latest status patch of each layout produced."""
        self._stopped = False
        """Set when `run` ends: no pass starts after it (the GPU thread is shut down)."""
        self._node_uid: str | None = None
        """The Node object's uid (the owner of the layouts this agent creates), once read."""

    async def _on_gpu_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._gpu_thread, fn, *args)

    # ------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        """Sync, then watch and resync until `stop` is set; API and NVML errors are retried."""
        try:
            while not stop.is_set():
                try:
                    listing = await self.sync()
                    self._repeats.clear()
                    await self._watch(listing.resource_version, stop)
                except ApiError as exc:
                    self._repeats.warning(
                        "api",
                        "API unavailable, acting on nothing until it is back",
                        node=self.node,
                        error=str(exc),
                    )
                    await pause(stop, min(self._resync_s, 5))
                except BackendError as exc:  # the GPUs could not be listed
                    self._repeats.warning(
                        "gpus", "cannot list the GPUs, retrying", node=self.node, error=str(exc)
                    )
                    await pause(stop, min(self._resync_s, 5))
        finally:
            # Let a pass in flight (a pod change's `refresh`) finish; none starts after.
            async with self._pass:
                self._stopped = True
            self._gpu_thread.shutdown(wait=True)

    async def _watch(self, resource_version: str, stop: asyncio.Event) -> None:
        """Follow the node's MigLayouts for one resync period (then the caller re-lists).

        The server ends the watch after `resync_s`; `stop` ends it at once. An API error
        of the watch propagates, so `run` falls back to listing.
        """

        async def consume() -> None:
            async for kind, obj in self._layouts.watch(
                resource_version, self.selector, timeout_s=self._resync_s
            ):
                if kind == "MODIFIED" and self._is_own_status_write(obj):
                    continue
                if kind in {"ADDED", "MODIFIED"}:
                    await self.handle(obj)

        await until_stopped(consume(), stop, self._resync_s + 5)

    # ------------------------------------------------------------------ passes

    async def sync(self) -> Listing:
        """Read everything, adopt GPUs without a layout, reconcile every layout."""
        await self._refresh_settings()
        if not self.state.devices:
            devices = await self._on_gpu_thread(self._backend.list_gpus)
            self.state.devices = {d.index: d for d in devices}
        listing = await self._layouts.list(self.selector)
        names = {_name(o) for o in listing.items}
        missing = [
            d
            for d in sorted(self.state.devices.values(), key=lambda d: d.index)
            if self._manages(d) and layout_name(self.node, d.index) not in names
        ]
        for device in missing:
            await self._adopt(device)
        if missing:
            listing = await self._layouts.list(self.selector)
        for obj in listing.items:
            await self.handle(obj)
        self.state.synced = True
        self.ready.set()
        return listing

    async def _refresh_settings(self) -> None:
        try:
            node_meta = (await self._nodes.read_node(self.node)).get("metadata", {})
            labels = node_meta.get("labels")
            self._node_uid = str(node_meta.get("uid") or "") or None
        except NotFound:
            labels = None
            self._node_uid = None
            log.warning("node not found in the API; assuming no labels", node=self.node)
        configs = []
        for item in (await self._configs.list()).items:
            try:
                configs.append(NodeConfig.from_api(item))
            except ValidationError as exc:
                log.warning(
                    "ignoring an invalid NodeConfig",
                    node=self.node,
                    nodeconfig=_name(item),
                    error=str(exc),
                )
        settings = settings_for(self.node, labels or {}, configs)
        if settings != self.state.settings:
            log.info(
                "node settings changed",
                node=self.node,
                mode=settings.mode,
                nodeconfig=settings.source or "default",
            )
        self.state.settings = settings

    def _manages(self, device: GpuDevice) -> bool:
        settings = self.state.settings
        return settings is None or settings.manages(device.index, device.uuid)

    async def _adopt(self, device: GpuDevice) -> None:
        """Create the MigLayout of a GPU from what exists on it now."""
        try:
            observation = await self._on_gpu_thread(self._reconciler.observe, device.index)
        except BackendError as exc:
            log.error(
                "cannot read the GPU to adopt it", node=self.node, gpu=device.index, error=str(exc)
            )
            return
        body = new_layout_body(self.node, observation)
        if self._node_uid:
            # Owned by its Node: the garbage collector deletes the layout with the Node (a
            # node removed, an autoscaler's scale-down), so no plan ever names a lost GPU.
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self._node_uid}
            ]
        try:
            created = await self._layouts.create(body)
        except Conflict:
            return  # created meanwhile (another agent incarnation): the list picks it up
        # The status (phase, conditions, observedGeneration) is written by the pass that
        # `sync` runs over every layout right after adopting: one complete write.
        status = observed_status(observation)
        await self._events.record(
            created,
            "Adopted",
            f"adopted GPU {device.index} ({device.name}) with "
            f"{status.instances_summary or '-'} as it is",
        )

    async def handle(self, obj: Mapping[str, Any]) -> None:
        """Reconcile one MigLayout of this node and report its status."""
        async with self._pass:
            await self._handle(obj)
        self._notify()

    async def refresh(self, gpu_uuids: Collection[str] | None = None) -> None:
        """Reconcile and report the layouts of these GPUs (all when None) now.

        Reads the layouts afresh inside the pass lock, so the status it writes starts from
        the latest one. Does nothing before the first sync (nothing is known yet) and after
        `run` has ended.
        """
        if not self.state.synced:
            return
        async with self._pass:
            if self._stopped:
                return
            listing = await self._layouts.list(self.selector)
            for obj in listing.items:
                uuid = (obj.get("spec") or {}).get("gpuUUID")
                if gpu_uuids is None or uuid in gpu_uuids:
                    await self._handle(obj)
        self._notify()

    async def observe(self, gpu_index: int) -> GpuObservation:
        """A fresh reading of one GPU (on the GPU thread); raises BackendError."""
        return await self._on_gpu_thread(self._reconciler.observe, gpu_index, self._held())

    def managed_devices(self) -> list[GpuDevice]:
        """The node's GPUs that migweaver manages (not in filterDevices), by index."""
        devices = sorted(self.state.devices.values(), key=lambda d: d.index)
        return [d for d in devices if self._manages(d)]

    def _notify(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a listener's bug must not stop reconciling
                log.exception("agent listener failed", node=self.node)

    async def _handle(self, obj: Mapping[str, Any]) -> None:
        try:
            layout = MigLayout.from_api(obj)
        except ValidationError as exc:
            await self._report_invalid(obj, exc)
            return
        if layout.spec.node_name != self.node:
            return
        own = layout_name(self.node, layout.spec.gpu_index)
        if _name(obj) != own:
            # Only the MigLayout named for a GPU is applied; another that claims the GPU
            # (created by someone else) would make the agent flip between two specs.
            message = (
                f"claims GPU {layout.spec.gpu_index} of node {self.node}, whose MigLayout is "
                f"{own}: not applied"
            )
            await self._report_failed(obj, "Conflict", "Ready", "False", "Conflict", message)
            return
        device = self.state.devices.get(layout.spec.gpu_index)
        if device is None or not self._manages(device):
            await self._report_unmanaged(obj, layout, device)
            return
        started = time.monotonic()
        result: ReconcileResult = await self._on_gpu_thread(
            self._reconciler.reconcile, device.index, layout.spec, self._held()
        )
        took = time.monotonic() - started
        for observer in list(self.pass_observers):
            try:
                observer(result, took)
            except Exception:  # a metric's bug must not stop reconciling
                log.exception("pass observer failed", node=self.node, gpu=device.index)
        if result.observation is not None:
            self.state.observations[device.index] = result.observation
        previous = layout.status.conditions if layout.status else []
        status = layout_status(
            result,
            generation=obj.get("metadata", {}).get("generation"),
            now=now_rfc3339(),
            previous_conditions=previous,
        )
        body = status.to_api()
        if body != (obj.get("status") or {}):
            await self._patch_status(obj, {"status": body})
        await self._announce(obj, result, status.instances_summary)

    async def _announce(
        self, obj: Mapping[str, Any], result: ReconcileResult, summary: str | None
    ) -> None:
        """Events: what NVML steps changed, and every turn into a phase that needs a person."""
        name = _name(obj)
        previous = self.state.phases.get(name)
        self.state.phases[name] = result.phase
        where = {"node": self.node, "gpu": result.gpu, "layout": name}
        if result.steps:
            done = "; ".join(step.describe() for step in result.steps)
            log.info("layout applied", **where, steps=done, instances=summary or "")
            await self._events.record(
                obj, "LayoutApplied", f"{done}; the GPU now holds {summary or 'nothing'}"
            )
        await self._announce_catalog(obj, result)
        if result.phase != previous and result.phase in {"Degraded", "Failed", "Pending"}:
            condition = result.condition("Ready" if result.phase == "Pending" else "Degraded")
            log.warning(
                f"layout {result.phase.lower()}",
                **where,
                phase=result.phase,
                reason=condition.reason,
                detail=condition.message,
            )
            await self._events.record(
                obj, f"Layout{result.phase}", condition.message or condition.reason, "Warning"
            )

    async def _announce_catalog(self, obj: Mapping[str, Any], result: ReconcileResult) -> None:
        """A Warning Event the first time a GPU's NVML table is seen to differ from the
        catalog (and again only if the difference changes): how a wrong entry is found."""
        if result.observation is None:
            return
        condition = catalog_condition(result.observation)
        if condition is None or condition.status != "True":
            return
        uuid = result.observation.device.uuid
        if self.state.catalog_mismatches.get(uuid) == condition.message:
            return
        self.state.catalog_mismatches[uuid] = condition.message
        log.warning(
            "catalog and NVML differ",
            gpu=result.observation.device.index,
            layout=_name(obj),
            detail=condition.message,
        )
        await self._events.record(obj, "CatalogMismatch", condition.message[:1024], "Warning")

    async def _patch_status(self, obj: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        try:
            written = await self._layouts.patch_status(_name(obj), patch)
        except NotFound:
            log.info("MigLayout deleted before its status was written", layout=_name(obj))
            return
        version = (written.get("metadata") or {}).get("resourceVersion")
        if version:
            self._own_writes[_name(obj)] = str(version)

    def _is_own_status_write(self, obj: Mapping[str, Any]) -> bool:
        """The watch echoes our own status patches; reconciling on them again would only
        re-read the GPU we just reported (the resync catches anything that changed)."""
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return version is not None and self._own_writes.get(_name(obj)) == str(version)

    async def _report_invalid(self, obj: Mapping[str, Any], exc: ValidationError) -> None:
        fields = "; ".join(f"{field_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        message = f"spec is invalid, GPU left as it is: {fields}"
        await self._report_failed(obj, "Invalid", "Degraded", "True", "InvalidSpec", message)

    async def _report_unmanaged(
        self, obj: Mapping[str, Any], layout: MigLayout, device: GpuDevice | None
    ) -> None:
        reason = "GpuNotFound" if device is None else "GpuFiltered"
        message = (
            f"no GPU with index {layout.spec.gpu_index} on node {self.node}"
            if device is None
            else f"GPU {device.index} is in filterDevices of NodeConfig "
            f"{self.state.settings.source if self.state.settings else '?'}; left alone"
        )
        await self._report_failed(obj, reason, "Ready", "False", reason, message)

    async def _report_failed(
        self,
        obj: Mapping[str, Any],
        mark: str,
        condition_type: str,
        condition_status: str,
        reason: str,
        message: str,
    ) -> None:
        """Phase `Failed` with this one condition, for a layout the agent does not apply.

        The status is written only when it does not say so already (not at every resync,
        and the condition keeps its transition time); the Warning Event is recorded when
        the layout turns to `mark` (the agent's phase mark, see `AgentState.phases`).
        """
        message = message[:1024]
        status = obj.get("status") or {}
        said = status.get("phase") == "Failed" and any(
            isinstance(c, Mapping)
            and (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
            == (condition_type, condition_status, reason, message)
            for c in status.get("conditions") or []
        )
        if not said:
            condition = {
                "type": condition_type,
                "status": condition_status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now_rfc3339(),
            }
            patch = {"status": {"phase": "Failed", "conditions": [condition]}}
            await self._patch_status(obj, patch)
        if self.state.phases.get(_name(obj)) != mark:
            self.state.phases[_name(obj)] = mark
            spec = obj.get("spec")
            spec = spec if isinstance(spec, Mapping) else {}
            log.warning(
                "layout failed",
                node=self.node,
                gpu=spec.get("gpuIndex"),
                layout=_name(obj),
                phase="Failed",
                reason=reason,
                detail=message,
            )
            await self._events.record(obj, reason, message, "Warning")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))
