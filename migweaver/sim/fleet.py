"""The simulated fleet: fake GPUs, one agent reconciler per node, one MigLayout per GPU.

Each node gets a `FakeBackend` (NVML's rules, enforced) and a `Reconciler` driven by the
simulator's virtual clock. The MigLayouts are what the operator would read: the spec the
policy wrote, and the status the agent reported after its last look at the GPU. The
snapshot the policies plan from is built from them by `snapshot_from_layouts`, exactly as
the operator builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.reconciler import Reconciler, ReconcileResult
from migweaver.agent.status import observed_status
from migweaver.core.agent.diff import CreateGpuInstance, DestroyGpuInstance, SetMigMode
from migweaver.core.mig.catalog import GpuModel, get_model
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.snapshot import (
    GpuKey,
    GpuState,
    NodeState,
    Share,
    Snapshot,
    snapshot_from_layouts,
)
from migweaver.core.resources.models import (
    LayoutInstance,
    MigLayout,
    MigLayoutSpec,
    OperatingMode,
    PlacementModel,
)
from migweaver.sim.scenario import Scenario

__all__ = ["Fleet", "SimGpu", "StepCounts"]


@dataclass(slots=True)
class SimGpu:
    """One simulated GPU: where it is, its model, its MigLayout and who holds what."""

    node: str
    index: int
    mode: OperatingMode
    model: GpuModel
    backend: FakeBackend
    layout: MigLayout
    held: dict[str, str] = field(default_factory=dict)
    """What pods hold, as the agent's pod watch tells the reconciler: MIG UUIDs of running
    pods and `start:size` placements reserved for pods about to start."""
    dirty: bool = True

    @property
    def key(self) -> GpuKey:
        return (self.node, self.index)

    @property
    def label(self) -> str:
        return f"{self.node}/gpu{self.index}"


@dataclass(slots=True)
class StepCounts:
    """NVML work done by the reconcilers over a run."""

    passes: int = 0
    """Reconciles that changed something (a reconfiguration of one GPU)."""
    created: int = 0
    destroyed: int = 0
    mode_switches: int = 0
    failures: list[str] = field(default_factory=list)


class Fleet:
    """Every node and GPU of a scenario, on fake backends."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.gpus: dict[GpuKey, SimGpu] = {}
        self.backends: dict[str, FakeBackend] = {}
        self.reconcilers: dict[str, Reconciler] = {}
        self.modes: dict[str, OperatingMode] = {}
        self.steps = StepCounts()
        self._states: dict[
            GpuKey, tuple[MigLayout, dict[PlacedInstance, str], tuple[Share, ...], GpuState]
        ] = {}
        for group in scenario.nodes:
            for node in group.node_names():
                models: list[GpuModel] = []
                enabled: list[bool] = []
                for gpus in group.gpus:
                    model = get_model(gpus.model)
                    assert model is not None  # checked by the scenario model
                    on = gpus.mig_enabled if gpus.mig_enabled is not None else group.mode == "mig"
                    models.extend([model] * gpus.count)
                    enabled.extend([on] * gpus.count)
                backend = FakeBackend(models, seed=node)
                for index, on in enumerate(enabled):
                    if on:
                        backend.set_mig_mode(index, True)
                backend.calls.clear()
                self.backends[node] = backend
                self.reconcilers[node] = Reconciler(backend, clock=clock)
                self.modes[node] = group.mode
                for index, model in enumerate(models):
                    spec = MigLayoutSpec(
                        node_name=node,
                        gpu_index=index,
                        gpu_uuid=backend.uuid(index),
                        mig_enabled=enabled[index],
                    )
                    layout = MigLayout(metadata={"name": f"{node}-gpu{index}"}, spec=spec)
                    self.gpus[(node, index)] = SimGpu(
                        node, index, group.mode, model, backend, layout
                    )

    def __iter__(self) -> Iterator[SimGpu]:
        return iter(self.gpus.values())

    # ---------------------------------------------------------------- what the operator reads

    def refresh(self) -> None:
        """Let each agent report the GPUs that changed since their last status."""
        for gpu in self.gpus.values():
            if gpu.dirty:
                observation = self.reconcilers[gpu.node].observe(gpu.index, gpu.held)
                gpu.layout = gpu.layout.model_copy(update={"status": observed_status(observation)})
                gpu.dirty = False

    def snapshot(
        self,
        now: float,
        reservations: Mapping[GpuKey, Mapping[PlacedInstance, str]],
        shares: Mapping[GpuKey, list[Share]],
    ) -> Snapshot:
        """The operator's snapshot: MigLayouts (spec + status) and its own records.

        Each GPU goes through `snapshot_from_layouts` as the operator's does; a GPU whose
        layout and records did not change since the last snapshot keeps its `GpuState`.
        """
        self.refresh()
        by_node: dict[str, list[GpuState]] = {}
        for key, gpu in self.gpus.items():
            held = dict(reservations.get(key, {}))
            own = tuple(shares.get(key, ()))
            cached = self._states.get(key)
            if cached is not None and cached[0] is gpu.layout and cached[1:3] == (held, own):
                state = cached[3]
            else:
                (state,) = snapshot_from_layouts(
                    [gpu.layout], self.modes, reservations={key: held}, shares={key: own}
                ).gpus()
                self._states[key] = (gpu.layout, held, own, state)
            by_node.setdefault(gpu.node, []).append(state)
        nodes = tuple(
            NodeState(name, self.modes[name], tuple(sorted(gpus, key=lambda g: g.index)))
            for name, gpus in sorted(by_node.items())
        )
        return Snapshot(nodes=nodes, now=now)

    # ---------------------------------------------------------------------- what the agent does

    def apply(
        self, key: GpuKey, instances: tuple[PlacedInstance, ...] | None, mig_enabled: bool | None
    ) -> ReconcileResult:
        """Write a new spec for one GPU and let its agent converge it."""
        gpu = self.gpus[key]
        spec = gpu.layout.spec
        update: dict[str, object] = {}
        if instances is not None:
            update["instances"] = [
                LayoutInstance(
                    profile=i.profile, placement=PlacementModel.from_placement(i.placement)
                )
                for i in instances
            ]
        if mig_enabled is not None:
            update["mig_enabled"] = mig_enabled
        spec = spec.model_copy(update=update)
        result = self.reconcilers[gpu.node].reconcile(gpu.index, spec, gpu.held)
        status = observed_status(result.observation) if result.observation else None
        gpu.layout = gpu.layout.model_copy(update={"spec": spec, "status": status})
        gpu.dirty = status is None
        if result.steps:
            self.steps.passes += 1
        for step in result.steps:
            if isinstance(step, CreateGpuInstance):
                self.steps.created += 1
            elif isinstance(step, DestroyGpuInstance):
                self.steps.destroyed += 1
            elif isinstance(step, SetMigMode):
                self.steps.mode_switches += 1
        if result.phase in ("Failed", "Degraded"):
            message = result.condition("Ready").message
            self.steps.failures.append(f"{gpu.label}: {result.phase}: {message}")
        return result

    def spec_profile(self, key: GpuKey, placement: Placement) -> str | None:
        """The profile name the spec uses for the instance at `placement`, if any."""
        for inst in self.gpus[key].layout.spec.instances:
            if inst.placement.to_placement() == placement:
                return inst.profile
        return None

    def mig_uuid(self, key: GpuKey, placement: Placement) -> str | None:
        """The MIG UUID of the instance at `placement`, when it exists with its CI."""
        gpu = self.gpus[key]
        return gpu.backend.mig_uuids(gpu.index).get(placement)
