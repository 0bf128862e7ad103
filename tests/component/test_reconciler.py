"""The reconciler against the fake GPU backend: converging, refusing, crashing, backing off."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from migweaver.agent.backends.fake import MUTATING_CALLS, FakeBackend, SimulatedCrash
from migweaver.agent.backends.protocol import MigModeState, NvmlError
from migweaver.agent.reconciler import Reconciler, ReconcileResult
from migweaver.agent.status import layout_status, observed_status
from migweaver.core.agent.diff import BlockReason
from migweaver.core.mig.geometry import layout_problems
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.models import (
    CONDITION_APPLIED,
    CONDITION_DEGRADED,
    CONDITION_READY,
    Condition,
    MigLayoutSpec,
)
from tests.component.fakegpu_helpers import FakeClock, build, placed, spec_for, uuid_at

A100 = "A100-SXM4-80GB"
H100 = "H100-SXM5-80GB"
NOW = "2024-05-01T12:00:00Z"


def fake(*models: str, mig_enabled: bool = True, **options: Any) -> FakeBackend:
    return FakeBackend(list(models or (A100,)), mig_enabled=mig_enabled, **options)


def assert_valid(backend: FakeBackend, gpu: int = 0) -> None:
    assert not layout_problems(backend.table(gpu), backend.placed_instances(gpu))


def assert_ready(result: ReconcileResult, backend: FakeBackend, spec: MigLayoutSpec) -> None:
    assert result.phase == "Ready", result.conditions
    assert result.condition(CONDITION_READY).status == "True"
    assert result.condition(CONDITION_APPLIED).status == "True"
    assert result.condition(CONDITION_DEGRADED).status == "False"
    wanted = placed(backend.table(0), *(f"{i.profile}@{i.placement.start}" for i in spec.instances))
    assert backend.placed_instances(0) == wanted
    mode = backend.get_mig_mode(0)
    assert mode == MigModeState(spec.mig_enabled, spec.mig_enabled)


def destroyed_gi_ids(backend: FakeBackend) -> set[int]:
    return {c.args[1] for c in backend.calls if c.name == "destroy_gpu_instance" and c.took_effect}


def touched_gi_ids(backend: FakeBackend) -> set[int]:
    return {
        c.args[1]
        for c in backend.calls
        if c.name in ("destroy_gpu_instance", "destroy_compute_instance")
    }


# --------------------------------------------------------------------------- converging


def test_create_from_empty_enables_mig_and_creates_every_instance() -> None:
    backend = fake(mig_enabled=False)
    spec = spec_for(backend, 0, "3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3")
    result = Reconciler(backend).reconcile(0, spec)
    assert_ready(result, backend, spec)
    assert [c.name for c in backend.mutating_calls] == ["set_mig_mode"] + [
        "create_gpu_instance",
        "create_compute_instance",
    ] * 4
    observation = result.observation
    assert observation is not None
    assert {i.uuid for i in observation.instances} == set(backend.mig_uuids(0).values())
    assert all(i.uuid and i.uuid.startswith("MIG-") for i in observation.instances)


def test_a_converged_gpu_costs_no_mutating_call() -> None:
    backend = fake()
    spec = spec_for(backend, 0, "7g.80gb@0")
    reconciler = Reconciler(backend)
    reconciler.reconcile(0, spec)
    backend.calls.clear()
    result = reconciler.reconcile(0, spec)
    assert result.phase == "Ready"
    assert result.steps == ()
    assert backend.mutating_calls == []


def test_the_gpus_are_enumerated_once_not_at_every_observation() -> None:
    backend = fake("A100-SXM4-80GB", "A100-SXM4-80GB")
    reconciler = Reconciler(backend)
    result = reconciler.reconcile(1, spec_for(backend, 1, "3g.40gb@0", "3g.40gb@4"))
    assert result.phase == "Ready"
    assert len(result.steps) == 4  # five observations of GPU 1
    reconciler.observe(0)
    assert [c.name for c in backend.calls].count("list_gpus") == 1


HOLDERS: dict[str, Callable[[FakeBackend, str, Placement], dict[str, str]]] = {
    "process": lambda b, uuid, p: (b.start_process(0, uuid), {})[1],
    "pod by MIG UUID": lambda b, uuid, p: {uuid: "default/train-1"},
    "pod by placement": lambda b, uuid, p: {str(p): "default/train-1"},
}


@pytest.mark.parametrize("holder", HOLDERS)
def test_partial_repartition_around_an_in_use_3g_at_start_4(holder: str) -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4", "3g.40gb@0")
    busy_uuid = uuid_at(backend, 0, 4, 4)
    held = HOLDERS[holder](backend, busy_uuid, Placement(4, 4))
    spec = spec_for(backend, 0, "3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3")

    result = Reconciler(backend).reconcile(0, spec, held)

    assert_ready(result, backend, spec)
    assert uuid_at(backend, 0, 4, 4) == busy_uuid
    assert backend.gi_ids(0)[Placement(4, 4)] == ids["3g.40gb@4"]
    assert ids["3g.40gb@4"] not in touched_gi_ids(backend)
    assert result.observation is not None
    busy = result.observation.instance_at(Placement(4, 4))
    assert busy is not None
    assert busy.busy


def test_partial_repartition_around_an_in_use_3g_at_start_0() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@0", "3g.40gb@4")
    busy_uuid = uuid_at(backend, 0, 0, 4)
    backend.start_process(0, busy_uuid)
    spec = spec_for(backend, 0, "3g.40gb@0", "2g.20gb@4", "1g.10gb@6")

    result = Reconciler(backend).reconcile(0, spec)

    assert_ready(result, backend, spec)
    assert uuid_at(backend, 0, 0, 4) == busy_uuid
    assert backend.gi_ids(0)[Placement(0, 4)] == ids["3g.40gb@0"]


def test_beside_a_3g_at_start_0_a_second_1g_has_no_place_and_nothing_changes() -> None:
    # Compute slice 3 sits under the 3g and a 1g cannot start at slot 7: the free half
    # holds 2g + 1g only. A spec asking for more is not a layout; it changes nothing.
    backend = fake()
    build(backend, 0, "3g.40gb@0", "3g.40gb@4")
    before = backend.mig_uuids(0)
    spec = spec_for(backend, 0, "3g.40gb@0", "2g.20gb@4", "1g.10gb@6", "1g.10gb@7")
    result = Reconciler(backend).reconcile(0, spec)
    assert result.phase == "Failed"
    assert result.condition(CONDITION_READY).reason == "InvalidSpec"
    assert "1g.10gb cannot be placed at 7:1" in result.condition(CONDITION_DEGRADED).message
    assert backend.mutating_calls == []
    assert backend.mig_uuids(0) == before


def test_an_orphan_gpu_instance_is_completed_and_an_unwanted_one_cleaned() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4", "3g.40gb@0", compute=False)
    reconciler = Reconciler(backend)
    assert {i.gi_id for i in reconciler.observe(0).orphans} == set(ids.values())
    spec = spec_for(backend, 0, "3g.40gb@4", "1g.10gb@0")
    result = reconciler.reconcile(0, spec)
    assert_ready(result, backend, spec)
    assert backend.gi_ids(0)[Placement(4, 4)] == ids["3g.40gb@4"]  # completed, not re-created
    assert [(c.name, c.args[1:]) for c in backend.mutating_calls] == [
        ("destroy_gpu_instance", (ids["3g.40gb@0"],)),
        ("create_gpu_instance", (19, Placement(0, 1))),
        ("create_compute_instance", (ids["3g.40gb@0"],)),  # the driver reuses the freed id
        ("create_compute_instance", (ids["3g.40gb@4"],)),
    ]


# ----------------------------------------------------------------------------- refusing


def test_an_in_use_instance_the_spec_drops_is_kept_and_reported() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4", "3g.40gb@0")
    busy_uuid = uuid_at(backend, 0, 4, 4)
    held = {busy_uuid: "default/train-1"}
    spec = spec_for(backend, 0, "7g.80gb@0")
    reconciler = Reconciler(backend)

    result = reconciler.reconcile(0, spec, held)

    assert result.phase == "Degraded"
    assert ids["3g.40gb@4"] not in touched_gi_ids(backend)
    assert uuid_at(backend, 0, 4, 4) == busy_uuid
    assert backend.placed_instances(0) == placed(backend.table(0), "3g.40gb@4")  # idle one gone
    degraded = result.condition(CONDITION_DEGRADED)
    assert degraded.status == "True"
    assert degraded.reason == "InstanceBlocked"
    assert "3g.40gb at 4:4 is in use, held by default/train-1" in degraded.message
    assert "cannot create 7g.80gb at 0:8: overlaps busy 3g.40gb at 4:4" in degraded.message
    assert result.retry_after is not None  # waits for the pod, so a re-check is due
    assert result.next_attempt_at is None  # but nothing failed: no backoff

    status = layout_status(result, generation=4, now=NOW)
    (kept,) = status.instances
    assert (kept.in_use, kept.pod, kept.uuid) == (True, "default/train-1", busy_uuid)
    assert status.phase == "Degraded"
    assert status.used == "1/1"

    # Once the pod is gone, the spec is applied.
    result = reconciler.reconcile(0, spec, {})
    assert_ready(result, backend, spec)


def test_a_create_refused_by_nvml_names_the_instance_the_error_and_the_overlap() -> None:
    # A pod gets a 2g at 4:2 between the observation and the create (a race the
    # reconciler cannot see coming): NVML refuses, and the message says why.
    backend: FakeBackend
    raced: list[bool] = []

    def race(_: float) -> None:
        if not raced:
            raced.append(True)
            gi = backend.create_gpu_instance(0, 14, Placement(4, 2))
            backend.create_compute_instance(0, gi)

    backend = fake(latency_s={"create_gpu_instance": 0.1}, sleep=race)
    spec = spec_for(backend, 0, "3g.40gb@4")
    held = {"4:2": "default/train-1"}
    result = Reconciler(backend).reconcile(0, spec, held)
    assert result.phase == "Degraded"
    assert result.nvml_error is NvmlError.INSUFFICIENT_RESOURCES
    assert result.condition(CONDITION_DEGRADED).message == (
        "cannot create 3g.40gb at 4:4: NVML_ERROR_INSUFFICIENT_RESOURCES "
        "(overlaps busy 2g.20gb at 4:2 held by default/train-1)"
    )
    assert result.condition(CONDITION_DEGRADED).reason == "NvmlError"
    assert_valid(backend)


@pytest.mark.parametrize("surprise", ["pod", "process"])
def test_the_gpu_is_re_read_after_every_call_so_a_new_holder_is_respected(
    surprise: str,
) -> None:
    # The spec drops two idle instances. While the first is being destroyed, a pod is
    # given the second (the caller's mapping is live), or a process starts on it.
    backend: FakeBackend
    held: dict[str, str] = {}

    def meanwhile(_: float) -> None:
        uuid = uuid_at(backend, 0, 4, 4)
        if held or backend.processes():
            return
        if surprise == "pod":
            held[uuid] = "default/late-pod"
        else:
            backend.start_process(0, uuid)

    backend = fake(latency_s={"destroy_compute_instance": 0.1}, sleep=meanwhile)
    ids = build(backend, 0, "3g.40gb@0", "3g.40gb@4")
    spec = spec_for(backend, 0)

    result = Reconciler(backend).reconcile(0, spec, held)

    assert ids["3g.40gb@4"] not in touched_gi_ids(backend)  # not even attempted
    assert backend.placed_instances(0) == placed(backend.table(0), "3g.40gb@4")
    assert result.phase == "Degraded"
    assert result.condition(CONDITION_DEGRADED).reason == "InstanceInUse"
    assert result.nvml_error is None


class SwappedAfterOneRead(Mapping[str, str]):
    """A live holders view whose version is swapped (the pod ended) right after it answers
    one lookup, as the pod watch may do while the GPU thread reads it."""

    def __init__(self, held: dict[str, str]) -> None:
        self.held = held

    def __getitem__(self, key: str) -> str:
        value = self.held[key]
        self.held = {}
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self.held))

    def __len__(self) -> int:
        return len(self.held)


def test_a_holder_released_while_the_gpu_is_read_is_no_error() -> None:
    backend = fake()
    build(backend, 0, "3g.40gb@4")
    held = SwappedAfterOneRead({uuid_at(backend, 0, 4, 4): "default/train-1"})

    observation = Reconciler(backend).observe(0, held)

    (instance,) = observation.instances
    assert instance.pod == "default/train-1"  # the version read first, consistently


# ----------------------------------------------------------------------------- MIG mode


def test_mig_mode_is_enabled_on_an_idle_gpu() -> None:
    backend = fake(mig_enabled=False)
    spec = spec_for(backend, 0)
    result = Reconciler(backend).reconcile(0, spec)
    assert_ready(result, backend, spec)
    assert layout_status(result, generation=1, now=NOW).mode == "mig"


def test_mig_mode_waits_while_a_process_runs_on_the_gpu() -> None:
    backend = fake(mig_enabled=False)
    pid = backend.start_process(0, None)
    spec = spec_for(backend, 0, "7g.80gb@0")
    reconciler = Reconciler(backend)

    result = reconciler.reconcile(0, spec)

    assert result.phase == "Pending"
    assert backend.mutating_calls == []  # not even asked: the GPU is busy
    ready = result.condition(CONDITION_READY)
    assert (ready.status, ready.reason) == ("False", "MigModePending")
    assert f"process {pid}" in ready.message
    assert result.condition(CONDITION_DEGRADED).status == "False"
    backend.stop_process(pid)
    assert_ready(reconciler.reconcile(0, spec), backend, spec)


def test_mig_mode_stays_pending_while_a_client_holds_the_gpu_until_a_reset() -> None:
    backend = fake(mig_enabled=False)
    backend.hold_gpu(0)  # DCGM: invisible to the process list
    spec = spec_for(backend, 0, "7g.80gb@0")
    reconciler = Reconciler(backend)

    result = reconciler.reconcile(0, spec)

    assert result.phase == "Pending"
    assert [c.name for c in backend.mutating_calls] == ["set_mig_mode"]  # asked once only
    assert "needs a reset" in result.condition(CONDITION_READY).message
    status = layout_status(result, generation=1, now=NOW)
    assert status.mig_mode is not None
    assert (status.mig_mode.current, status.mig_mode.pending) == ("Disabled", "Enabled")

    backend.hold_gpu(0, held=False)
    backend.reset_gpu(0)
    assert_ready(reconciler.reconcile(0, spec), backend, spec)


def test_mig_is_disabled_after_its_idle_instances_are_gone() -> None:
    backend = fake()
    build(backend, 0, "3g.40gb@0", "3g.40gb@4")
    spec = spec_for(backend, 0, mig_enabled=False)
    result = Reconciler(backend).reconcile(0, spec)
    assert_ready(result, backend, spec)
    assert backend.mutating_calls[-1].name == "set_mig_mode"
    status = layout_status(result, generation=1, now=NOW)
    assert (status.mode, status.instances_summary) == ("hami-core", "-")
    # NVML lists the profile table with MIG off too: it stays reported.
    assert {p.name for p in status.profiles} >= {"1g.10gb", "3g.40gb", "7g.80gb"}


def test_mig_disable_waits_for_a_busy_instance_and_keeps_it() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@0", "3g.40gb@4")
    backend.start_process(0, uuid_at(backend, 0, 0, 4))
    spec = spec_for(backend, 0, mig_enabled=False)
    result = Reconciler(backend).reconcile(0, spec)
    assert result.phase == "Pending"
    assert backend.placed_instances(0) == placed(backend.table(0), "3g.40gb@0")
    assert ids["3g.40gb@0"] not in touched_gi_ids(backend)
    assert "set_mig_mode" not in {c.name for c in backend.calls}
    assert {b.reason for b in result.blocked} == {
        BlockReason.IN_USE,
        BlockReason.MIG_MODE_PENDING,
    }


# ------------------------------------------------------------------------------ crashes

SCENARIOS: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # name: (model, MIG on, existing instances, busy ones, spec)
    "enable+create": (A100, False, (), (), ("3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3")),
    "repartition": (
        H100,
        True,
        ("3g.40gb@4", "2g.20gb@0", "2g.20gb@2"),
        ("3g.40gb@4",),
        ("3g.40gb@4", "1g.10gb@0", "1g.10gb@1", "1g.20gb@2"),
    ),
    "disable": (A100, True, ("4g.40gb@0", "2g.20gb@4", "1g.10gb@6"), (), ()),
}


def _scenario(name: str) -> tuple[FakeBackend, MigLayoutSpec, dict[Placement, str]]:
    model, mig, existing, busy, wanted = SCENARIOS[name]
    backend = fake(model, mig_enabled=mig)
    build(backend, 0, *existing)
    busy_uuids = {}
    for item in busy:
        (inst,) = placed(backend.table(0), item)
        busy_uuids[inst.placement] = backend.mig_uuids(0)[inst.placement]
        backend.start_process(0, busy_uuids[inst.placement])
    spec = spec_for(backend, 0, *wanted, mig_enabled=name != "disable")
    return backend, spec, busy_uuids


def _call_count(name: str) -> int:
    backend, spec, _ = _scenario(name)
    assert Reconciler(backend).reconcile(0, spec).phase == "Ready"
    return len(backend.mutating_calls)


CRASH_POINTS = [
    (name, k, after)
    for name in SCENARIOS
    for k in range(1, _call_count(name) + 1)
    for after in (False, True)
]


def test_the_crash_scenarios_are_multi_step() -> None:
    assert {name: _call_count(name) for name in SCENARIOS} == {
        "enable+create": 9,
        "repartition": 10,
        "disable": 7,
    }


@pytest.mark.parametrize(
    ("scenario", "k", "after"),
    CRASH_POINTS,
    ids=[f"{n}-call{k}-{'after' if a else 'before'}" for n, k, a in CRASH_POINTS],
)
def test_a_crash_at_any_nvml_call_converges_after_a_restart(
    scenario: str, k: int, after: bool
) -> None:
    backend, spec, busy_uuids = _scenario(scenario)
    backend.crash_at_call(k, after=after)
    with pytest.raises(SimulatedCrash):
        Reconciler(backend).reconcile(0, spec)
    crashed = backend.mutating_calls[-1]
    assert crashed.injected
    assert crashed.took_effect is after
    assert_valid(backend)

    # The agent restarts: a fresh reconciler, same GPU, same spec.
    result = Reconciler(backend).reconcile(0, spec)

    assert_ready(result, backend, spec)
    for placement, uuid in busy_uuids.items():
        assert backend.mig_uuids(0)[placement] == uuid
    # Nothing is done twice: the restart finishes the job, it does not redo it.
    assert len(backend.mutating_calls) <= _call_count(scenario) + (0 if after else 1)


# ------------------------------------------------------------------------- NVML errors

ERRORS = [
    NvmlError.INVALID_ARGUMENT,
    NvmlError.NOT_SUPPORTED,
    NvmlError.NO_PERMISSION,
    NvmlError.NOT_FOUND,
    NvmlError.RESET_REQUIRED,
    NvmlError.IN_USE,
    NvmlError.INSUFFICIENT_RESOURCES,
]
# Per call, a scenario in which the reconciler makes that call.
CALL_SCENARIOS = {
    "set_mig_mode": "enable+create",
    "create_gpu_instance": "repartition",
    "create_compute_instance": "repartition",
    "destroy_compute_instance": "repartition",
    "destroy_gpu_instance": "repartition",
    "list_gpus": "repartition",
    "get_mig_mode": "repartition",
    "list_profiles": "repartition",
    "list_gpu_instances": "repartition",
    "list_processes": "repartition",
}


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.value)
@pytest.mark.parametrize("call", CALL_SCENARIOS)
def test_every_nvml_error_becomes_a_condition_and_nothing_escapes(
    call: str, error: NvmlError
) -> None:
    backend, spec, busy_uuids = _scenario(CALL_SCENARIOS[call])
    clock = FakeClock()
    reconciler = Reconciler(backend, clock=clock)
    backend.fail_call(call, error)

    result = reconciler.reconcile(0, spec)

    assert_valid(backend)
    if call == "list_profiles" and error is NvmlError.NOT_SUPPORTED:
        # NVML's answer while MIG is off: the catalog's table is used until it lists some.
        assert result.phase == "Ready"
    else:
        assert result.phase == ("Degraded" if call in MUTATING_CALLS else "Failed")
        assert result.nvml_error is error
        degraded = result.condition(CONDITION_DEGRADED)
        assert (degraded.status, degraded.reason) == ("True", "NvmlError")
        assert f"NVML_ERROR_{error.name}" in degraded.message
        assert result.condition(CONDITION_READY).status == "False"
        assert result.next_attempt_at is not None
        if call in MUTATING_CALLS:
            # The message names the instance the call was for: profile at start:size.
            assert degraded.message.startswith("cannot ")
            assert " at " in degraded.message or "MIG mode" in degraded.message
        status = layout_status(result, generation=2, now=NOW)
        assert status.phase == result.phase
    for placement, uuid in busy_uuids.items():
        assert backend.mig_uuids(0)[placement] == uuid

    clock.advance(3600)
    assert_ready(reconciler.reconcile(0, spec), backend, spec)


def test_a_read_failing_between_steps_reports_an_unknown_state_then_converges() -> None:
    backend: FakeBackend
    broken: list[bool] = []

    def break_reads(_: float) -> None:
        if not broken:  # once: during the first compute-instance create
            broken.append(True)
            backend.fail_call("list_gpu_instances", NvmlError.UNKNOWN)

    backend = fake(latency_s={"create_compute_instance": 0.1}, sleep=break_reads)
    spec = spec_for(backend, 0, "3g.40gb@0", "3g.40gb@4")
    clock = FakeClock()
    reconciler = Reconciler(backend, clock=clock)
    result = reconciler.reconcile(0, spec)
    assert result.phase == "Failed"
    assert result.observation is None  # nothing stale is reported as fact
    assert len(result.steps) == 2  # the GI and its CI were made before the read failed
    message = result.condition(CONDITION_DEGRADED).message
    assert message.startswith("cannot read GPU 0 after create the compute instance of 3g.40gb")
    assert "NVML_ERROR_UNKNOWN" in message
    assert_valid(backend)
    clock.advance(3600)
    assert_ready(reconciler.reconcile(0, spec), backend, spec)


def test_an_unexpected_exception_becomes_a_failed_result() -> None:
    backend, spec, _ = _scenario("repartition")
    backend.fail_call("create_gpu_instance", RuntimeError("driver wedged"))
    result = Reconciler(backend, clock=FakeClock()).reconcile(0, spec)
    assert result.phase == "Failed"
    assert result.condition(CONDITION_DEGRADED).reason == "InternalError"
    assert "driver wedged" in result.condition(CONDITION_DEGRADED).message
    assert result.observation is not None  # still reports what exists
    assert_valid(backend)


def test_a_spec_for_another_gpu_changes_nothing() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", mig_enabled=True)
    build(backend, 0, "7g.80gb@0")
    spec = spec_for(backend, 1)  # names GPU 1's UUID
    result = Reconciler(backend).reconcile(0, spec)
    assert result.phase == "Failed"
    assert result.condition(CONDITION_READY).reason == "GpuMismatch"
    assert backend.mutating_calls == []


# ------------------------------------------------------------------------------ backoff


def test_a_failing_spec_backs_off_exponentially_and_a_changed_spec_is_tried_at_once() -> None:
    backend = fake()
    clock = FakeClock()
    reconciler = Reconciler(backend, clock=clock, backoff_base=2.0, backoff_max=10.0)
    spec = spec_for(backend, 0, "3g.40gb@4")
    backend.fail_call("create_gpu_instance", NvmlError.INSUFFICIENT_RESOURCES, times=100)

    delays = []
    for _ in range(5):
        result = reconciler.reconcile(0, spec)
        assert not result.skipped
        delays.append(result.retry_after)
        assert result.retry_after is not None
        assert result.next_attempt_at == clock.now + result.retry_after
        calls = len(backend.calls)
        clock.advance(result.retry_after - 0.001)
        refused = reconciler.reconcile(0, spec)
        assert refused.skipped
        assert refused.phase == "Degraded"
        assert len(backend.calls) == calls  # not even an observation
        clock.advance(0.001)
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert result.failures == 5

    changed = spec_for(backend, 0, "3g.40gb@0")
    result = reconciler.reconcile(0, changed)
    assert not result.skipped
    assert result.failures == 1

    backend.clear_faults()
    clock.advance(2.0)
    result = reconciler.reconcile(0, changed)
    assert_ready(result, backend, changed)
    assert (result.failures, result.next_attempt_at) == (0, None)


def test_waiting_for_a_busy_gpu_is_not_backed_off() -> None:
    backend = fake(mig_enabled=False)
    backend.start_process(0, None)
    reconciler = Reconciler(backend, clock=FakeClock())
    spec = spec_for(backend, 0)
    first = reconciler.reconcile(0, spec)
    calls = len(backend.calls)
    second = reconciler.reconcile(0, spec)
    assert (first.phase, second.phase) == ("Pending", "Pending")
    assert not second.skipped
    assert len(backend.calls) > calls


def test_a_pass_stops_after_max_steps_and_the_next_continues() -> None:
    backend = fake()
    spec = spec_for(backend, 0, "2g.20gb@0", "2g.20gb@2", "2g.20gb@4")
    reconciler = Reconciler(backend, max_steps=4)
    result = reconciler.reconcile(0, spec)
    assert (result.phase, len(result.steps), result.retry_after) == ("Applying", 4, 0.0)
    assert result.condition(CONDITION_READY).reason == "Applying"
    assert_ready(reconciler.reconcile(0, spec), backend, spec)


# ------------------------------------------------------------------------------ observe


def test_observe_reports_nvml_profiles_ids_uuids_and_holders() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4", "2g.20gb@0")
    build(backend, 0, "1g.10gb@2", compute=False)
    pid = backend.start_process(0, uuid_at(backend, 0, 0, 2))
    # An older driver reports the 3g under another name: NVML's profiles win.
    real = backend.list_profiles(0)
    renamed = [replace(p, name="3g.39gb") if p.name == "3g.40gb" else p for p in real]
    backend.list_profiles = lambda gpu: renamed  # type: ignore[method-assign]

    observation = Reconciler(backend).observe(0, {uuid_at(backend, 0, 4, 4): "ns/p"})

    by_start = {i.placement.start: i for i in observation.instances}
    assert by_start[4].gi_id == ids["3g.40gb@4"]
    assert by_start[4].pod == "ns/p"
    assert by_start[4].busy
    assert by_start[0].pids == (pid,)
    assert by_start[2].orphan
    assert not by_start[2].busy
    assert by_start[2].uuid is None
    assert observation.orphans == (by_start[2],)
    assert observation.table.get("3g.40gb") is not None  # alias lookup still works


def test_observe_with_mig_off_reads_nvmls_profile_table() -> None:
    backend = fake(mig_enabled=False)
    observation = Reconciler(backend).observe(0)
    assert {p.name for p in observation.profiles} >= {"1g.10gb", "7g.80gb"}
    assert observation.instances == ()
    assert observation.table.get("7g.80gb") is not None
    assert observation.catalog_mismatches == ()


def test_observe_of_a_gpu_whose_profiles_nvml_will_not_list_falls_back_to_the_catalog() -> None:
    backend = fake(mig_enabled=False)
    backend.fail_call("list_profiles", NvmlError.NOT_SUPPORTED, times=99)
    observation = Reconciler(backend).observe(0)
    assert observation.profiles == ()
    assert observation.table.get("7g.80gb") is not None


def test_the_gpu_uuid_held_by_a_pod_holds_the_whole_gpu() -> None:
    backend = fake(mig_enabled=False)
    held = {backend.uuid(0): "default/hami-pod"}
    result = Reconciler(backend).reconcile(0, spec_for(backend, 0), held)
    assert result.phase == "Pending"
    assert "GPU held by default/hami-pod" in result.condition(CONDITION_READY).message


# ------------------------------------------------------------------------------- status


def test_status_has_observed_fields_summaries_and_stamped_conditions() -> None:
    backend = fake()
    spec = spec_for(backend, 0, "3g.40gb@4", "1g.10gb@0", "1g.10gb@1", "1g.10gb@2")
    result = Reconciler(backend).reconcile(0, spec, {"4:4": "default/train-1"})
    old = [
        Condition(type="Ready", status="True", reason="LayoutApplied", last_transition_time="T0"),
        Condition(type="Degraded", status="True", reason="NvmlError", last_transition_time="T0"),
        Condition(type="Custom", status="True", last_transition_time="T0"),
    ]
    status = layout_status(result, generation=7, now=NOW, previous_conditions=old)
    wire = status.to_api()
    assert wire["observedGeneration"] == 7
    assert wire["phase"] == "Ready"
    assert wire["gpu"] == {
        "model": "NVIDIA A100-SXM4-80GB",
        "memoryMiB": 81920,
        "migCapable": True,
        "pciDeviceId": 0x20B2,
    }
    assert wire["migMode"] == {"current": "Enabled", "pending": "Enabled"}
    assert {p["name"]: p["id"] for p in wire["profiles"]}["3g.40gb"] == 9
    assert [i["placement"]["start"] for i in wire["instances"]] == [0, 1, 2, 4]
    assert wire["instances"][3]["pod"] == "default/train-1"
    assert wire["instances"][3]["inUse"] is True
    assert wire["instances"][3]["gpuInstanceId"] == 4  # created last, by placement order
    assert wire["instances"][3]["computeInstanceId"] == 0
    assert (wire["mode"], wire["instancesSummary"], wire["used"]) == (
        "mig",
        "1g.10gbx3,3g.40gb",
        "1/4",
    )
    conditions = {c["type"]: c for c in wire["conditions"]}
    assert conditions["Ready"]["lastTransitionTime"] == "T0"  # unchanged status keeps time
    assert conditions["Degraded"]["lastTransitionTime"] == NOW  # flipped
    assert conditions["Degraded"]["status"] == "False"
    assert conditions["Applied"]["lastTransitionTime"] == NOW  # new
    assert conditions["Custom"]["lastTransitionTime"] == "T0"  # not ours: kept
    assert all(c.get("observedGeneration") == 7 for t, c in conditions.items() if t != "Custom")
    assert result.observation is not None
    assert observed_status(result.observation).conditions == []


def test_status_when_the_gpu_cannot_be_read_claims_no_instances() -> None:
    backend = fake()
    build(backend, 0, "7g.80gb@0")
    backend.fail_call("list_gpus", NvmlError.UNKNOWN)
    result = Reconciler(backend).reconcile(0, spec_for(backend, 0, "7g.80gb@0"))
    status = layout_status(result, generation=1, now=NOW)
    assert (status.phase, status.instances, status.gpu) == ("Failed", [], None)
    assert "cannot read GPU 0" in status.conditions[0].message
