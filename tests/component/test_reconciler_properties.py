"""Random histories of specs, processes, pods and faults on fake A100 and H100 GPUs.

After every reconcile: no instance that was busy (a process on it, or held by a pod) has
been destroyed or changed its GI id or MIG UUID; the GPU holds a valid layout; and when
nothing blocks the spec (it is valid and every busy instance is in it), the GPU is
exactly the spec. Crashes at random NVML calls are followed by a fresh reconciler.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from migweaver.agent.backends.fake import FakeBackend, SimulatedCrash
from migweaver.agent.backends.protocol import NvmlError
from migweaver.agent.reconciler import Reconciler
from migweaver.core.mig.geometry import PlacedInstance, layout_problems, valid_layouts
from migweaver.core.mig.profiles import Placement
from tests.component.fakegpu_helpers import FakeClock, spec_of

MODELS = ("A100-SXM4-80GB", "H100-SXM5-80GB")
TABLES = {key: FakeBackend([key]).table(0) for key in MODELS}
LAYOUTS = {
    key: valid_layouts(table, include_media_extensions=True) for key, table in TABLES.items()
}
PROFILES = {key: table.profiles for key, table in TABLES.items()}
FAULT_ERRORS = [
    NvmlError.INVALID_ARGUMENT,
    NvmlError.NOT_SUPPORTED,
    NvmlError.NO_PERMISSION,
    NvmlError.NOT_FOUND,
    NvmlError.RESET_REQUIRED,
    NvmlError.IN_USE,
    NvmlError.INSUFFICIENT_RESOURCES,
]


Fault = tuple[int, NvmlError | str, bool]
"""(k, error or "crash", after): fail the k-th mutating call of the pass."""
FAULTS = st.none() | st.tuples(
    st.integers(1, 8), st.sampled_from([*FAULT_ERRORS, "crash"]), st.booleans()
)


@st.composite
def any_layout(draw: st.DrawFn, key: str) -> tuple[PlacedInstance, ...]:
    """Mostly valid layouts; sometimes random lists that may overlap or misplace."""
    if draw(st.integers(0, 5)) > 0:
        return draw(st.sampled_from(LAYOUTS[key]))
    profile = st.sampled_from(PROFILES[key])
    items = draw(st.lists(st.tuples(profile, st.integers(0, 7)), max_size=4))
    return tuple(PlacedInstance(p.name, Placement(start, p.memory_slices)) for p, start in items)


class ReconcilerHistory(RuleBasedStateMachine):
    """One fake GPU, one agent; the test plays the operator, the workloads and fate."""

    def __init__(self) -> None:
        super().__init__()
        self.key = MODELS[0]
        self.backend = FakeBackend([self.key])
        self.clock = FakeClock()
        self.reconciler = Reconciler(self.backend, clock=self.clock)
        self.held: dict[str, str] = {}
        self.spec_layout: tuple[PlacedInstance, ...] = ()
        self.mig_wanted = False

    @initialize(key=st.sampled_from(MODELS), mig=st.booleans())
    def start(self, key: str, mig: bool) -> None:
        self.key = key
        self.backend = FakeBackend([key], mig_enabled=mig)
        self.reconciler = Reconciler(self.backend, clock=self.clock)

    # ------------------------------------------------------------------- the world

    @rule(data=st.data())
    def start_process(self, data: st.DataObject) -> None:
        uuids = sorted(self.backend.mig_uuids(0).values())
        if self.backend.get_mig_mode(0).current:
            if uuids:
                self.backend.start_process(0, data.draw(st.sampled_from(uuids)))
        elif data.draw(st.integers(0, 3)) == 0:
            # Rarely: a process on a GPU without MIG holds back every MIG-mode switch.
            self.backend.start_process(0, None)

    @precondition(lambda self: bool(self.backend.processes()))
    @rule(data=st.data())
    def stop_process(self, data: st.DataObject) -> None:
        self.backend.stop_process(data.draw(st.sampled_from(self.backend.processes())))

    @rule(data=st.data())
    def pod_takes_an_instance(self, data: st.DataObject) -> None:
        uuids = sorted(self.backend.mig_uuids(0).values())
        if uuids:
            self.held[data.draw(st.sampled_from(uuids))] = f"default/pod-{len(self.held)}"

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def pod_ends(self, data: st.DataObject) -> None:
        del self.held[data.draw(st.sampled_from(sorted(self.held)))]

    # --------------------------------------------------------------------- the agent

    @rule(data=st.data(), mig=st.integers(0, 9), fault=FAULTS)
    def new_spec(self, data: st.DataObject, mig: int, fault: Fault | None) -> None:
        self.mig_wanted = mig > 0  # mostly MIG on; sometimes a switch to hami-core
        self.spec_layout = data.draw(any_layout(self.key)) if self.mig_wanted else ()
        self._reconcile(fault)

    @rule(data=st.data(), fault=FAULTS)
    def new_spec_around_the_busy_instances(self, data: st.DataObject, fault: Fault | None) -> None:
        # What the planner does: repartition only the free placements of the GPU.
        busy = self._placed_busy(self._busy_instances())
        layouts = [layout for layout in LAYOUTS[self.key] if busy <= set(layout)]
        self.mig_wanted = True
        self.spec_layout = data.draw(st.sampled_from(layouts))
        self._reconcile(fault)

    @rule(fault=FAULTS)
    def resync(self, fault: Fault | None) -> None:
        self._reconcile(fault)

    def _reconcile(self, fault: Fault | None) -> None:
        spec = spec_of(self.backend, 0, self.spec_layout, mig_enabled=self.mig_wanted)
        busy = self._busy_instances()
        self.clock.advance(3600)  # past any backoff
        self.backend.clear_faults()
        if fault is not None:
            k, error, after = fault
            if error == "crash":
                self.backend.crash_at_call(k, after=after)
            else:
                assert isinstance(error, NvmlError)
                self.backend.fail_nth_call(k, error, after=after)
        try:
            result = self.reconciler.reconcile(0, spec, dict(self.held))
        except SimulatedCrash:
            self.reconciler = Reconciler(self.backend, clock=self.clock)  # the agent restarts
            result = None
        self.backend.clear_faults()

        # Busy instances survive, with the same GI id and MIG UUID.
        now = {(gi, uuid) for _, gi, uuid in self._instances()}
        for placement, gi, uuid in busy:
            assert (gi, uuid) in now, f"busy instance at {placement} was destroyed"
        if result is None or any(c.injected for c in self.backend.calls):
            event("pass with a fault")
            self.backend.calls.clear()
            return
        event(f"phase {result.phase}")
        if busy:
            event("pass with busy instances")
        self.backend.calls.clear()
        # Fault-free pass: converged whenever nothing blocks the spec.
        table = self.backend.table(0)
        valid = not layout_problems(table, self.spec_layout)
        wanted = set(self.spec_layout)
        busy_placed = set(self._placed_busy(busy))
        gpu_busy = bool(self.backend.processes()) or bool(busy)
        mode_ok = self.backend.get_mig_mode(0).current == self.mig_wanted
        if valid and busy_placed <= wanted and (mode_ok or not gpu_busy):
            assert result.phase == "Ready", result.conditions
            assert self.backend.placed_instances(0) == tuple(sorted(self.spec_layout))
            event("converged" + (" around busy instances" if busy else ""))
        if not valid:
            assert result.phase == "Failed"

    def _instances(self) -> list[tuple[Placement, int, str | None]]:
        uuids = self.backend.mig_uuids(0)
        return [(p, gi, uuids.get(p)) for p, gi in self.backend.gi_ids(0).items()]

    def _busy_instances(self) -> list[tuple[Placement, int, str | None]]:
        if not self.backend.get_mig_mode(0).current:
            return []
        observation = self.reconciler.observe(0, self.held)
        return [(i.placement, i.gi_id, i.uuid) for i in observation.instances if i.busy]

    def _placed_busy(self, busy: list[tuple[Placement, int, str | None]]) -> set[PlacedInstance]:
        placements = {p for p, _, _ in busy}
        return {i for i in self.backend.placed_instances(0) if i.placement in placements}

    # -------------------------------------------------------------------- invariants

    @invariant()
    def the_gpu_holds_a_valid_layout(self) -> None:
        assert not layout_problems(self.backend.table(0), self.backend.placed_instances(0))

    @invariant()
    def mig_mode_is_settled(self) -> None:
        # The fake resets itself on an idle GPU, so nothing stays pending there.
        mode = self.backend.get_mig_mode(0)
        if not self.backend.processes():
            assert not mode.switching
        self.backend.calls.clear()


ReconcilerHistory.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_reconciler_histories = ReconcilerHistory.TestCase
