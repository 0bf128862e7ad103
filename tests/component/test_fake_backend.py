"""The fake GPU backend behaves as NVML does (docs/mig-reference.md sections 1, 2 and 4)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migweaver.agent.backends.fake import (
    MUTATING_CALLS,
    NVML_CALLS,
    FakeBackend,
    SimulatedCrash,
)
from migweaver.agent.backends.protocol import (
    BackendError,
    GpuBackend,
    MigModeState,
    NvmlError,
    profile_table,
)
from migweaver.core.mig.catalog import CATALOG, GpuModel, match_model, model_keys
from migweaver.core.mig.geometry import layout_problems
from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable
from tests.component.fakegpu_helpers import build, placed, uuid_at

A100 = "A100-SXM4-80GB"
H100 = "H100-SXM5-80GB"
A30 = "A30-24GB"
GPU_UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def fake(*models: str, mig_enabled: bool = True, **options: Any) -> FakeBackend:
    return FakeBackend(list(models or (A100,)), mig_enabled=mig_enabled, **options)


def profile_id(backend: FakeBackend, name: str, gpu: int = 0) -> int:
    profile = backend.table(gpu).get(name)
    assert profile is not None
    return profile.profile_id


def nvml_error(excinfo: pytest.ExceptionInfo[BackendError]) -> NvmlError:
    return excinfo.value.error


# ----------------------------------------------------------------------- construction


def test_it_is_a_gpu_backend() -> None:
    assert isinstance(fake(), GpuBackend)


@pytest.mark.parametrize(
    ("spec", "models"),
    [
        ("A100-SXM4-80GB:2,H100-SXM5-80GB:1", [A100, A100, H100]),
        ("A30-24GB", [A30]),
        (" A100-SXM4-80GB : 1 , A30-24GB:2 ", [A100, A30, A30]),
        ("nvidia a100-sxm4-80gb:1", [A100]),  # catalog spellings are accepted
    ],
    ids=["three-gpus-two-models", "one-a30", "spaces-around-names", "catalog-spelling"],
)
def test_from_spec_builds_the_listed_gpus_in_order(spec: str, models: list[str]) -> None:
    backend = FakeBackend.from_spec(spec)
    assert [backend.model(g.index).key for g in backend.list_gpus()] == models


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("A200-80GB:1", "unknown GPU model 'A200-80GB'"),
        ("A100-SXM4-80GB:x", "bad GPU count"),
        ("A100-SXM4-80GB:0", "at least 1"),
        ("", "no GPUs"),
    ],
    ids=["unknown-model", "bad-count", "zero-count", "empty"],
)
def test_from_spec_rejects_bad_specs_with_a_useful_message(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)) as excinfo:
        FakeBackend.from_spec(spec)
    if "unknown" in fragment:
        assert all(key in str(excinfo.value) for key in model_keys())


def test_a_fresh_gpu_has_mig_disabled_unless_asked() -> None:
    assert FakeBackend.from_spec(A100).get_mig_mode(0) == MigModeState(False, False)
    assert FakeBackend.from_spec(A100, mig_enabled=True).get_mig_mode(0) == MigModeState(True, True)


def test_gpu_uuids_have_the_real_form_and_are_deterministic_per_seed() -> None:
    a = FakeBackend.from_spec("A100-SXM4-80GB:2", seed="node-a")
    again = FakeBackend.from_spec("A100-SXM4-80GB:2", seed="node-a")
    other = FakeBackend.from_spec("A100-SXM4-80GB:2", seed="node-b")
    uuids = [g.uuid for g in a.list_gpus()]
    assert all(GPU_UUID.match(u) for u in uuids)
    assert len(set(uuids)) == 2
    assert uuids == [g.uuid for g in again.list_gpus()]
    assert not set(uuids) & {g.uuid for g in other.list_gpus()}


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.key)
def test_devices_are_recognised_as_their_catalog_model(model: GpuModel) -> None:
    (device,) = FakeBackend([model]).list_gpus()
    assert device.mig_capable
    assert device.memory_mib == model.memory_mib
    assert device.name.startswith("NVIDIA ")
    assert match_model(device.name, device.pci_device_id) == model
    assert device.pci_device_id is not None
    assert device.pci_device_id & 0xFFFF == 0x10DE  # NVML packs the vendor id


# ---------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.key)
def test_profiles_are_the_catalogs_with_nvml_ids_indexes_and_placements(model: GpuModel) -> None:
    backend = FakeBackend([model], mig_enabled=True)
    profiles = backend.list_profiles(0)
    assert [p.index for p in profiles] == sorted(p.index for p in profiles)
    by_name = {p.name: p for p in profiles}
    for expected in model.profiles:
        got = by_name[expected.name]
        assert (got.profile_id, got.index, got.slice_count, got.memory_mib) == (
            expected.profile_id,
            expected.index,
            expected.compute_slices,
            expected.memory_mib,
        )
        assert got.placements == expected.placements
        assert got.instance_count == expected.max_count
        assert got.media_extensions == expected.media_extensions
    assert profile_table(profiles).memory_slots == model.memory_slots


def test_a100_profile_ids_are_nvml_ids_not_indexes() -> None:
    ids = {p.name: (p.profile_id, p.index) for p in fake(A100).list_profiles(0)}
    assert ids["1g.10gb"] == (19, 0)
    assert ids["1g.10gb+me"] == (20, 7)
    assert ids["1g.20gb"] == (15, 9)
    assert ids["2g.20gb"] == (14, 1)
    assert ids["3g.40gb"] == (9, 2)
    assert ids["4g.40gb"] == (5, 3)
    assert ids["7g.80gb"] == (0, 4)


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.list_gpu_instances(0),
        lambda b: b.create_gpu_instance(0, 9, Placement(0, 4)),
        lambda b: b.create_compute_instance(0, 1),
        lambda b: b.destroy_gpu_instance(0, 1),
    ],
    ids=["list_gpu_instances", "create_gi", "create_ci", "destroy_gi"],
)
def test_mig_calls_are_not_supported_while_mig_is_disabled(
    call: Callable[[FakeBackend], object],
) -> None:
    backend = fake(mig_enabled=False)
    with pytest.raises(BackendError) as excinfo:
        call(backend)
    assert nvml_error(excinfo) is NvmlError.NOT_SUPPORTED


def test_an_unknown_gpu_index_is_an_invalid_argument() -> None:
    with pytest.raises(BackendError) as excinfo:
        fake().get_mig_mode(3)
    assert nvml_error(excinfo) is NvmlError.INVALID_ARGUMENT
    assert excinfo.value.call == "nvmlDeviceGetMigMode"


# ------------------------------------------------------------------- creating instances


def _test_model(max_1g: int) -> GpuModel:
    """A made-up 4-slot GPU whose 1g profile allows fewer instances than it has slots."""
    table = ProfileTable(
        memory_slots=4,
        profiles=(
            MigProfile("1g.5gb", 19, 0, 1, 5000, tuple(Placement(s, 1) for s in range(4)), max_1g),
        ),
    )
    return GpuModel("TEST-20GB", "NVIDIA TEST 20GB", 20000, 4, table)


CREATE_ERRORS = [
    # (model, existing instances, profile (name or raw id), start, expected NVML error)
    (A100, [], 99, 0, NvmlError.INVALID_ARGUMENT),  # unknown profile id
    (A100, [], "3g.40gb", 2, NvmlError.INVALID_ARGUMENT),  # 3g starts only at 0 or 4
    (A100, [], "2g.20gb", 6, NvmlError.INVALID_ARGUMENT),  # 2g starts at 0, 2, 4
    (A100, [], "1g.10gb", 7, NvmlError.INVALID_ARGUMENT),  # slot 7 is memory only
    (A100, [], "4g.40gb", 4, NvmlError.INVALID_ARGUMENT),
    (A100, ["3g.40gb@0"], "2g.20gb", 2, NvmlError.INSUFFICIENT_RESOURCES),  # overlap
    (A100, ["3g.40gb@0"], "3g.40gb", 0, NvmlError.INSUFFICIENT_RESOURCES),  # same place
    (A100, ["1g.10gb@5"], "2g.20gb", 4, NvmlError.INSUFFICIENT_RESOURCES),
    (A100, ["3g.40gb@4"], "7g.80gb", 0, NvmlError.INSUFFICIENT_RESOURCES),
    (A100, ["1g.10gb+me@0"], "1g.10gb+me", 1, NvmlError.INSUFFICIENT_RESOURCES),  # one +me
    (A30, ["2g.12gb+me@0"], "1g.6gb+me", 2, NvmlError.INSUFFICIENT_RESOURCES),  # one +me/GPU
    (H100, ["4g.40gb@0"], "3g.40gb", 0, NvmlError.INSUFFICIENT_RESOURCES),
]


@pytest.mark.parametrize(
    ("model", "existing", "profile", "start", "error"),
    CREATE_ERRORS,
    ids=[f"{c[0]}:{','.join(c[1]) or '-'}+{c[2]}@{c[3]}" for c in CREATE_ERRORS],
)
def test_create_gpu_instance_fails_as_nvml_does(
    model: str, existing: list[str], profile: str | int, start: int, error: NvmlError
) -> None:
    backend = fake(model)
    build(backend, 0, *existing)
    before = backend.placed_instances(0)
    if isinstance(profile, str):
        known = backend.table(0).get(profile)
        assert known is not None
        size, pid = known.memory_slices, known.profile_id
    else:
        size, pid = 1, profile
    with pytest.raises(BackendError) as excinfo:
        backend.create_gpu_instance(0, pid, Placement(start, size))
    assert nvml_error(excinfo) is error
    assert excinfo.value.call == "nvmlDeviceCreateGpuInstanceWithPlacement"
    assert backend.placed_instances(0) == before
    assert backend.calls[-1].took_effect is False


def test_a_profile_count_limit_is_insufficient_resources() -> None:
    backend = FakeBackend([_test_model(max_1g=2)], mig_enabled=True)
    backend.create_gpu_instance(0, 19, Placement(0, 1))
    backend.create_gpu_instance(0, 19, Placement(1, 1))
    with pytest.raises(BackendError) as excinfo:
        backend.create_gpu_instance(0, 19, Placement(2, 1))  # the slot is free
    assert nvml_error(excinfo) is NvmlError.INSUFFICIENT_RESOURCES


@pytest.mark.parametrize(
    "layout",
    [
        ["3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3"],
        ["4g.40gb@0", "3g.40gb@4"],
        ["1g.20gb@0", "1g.20gb@2", "1g.20gb@4", "1g.20gb@6"],
        ["7g.80gb@0"],
        ["1g.10gb+me@3", "3g.40gb@4", "2g.20gb@0"],
    ],
    ids=["3g-2g-1g-1g", "4g-3g", "1g-double-x4", "7g", "1g-me-3g-2g"],
)
def test_valid_layouts_can_be_created_in_any_order(layout: list[str]) -> None:
    for ordering in (layout, list(reversed(layout))):
        backend = fake(A100)
        build(backend, 0, *ordering)
        assert backend.placed_instances(0) == placed(backend.table(0), *layout)
        assert not layout_problems(backend.table(0), backend.placed_instances(0))


def test_gi_ids_are_driver_ids_lowest_free_first_and_reused() -> None:
    backend = fake(A100)
    ids = build(backend, 0, "3g.40gb@4", "1g.10gb@3", "2g.20gb@0")
    # Handed out in creation order, whatever the start slot.
    assert ids == {"3g.40gb@4": 1, "1g.10gb@3": 2, "2g.20gb@0": 3}
    backend.destroy_compute_instance(0, 1, 0)
    backend.destroy_gpu_instance(0, 1)
    # The driver reuses the lowest free id, for whatever is created next.
    assert backend.create_gpu_instance(0, profile_id(backend, "1g.10gb"), Placement(6, 1)) == 1
    assert backend.create_gpu_instance(0, profile_id(backend, "1g.10gb"), Placement(5, 1)) == 4


def test_compute_instances_are_full_and_numbered_per_gpu_instance() -> None:
    backend = fake(A100)
    gi_a = backend.create_gpu_instance(0, profile_id(backend, "3g.40gb"), Placement(4, 4))
    gi_b = backend.create_gpu_instance(0, profile_id(backend, "1g.10gb"), Placement(0, 1))
    assert backend.create_compute_instance(0, gi_a) == 0
    assert backend.create_compute_instance(0, gi_b) == 0
    # A full compute instance takes every slice: there is no room for a second one.
    with pytest.raises(BackendError) as excinfo:
        backend.create_compute_instance(0, gi_a)
    assert nvml_error(excinfo) is NvmlError.INSUFFICIENT_RESOURCES
    cis = {gi.gi_id: gi.compute_instances for gi in backend.list_gpu_instances(0)}
    # CI profile ids are the CI index constants: 3 slices -> 2, 1 slice -> 0.
    assert [ci.profile_id for ci in cis[gi_a]] == [2]
    assert [ci.profile_id for ci in cis[gi_b]] == [0]


def test_a_gpu_instance_without_compute_instance_has_no_mig_uuid() -> None:
    backend = fake(A100)
    build(backend, 0, "3g.40gb@4", compute=False)
    (gi,) = backend.list_gpu_instances(0)
    assert gi.compute_instances == ()
    assert backend.mig_uuids(0) == {}


def test_create_compute_instance_on_a_missing_gpu_instance_is_not_found() -> None:
    with pytest.raises(BackendError) as excinfo:
        fake().create_compute_instance(0, 5)
    assert nvml_error(excinfo) is NvmlError.NOT_FOUND


# ---------------------------------------------------------------------------- MIG UUIDs


def test_mig_uuids_have_the_real_form_and_follow_gpu_gi_and_ci_ids() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", mig_enabled=True)
    build(backend, 0, "3g.40gb@4", "3g.40gb@0")
    build(backend, 1, "3g.40gb@4")
    first = uuid_at(backend, 0, 4, 4)
    assert MIG_UUID.match(first)
    assert first != uuid_at(backend, 0, 0, 4)  # another GI id
    assert first != uuid_at(backend, 1, 4, 4)  # same ids, another GPU
    listed = {ci.uuid for gi in backend.list_gpu_instances(0) for ci in gi.compute_instances}
    assert listed == set(backend.mig_uuids(0).values())


def test_a_mig_uuid_repeats_when_the_driver_reuses_the_ids() -> None:
    backend = fake(A100)
    ids = build(backend, 0, "3g.40gb@4")
    before = uuid_at(backend, 0, 4, 4)
    backend.destroy_compute_instance(0, ids["3g.40gb@4"], 0)
    backend.destroy_gpu_instance(0, ids["3g.40gb@4"])
    # Same GI id and CI id (now at another placement): the same UUID, as on hardware.
    build(backend, 0, "3g.40gb@0")
    assert uuid_at(backend, 0, 0, 4) == before


# --------------------------------------------------------------------------- destroying


def test_destroying_a_gpu_instance_with_a_compute_instance_is_in_use() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4")
    with pytest.raises(BackendError) as excinfo:
        backend.destroy_gpu_instance(0, ids["3g.40gb@4"])
    assert nvml_error(excinfo) is NvmlError.IN_USE
    assert excinfo.value.call == "nvmlGpuInstanceDestroy"
    backend.destroy_compute_instance(0, ids["3g.40gb@4"], 0)
    backend.destroy_gpu_instance(0, ids["3g.40gb@4"])
    assert backend.placed_instances(0) == ()


def test_a_process_keeps_its_compute_and_gpu_instance() -> None:
    backend = fake()
    gi = build(backend, 0, "3g.40gb@4")["3g.40gb@4"]
    pid = backend.start_process(0, uuid_at(backend, 0, 4, 4), memory_mib=2048)
    for call in (
        lambda: backend.destroy_compute_instance(0, gi, 0),
        lambda: backend.destroy_gpu_instance(0, gi),
    ):
        with pytest.raises(BackendError) as excinfo:
            call()
        assert nvml_error(excinfo) is NvmlError.IN_USE
    assert len(backend.placed_instances(0)) == 1
    backend.stop_process(pid)
    backend.destroy_compute_instance(0, gi, 0)
    backend.destroy_gpu_instance(0, gi)


@pytest.mark.parametrize(
    "call",
    [lambda b: b.destroy_gpu_instance(0, 7), lambda b: b.destroy_compute_instance(0, 1, 3)],
    ids=["unknown GI", "unknown CI"],
)
def test_destroying_what_does_not_exist_is_not_found(call: Callable[[FakeBackend], object]) -> None:
    backend = fake()
    build(backend, 0, "3g.40gb@4")
    with pytest.raises(BackendError) as excinfo:
        call(backend)
    assert nvml_error(excinfo) is NvmlError.NOT_FOUND


# ---------------------------------------------------------------------------- processes


def test_processes_are_listed_with_their_gi_and_ci() -> None:
    backend = fake()
    ids = build(backend, 0, "3g.40gb@4", "2g.20gb@0")
    pid = backend.start_process(0, uuid_at(backend, 0, 4, 4), memory_mib=1234)
    (proc,) = backend.list_processes(0)
    assert (proc.pid, proc.used_memory_mib, proc.gi_id, proc.ci_id) == (
        pid,
        1234,
        ids["3g.40gb@4"],
        0,
    )
    backend.stop_process(pid)
    assert backend.list_processes(0) == []


def test_processes_run_on_mig_devices_with_mig_on_and_on_the_gpu_with_mig_off() -> None:
    on = fake()
    with pytest.raises(ValueError, match="MIG mode"):
        on.start_process(0, None)
    with pytest.raises(ValueError, match="no MIG device"):
        on.start_process(0, "MIG-00000000-0000-5000-8000-000000000000")
    off = fake(mig_enabled=False)
    pid = off.start_process(0, None)
    (proc,) = off.list_processes(0)
    assert (proc.pid, proc.gi_id, proc.ci_id) == (pid, None, None)


# ----------------------------------------------------------------------------- MIG mode


def test_set_mig_mode_on_an_idle_gpu_switches() -> None:
    backend = fake(mig_enabled=False)
    assert backend.set_mig_mode(0, True) == MigModeState(True, True)
    assert backend.get_mig_mode(0) == MigModeState(True, True)
    assert backend.set_mig_mode(0, False) == MigModeState(False, False)


def test_set_mig_mode_on_a_busy_gpu_returns_pending_instead_of_raising() -> None:
    backend = fake(mig_enabled=False)
    pid = backend.start_process(0, None)
    assert backend.set_mig_mode(0, True) == MigModeState(current=False, pending=True)
    assert backend.get_mig_mode(0).switching
    backend.stop_process(pid)
    assert backend.reset_gpu(0) == MigModeState(True, True)


def test_a_client_holding_the_gpu_keeps_the_switch_pending() -> None:
    backend = fake(mig_enabled=False)
    backend.hold_gpu(0)
    assert backend.set_mig_mode(0, True) == MigModeState(False, True)
    with pytest.raises(BackendError) as excinfo:
        backend.reset_gpu(0)
    assert nvml_error(excinfo) is NvmlError.IN_USE
    backend.hold_gpu(0, held=False)
    assert backend.set_mig_mode(0, True) == MigModeState(True, True)


def test_asking_for_the_current_mode_withdraws_a_pending_switch() -> None:
    backend = fake(mig_enabled=False)
    backend.start_process(0, None)
    backend.set_mig_mode(0, True)
    assert backend.set_mig_mode(0, False) == MigModeState(False, False)


def test_disabling_mig_with_instances_present_is_in_use() -> None:
    backend = fake()
    build(backend, 0, "1g.10gb@0")
    with pytest.raises(BackendError) as excinfo:
        backend.set_mig_mode(0, False)
    assert nvml_error(excinfo) is NvmlError.IN_USE
    assert backend.get_mig_mode(0) == MigModeState(True, True)


def test_without_auto_reset_every_switch_waits_for_a_reset() -> None:
    backend = fake(mig_enabled=False, auto_reset=False)
    assert backend.set_mig_mode(0, True) == MigModeState(False, True)  # idle, still pending
    assert backend.reset_gpu(0) == MigModeState(True, True)


def test_a_reset_destroys_every_instance() -> None:
    backend = fake()
    build(backend, 0, "3g.40gb@0", "1g.10gb@4")
    assert backend.reset_gpu(0) == MigModeState(True, True)
    assert backend.placed_instances(0) == ()
    assert backend.list_gpu_instances(0) == []


# ---------------------------------------------------------------------- latency, faults


def test_latency_is_slept_through_the_injected_sleep_per_call() -> None:
    slept: list[float] = []
    backend = fake(latency_s=0.25, sleep=slept.append)
    backend.list_gpus()
    backend.get_mig_mode(0)
    assert slept == [0.25, 0.25]
    per_call: list[float] = []
    backend = fake(latency_s={"create_gpu_instance": 2.0}, sleep=per_call.append)
    backend.get_mig_mode(0)
    build(backend, 0, "1g.10gb@0")
    assert per_call == [2.0]


@pytest.mark.parametrize(
    "name", ["create_gpu_instance", "nvmlDeviceCreateGpuInstanceWithPlacement"]
)
def test_fail_call_by_method_or_nvml_name_fails_the_next_calls(name: str) -> None:
    backend = fake()
    backend.fail_call(name, NvmlError.NO_PERMISSION, times=2)
    for _ in range(2):
        with pytest.raises(BackendError) as excinfo:
            backend.create_gpu_instance(0, 19, Placement(0, 1))
        assert nvml_error(excinfo) is NvmlError.NO_PERMISSION
        assert excinfo.value.call == "nvmlDeviceCreateGpuInstanceWithPlacement"
    assert backend.placed_instances(0) == ()  # failed before acting
    backend.create_gpu_instance(0, 19, Placement(0, 1))
    assert [(c.error, c.injected, c.took_effect) for c in backend.calls] == [
        ("NoPermission", True, False),
        ("NoPermission", True, False),
        (None, False, True),
    ]


def test_fail_call_can_fail_reads_too() -> None:
    backend = fake()
    backend.fail_call("list_processes", NvmlError.UNKNOWN)
    with pytest.raises(BackendError):
        backend.list_processes(0)
    assert backend.list_processes(0) == []


def test_fail_nth_call_counts_only_mutating_calls_from_now() -> None:
    backend = fake()
    build(backend, 0, "1g.10gb@0")
    backend.fail_nth_call(2, NvmlError.IN_USE)
    backend.list_gpu_instances(0)  # reads do not count
    backend.create_gpu_instance(0, 19, Placement(1, 1))  # 1st: fine
    with pytest.raises(BackendError) as excinfo:
        backend.create_gpu_instance(0, 19, Placement(2, 1))  # 2nd: fails, nothing created
    assert nvml_error(excinfo) is NvmlError.IN_USE
    assert backend.placed_instances(0) == placed(backend.table(0), "1g.10gb@0", "1g.10gb@1")
    backend.create_gpu_instance(0, 19, Placement(2, 1))  # a fault fires once


def test_a_fault_after_the_call_leaves_the_effect_in_place() -> None:
    backend = fake()
    backend.fail_nth_call(1, NvmlError.UNKNOWN, after=True)
    with pytest.raises(BackendError):
        backend.create_gpu_instance(0, 9, Placement(4, 4))
    # NVML did the work; the caller never learned the GI id.
    assert backend.placed_instances(0) == placed(backend.table(0), "3g.40gb@4")
    assert backend.calls[-1].injected
    assert backend.calls[-1].took_effect


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_a_simulated_crash_is_not_an_exception_the_agent_could_catch(after: bool) -> None:
    backend = fake()
    backend.crash_at_call(1, after=after)
    with pytest.raises(SimulatedCrash):
        backend.create_gpu_instance(0, 9, Placement(4, 4))
    assert not issubclass(SimulatedCrash, Exception)
    assert len(backend.placed_instances(0)) == (1 if after else 0)


def test_injected_faults_can_be_cleared_and_names_are_checked() -> None:
    backend = fake()
    backend.fail_nth_call(1, NvmlError.UNKNOWN)
    backend.clear_faults()
    backend.create_gpu_instance(0, 9, Placement(4, 4))
    with pytest.raises(ValueError, match="unknown call"):
        backend.fail_call("nvmlDeviceResetGpu", NvmlError.UNKNOWN)
    with pytest.raises(ValueError, match="counts from 1"):
        backend.fail_nth_call(0, NvmlError.UNKNOWN)


def test_the_call_log_names_methods_nvml_functions_and_arguments() -> None:
    backend = fake()
    gi = backend.create_gpu_instance(0, 9, Placement(4, 4))
    backend.create_compute_instance(0, gi)
    backend.get_mig_mode(0)
    assert [(c.name, c.nvml, c.args, c.mutating) for c in backend.calls] == [
        ("create_gpu_instance", NVML_CALLS["create_gpu_instance"], (0, 9, Placement(4, 4)), True),
        ("create_compute_instance", "nvmlGpuInstanceCreateComputeInstance", (0, gi), True),
        ("get_mig_mode", "nvmlDeviceGetMigMode", (0,), False),
    ]
    assert [c.name for c in backend.mutating_calls] == [
        "create_gpu_instance",
        "create_compute_instance",
    ]
    assert set(MUTATING_CALLS) <= set(NVML_CALLS)


def test_concurrent_calls_are_serialised() -> None:
    backend = fake()
    errors: list[NvmlError] = []
    barrier = threading.Barrier(14)

    def create(start: int) -> None:
        barrier.wait()
        try:
            gi = backend.create_gpu_instance(0, 19, Placement(start, 1))
            backend.create_compute_instance(0, gi)
        except BackendError as exc:
            errors.append(exc.error)

    # Two threads per slot: exactly one of each pair wins.
    threads = [threading.Thread(target=create, args=(s % 7,)) for s in range(14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [NvmlError.INSUFFICIENT_RESOURCES] * 7
    gis = backend.list_gpu_instances(0)
    assert sorted(gi.gi_id for gi in gis) == list(range(1, 8))
    assert not layout_problems(backend.table(0), backend.placed_instances(0))


# ----------------------------------------------------------------------- state file


def test_with_a_state_file_the_gpus_outlive_the_backend(tmp_path: Path) -> None:
    state = tmp_path / "gpus.json"
    first = fake(A30, A30, seed="n1", state_file=state)
    gi = first.create_gpu_instance(1, profile_id(first, "2g.12gb", 1), Placement(2, 2))
    first.create_compute_instance(1, gi)
    first.set_mig_mode(0, False)
    before = first.list_gpu_instances(1)

    again = fake(A30, A30, seed="n1", state_file=state)

    assert again.list_gpu_instances(1) == before
    assert again.get_mig_mode(0) == MigModeState(False, False)
    assert again.placed_instances(1) == first.placed_instances(1)
    history = json.loads(state.read_text())["history"]
    assert [h["call"] for h in history] == [
        "create_gpu_instance",
        "create_compute_instance",
        "set_mig_mode",
    ]
    assert history[0]["args"][2] == {"start": 2, "size": 2}


def test_a_refused_call_changes_nothing_in_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "gpus.json"
    backend = fake(A30, state_file=state)
    with pytest.raises(BackendError):
        backend.destroy_gpu_instance(0, 5)
    assert not state.exists()


@pytest.mark.parametrize(
    ("other", "fragment"),
    [
        pytest.param({"models": [A100]}, "describes other GPUs", id="another-model"),
        pytest.param({"seed": "n2"}, "describes other GPUs", id="another-node"),
    ],
)
def test_a_state_file_of_other_gpus_is_refused_with_its_name(
    tmp_path: Path, other: dict[str, Any], fragment: str
) -> None:
    state = tmp_path / "gpus.json"
    first = fake(A30, seed="n1", state_file=state)
    first.set_mig_mode(0, False)
    models = other.get("models", [A30])
    with pytest.raises(ValueError, match=fragment) as excinfo:
        fake(*models, seed=other.get("seed", "n1"), state_file=state)
    assert str(state) in str(excinfo.value)


def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "gpus.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match="fake GPU state file"):
        fake(A30, state_file=state)
