"""The NVML backend against a stub `pynvml` that checks arguments as the C library would.

The stub (`pynvml_stub.py`) simulates an A100-80GB, an H100 SXM and a GPU without MIG with
the real binding's structs, constants and exceptions. What matters most here: placements
reach NVML by reference, profile *ids* (not index constants) reach the placement and create
calls, GPU instances without a compute instance stay visible, and every NVML error becomes
a `BackendError` naming the NVML function.
"""

from __future__ import annotations

import ctypes.util
import re
from collections.abc import Callable, Iterator

import pynvml
import pytest

from migweaver.agent.backends.nvml import NvmlBackend
from migweaver.agent.backends.protocol import (
    BackendError,
    GpuBackend,
    GpuProcess,
    MigModeState,
    NvmlError,
    profile_table,
)
from migweaver.core.mig.catalog import get_model, match_model
from migweaver.core.mig.profiles import Placement
from tests.component.pynvml_stub import (
    CArgObject,
    PynvmlStub,
    StubMisuse,
    a100_80gb,
    h100_sxm,
    tesla_t4,
)

A100, H100, T4 = 0, 1, 2
MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Profile ids of the 8-slot GPUs (docs/mig-reference.md section 2).
ID_1G, ID_1G_ME, ID_1G_2X, ID_2G, ID_3G, ID_4G, ID_7G = 19, 20, 15, 14, 9, 5, 0


def make_stub(*, h100_mig: bool = True, **options: bool) -> PynvmlStub:
    return PynvmlStub([a100_80gb(), h100_sxm(mig=h100_mig), tesla_t4()], **options)


@pytest.fixture
def stub() -> PynvmlStub:
    return make_stub()


@pytest.fixture
def backend(stub: PynvmlStub) -> Iterator[NvmlBackend]:
    with NvmlBackend(stub) as opened:
        stub.calls.clear()  # tests look at the calls of the method under test only
        yield opened


def raised(call: Callable[[], object]) -> BackendError:
    with pytest.raises(BackendError) as info:
        call()
    return info.value


# -- lifecycle --------------------------------------------------------------------------


def test_backend_implements_the_protocol(backend: NvmlBackend) -> None:
    assert isinstance(backend, GpuBackend)


def test_context_manager_initializes_and_shuts_down_nvml(stub: PynvmlStub) -> None:
    with NvmlBackend(stub):
        assert stub.initialized
    assert stub.called() == ["nvmlInit", "nvmlShutdown"]
    assert not stub.initialized


@pytest.mark.parametrize(
    ("code", "error", "hint"),
    [
        (12, NvmlError.LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"),
        (9, NvmlError.DRIVER_NOT_LOADED, "kernel driver is not loaded"),
    ],
    ids=["no-library", "no-driver"],
)
def test_open_without_library_or_driver_explains_itself(
    stub: PynvmlStub, code: int, error: NvmlError, hint: str
) -> None:
    stub.init_error = code
    err = raised(NvmlBackend(stub).open)
    assert (err.call, err.error) == ("nvmlInit", error)
    assert hint in str(err)


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="NVML is installed")
def test_open_with_the_real_binding_and_no_driver_is_library_not_found() -> None:
    err = raised(NvmlBackend().open)  # the real pynvml: it imports without a driver
    assert (err.call, err.error) == ("nvmlInit", NvmlError.LIBRARY_NOT_FOUND)


def test_calls_before_open_are_uninitialized(stub: PynvmlStub) -> None:
    err = raised(NvmlBackend(stub).list_gpus)
    assert (err.call, err.error) == ("nvmlDeviceGetCount", NvmlError.UNINITIALIZED)


# -- GPUs and MIG mode ------------------------------------------------------------------


@pytest.mark.parametrize("legacy_binding", [False, True], ids=["str", "bytes"])
def test_list_gpus_reports_identity_memory_pci_id_and_mig_capability(legacy_binding: bool) -> None:
    stub = make_stub(h100_mig=False, legacy_binding=legacy_binding)
    with NvmlBackend(stub) as backend:
        gpus = backend.list_gpus()
    assert [(g.index, g.name, g.memory_mib, g.pci_device_id, g.mig_capable) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-80GB", 81920, 0x20B2, True),
        (1, "NVIDIA H100 80GB HBM3", 81559, 0x2330, True),  # capable, MIG off
        (2, "Tesla T4", 15360, 0x1EB8, False),  # GetMigMode: NotSupported
    ]
    assert [g.uuid for g in gpus] == [gpu.uuid for gpu in stub.gpus]
    assert all(isinstance(g.uuid, str) and g.uuid.startswith("GPU-") for g in gpus)
    assert [match_model(g.name, g.pci_device_id) for g in gpus] == [
        get_model("A100-SXM4-80GB"),
        get_model("H100-SXM5-80GB"),
        None,
    ]


def test_get_mig_mode_reads_current_and_pending() -> None:
    stub = make_stub(h100_mig=False)
    with NvmlBackend(stub) as backend:
        assert backend.get_mig_mode(A100) == MigModeState(current=True, pending=True)
        assert backend.get_mig_mode(H100) == MigModeState(current=False, pending=False)
        err = raised(lambda: backend.get_mig_mode(T4))
    assert (err.call, err.error) == ("nvmlDeviceGetMigMode", NvmlError.NOT_SUPPORTED)


def test_set_mig_mode_on_an_idle_gpu_switches_and_rereads_the_mode() -> None:
    stub = make_stub(h100_mig=False)
    with NvmlBackend(stub) as backend:
        stub.calls.clear()
        state = backend.set_mig_mode(H100, True)
    assert state == MigModeState(current=True, pending=True)
    assert stub.calls_to("nvmlDeviceSetMigMode")[0].args[1] == pynvml.NVML_DEVICE_MIG_ENABLE
    names = stub.called()
    assert names.index("nvmlDeviceGetMigMode") > names.index("nvmlDeviceSetMigMode")


@pytest.mark.parametrize("cause", ["process running", "reset required"])
def test_set_mig_mode_stays_pending_when_the_activation_status_says_so(cause: str) -> None:
    stub = make_stub(h100_mig=False)
    if cause == "process running":
        stub.start_process(H100, pid=4242)  # activation status NVML_ERROR_IN_USE
    else:
        stub.gpus[H100].reset_required = True  # activation status NVML_ERROR_RESET_REQUIRED
    with NvmlBackend(stub) as backend:
        state = backend.set_mig_mode(H100, True)  # returned, not raised
    assert state == MigModeState(current=False, pending=True)
    assert state.switching


def test_set_mig_mode_on_a_gpu_without_mig_is_not_supported(backend: NvmlBackend) -> None:
    err = raised(lambda: backend.set_mig_mode(T4, True))
    assert (err.call, err.error) == ("nvmlDeviceSetMigMode", NvmlError.NOT_SUPPORTED)


# -- profiles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "model"), [(A100, "A100-SXM4-80GB"), (H100, "H100-SXM5-80GB")], ids=["a100", "h100"]
)
def test_list_profiles_returns_what_nvml_reports(
    backend: NvmlBackend, gpu: int, model: str
) -> None:
    catalog = get_model(model)
    assert catalog is not None
    expected = sorted(
        (
            p.profile_id,
            p.index,
            p.name,
            p.compute_slices,
            p.memory_mib,
            p.max_count,
            p.placements,
            p.sm_count,
        )
        for p in catalog.profiles
    )
    profiles = backend.list_profiles(gpu)
    assert (
        sorted(
            (
                p.profile_id,
                p.index,
                p.name,
                p.slice_count,
                p.memory_mib,
                p.instance_count,
                p.placements,
                p.sm_count,
            )
            for p in profiles
        )
        == expected
    )
    assert not any(p.name.upper().startswith("MIG") for p in profiles)
    assert profile_table(profiles).memory_slots == 8


def test_list_profiles_looks_up_by_index_and_places_by_id(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    backend.list_profiles(A100)
    info_calls = stub.calls_to("nvmlDeviceGetGpuInstanceProfileInfo")
    # Every index constant is tried, with the v2 struct (it carries the profile name).
    assert [call.args[1] for call in info_calls] == list(
        range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)
    )
    assert {call.args[2] for call in info_calls} == {2}
    # The placement lookups take the ids the info returned: 15 for index 9, 0 for index 4.
    placement_ids = {
        call.args[1] for call in stub.calls_to("nvmlDeviceGetGpuInstancePossiblePlacements")
    }
    assert placement_ids == {ID_1G, ID_1G_ME, ID_1G_2X, ID_2G, ID_3G, ID_4G, ID_7G}
    by_id = {p.profile_id: p for p in backend.list_profiles(A100)}
    assert (by_id[ID_1G_2X].index, by_id[ID_1G_2X].name) == (9, "1g.20gb")
    assert (by_id[ID_7G].index, by_id[ID_7G].name) == (4, "7g.80gb")
    assert by_id[ID_1G_ME].placements == tuple(Placement(start, 1) for start in range(7))


def test_list_profiles_counts_placements_before_filling_them(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    backend.list_profiles(A100)
    calls = [
        c
        for c in stub.calls_to("nvmlDeviceGetGpuInstancePossiblePlacements")
        if c.args[1] == ID_1G_ME
    ]
    # nvml.h: a NULL array asks for the count; 1g+me has 1 instance but 7 placements.
    assert calls[0].args[2] is None
    assert isinstance(calls[0].args[3], CArgObject)
    assert len(calls[1].args[2]) == 7


def test_list_profiles_keeps_one_profile_per_id(stub: PynvmlStub, backend: NvmlBackend) -> None:
    stub.gpus[A100].alias_indexes = {13: ID_1G}  # 1_SLICE_NO_ME answering with id 19
    profiles = backend.list_profiles(A100)
    assert [p.index for p in profiles if p.profile_id == ID_1G] == [0]
    assert len(profiles) == 7


A100_NAMES = {
    ID_1G: "1g.10gb", ID_1G_ME: "1g.10gb+me", ID_1G_2X: "1g.20gb", ID_2G: "2g.20gb",
    ID_3G: "3g.40gb", ID_4G: "4g.40gb", ID_7G: "7g.80gb",
}  # fmt: skip


def test_list_profiles_falls_back_to_v1_info_on_an_old_binding() -> None:
    stub = make_stub(legacy_binding=True)
    with NvmlBackend(stub) as backend:
        names = {p.profile_id: p.name for p in backend.list_profiles(A100)}
    # The old signature takes two arguments; the v1 struct has no name, so the catalog's
    # name of the same profile id is taken (what `nvidia-smi mig -lgip` prints).
    assert {len(call.args) for call in stub.calls_to("nvmlDeviceGetGpuInstanceProfileInfo")} == {2}
    assert names == A100_NAMES


def test_a_driver_without_v2_profile_info_is_asked_for_v1_once() -> None:
    # A real H200 (driver 580.159.04) answered FUNCTION_NOT_FOUND to the v2 entry point.
    stub = make_stub(v2_profile_info=False)
    with NvmlBackend(stub) as backend:
        names = {p.profile_id: p.name for p in backend.list_profiles(A100)}
        backend.list_profiles(H100)
    versions = [call.args[2:] for call in stub.calls_to("nvmlDeviceGetGpuInstanceProfileInfo")]
    assert versions[0] == (2,)
    assert versions[1:] == [(1,)] * (len(versions) - 1)
    assert names == A100_NAMES


def test_v1_names_of_a_model_the_catalog_does_not_know_are_derived_from_the_sizes() -> None:
    stub = make_stub(legacy_binding=True)
    stub.gpus[A100].pci_device_id = (0x1234 << 16) | 0x10DE
    stub.gpus[A100].name = "NVIDIA Future GPU"
    with NvmlBackend(stub) as backend:
        names = {p.profile_id: p.name for p in backend.list_profiles(A100)}
    assert names[ID_7G] == "7g.79gb"  # 80896 MiB rounded up to GiB
    assert names[ID_1G_ME] == "1g.10gb+me"


def test_list_profiles_answers_with_mig_disabled() -> None:
    # As a real H200 does with MIG off: the table is known before MIG is switched on.
    with NvmlBackend(make_stub(h100_mig=False)) as backend:
        profiles = backend.list_profiles(H100)
    assert {p.profile_id for p in profiles} == set(A100_NAMES)
    assert {p.name for p in profiles} >= {"1g.10gb", "7g.80gb"}


# -- creating instances -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile_id", "index", "placement"),
    [
        (ID_1G_2X, 9, Placement(2, 2)),  # index 9 is the id of 3g: the classic mix-up
        (ID_7G, 4, Placement(0, 8)),  # index 4 is no id at all
        (ID_3G, 2, Placement(4, 4)),
    ],
    ids=["1g-double-at-2", "7g-at-0", "3g-at-4"],
)
def test_create_gpu_instance_passes_the_profile_id_and_the_placement_by_reference(
    stub: PynvmlStub, backend: NvmlBackend, profile_id: int, index: int, placement: Placement
) -> None:
    gi_id = backend.create_gpu_instance(A100, profile_id, placement)

    (call,) = stub.calls_to("nvmlDeviceCreateGpuInstanceWithPlacement")
    assert call.args[1] == profile_id != index
    assert isinstance(call.args[2], CArgObject)
    struct = call.args[2]._obj
    assert isinstance(struct, pynvml.c_nvmlGpuInstancePlacement_t)
    assert (struct.start, struct.size) == (placement.start, placement.size)
    assert "nvmlDeviceCreateGpuInstance" not in stub.called()
    (gi,) = backend.list_gpu_instances(A100)
    assert (gi.gi_id, gi.profile_id, gi.placement) == (gi_id, profile_id, placement)


def test_an_index_where_an_id_belongs_is_rejected_like_nvml_does(backend: NvmlBackend) -> None:
    # 1g double memory has index 9, but id 9 is 3g, whose placements are 4 slots wide.
    err = raised(lambda: backend.create_gpu_instance(A100, 9, Placement(0, 2)))
    assert (err.call, err.error) == (
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        NvmlError.INVALID_ARGUMENT,
    )
    # 7g has index 4, and there is no profile id 4 at all.
    err = raised(lambda: backend.create_gpu_instance(A100, 4, Placement(0, 8)))
    assert err.error is NvmlError.INVALID_ARGUMENT


def test_create_gpu_instance_errors_name_the_gpu_profile_and_placement(
    backend: NvmlBackend,
) -> None:
    backend.create_gpu_instance(A100, ID_3G, Placement(0, 4))
    err = raised(lambda: backend.create_gpu_instance(A100, ID_2G, Placement(2, 2)))  # overlaps
    assert (err.call, err.error) == (
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        NvmlError.INSUFFICIENT_RESOURCES,
    )
    assert "GPU 0 profile id 14 at 2:2" in str(err)
    err = raised(
        lambda: backend.create_gpu_instance(A100, ID_3G, Placement(2, 4))
    )  # not a placement
    assert err.error is NvmlError.INVALID_ARGUMENT


def test_create_gpu_instance_with_mig_disabled_is_not_supported() -> None:
    with NvmlBackend(make_stub(h100_mig=False)) as backend:
        err = raised(lambda: backend.create_gpu_instance(H100, ID_1G, Placement(0, 1)))
    assert err.error is NvmlError.NOT_SUPPORTED


@pytest.mark.parametrize(
    ("profile_id", "placement", "ci_profile_id"),
    [
        (ID_1G, Placement(3, 1), 0),
        (ID_1G_2X, Placement(6, 2), 0),
        (ID_2G, Placement(2, 2), 1),
        (ID_3G, Placement(4, 4), 2),
        (ID_4G, Placement(0, 4), 3),
        (ID_7G, Placement(0, 8), 4),
    ],
    ids=["1g", "1g-double", "2g", "3g", "4g", "7g"],
)
def test_create_compute_instance_creates_the_ci_spanning_the_whole_gi(
    stub: PynvmlStub,
    backend: NvmlBackend,
    profile_id: int,
    placement: Placement,
    ci_profile_id: int,
) -> None:
    gi_id = backend.create_gpu_instance(H100, profile_id, placement)
    ci_id = backend.create_compute_instance(H100, gi_id)

    (call,) = stub.calls_to("nvmlGpuInstanceCreateComputeInstance")
    assert isinstance(call.args[0], pynvml.c_nvmlGpuInstance_t)
    assert call.args[1] == ci_profile_id
    shared = pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
    assert {c.args[2] for c in stub.calls_to("nvmlGpuInstanceGetComputeInstanceProfileInfo")} == {
        shared
    }
    (gi,) = backend.list_gpu_instances(H100)
    (ci,) = gi.compute_instances
    assert (ci.ci_id, ci.profile_id) == (ci_id, ci_profile_id)
    assert ci.uuid == stub.mig_uuid(H100, gi_id, ci_id)
    assert ci.uuid is not None
    assert MIG_UUID.match(ci.uuid)


# -- listing and destroying -------------------------------------------------------------


def test_list_gpu_instances_shows_a_gi_without_ci_and_without_uuid(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    complete = stub.add_instance(A100, ID_3G, Placement(0, 4))
    orphan = stub.add_instance(A100, ID_1G, Placement(5, 1), with_ci=False)

    first, second = backend.list_gpu_instances(A100)
    assert (first.gi_id, first.profile_id, first.placement) == (complete, ID_3G, Placement(0, 4))
    assert [(ci.ci_id, ci.profile_id, ci.uuid) for ci in first.compute_instances] == [
        (0, 2, stub.mig_uuid(A100, complete, 0))
    ]
    assert (second.gi_id, second.profile_id, second.placement) == (orphan, ID_1G, Placement(5, 1))
    assert second.compute_instances == ()


def test_mig_uuids_are_matched_by_gi_and_ci_ids_across_empty_slots(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    gi_ids = [stub.add_instance(A100, ID_1G, Placement(start, 1)) for start in range(3)]
    backend.destroy_compute_instance(A100, gi_ids[0], 0)  # MIG device slot 0 is now empty
    stub.calls.clear()

    instances = backend.list_gpu_instances(A100)

    assert [gi.gi_id for gi in instances] == gi_ids
    assert instances[0].compute_instances == ()
    assert [gi.compute_instances[0].uuid for gi in instances[1:]] == [
        stub.mig_uuid(A100, gi_id, 0) for gi_id in gi_ids[1:]
    ]
    assert [c.args[1] for c in stub.calls_to("nvmlDeviceGetMigDeviceHandleByIndex")] == list(
        range(7)
    )


def test_list_gpu_instances_with_mig_disabled_is_empty() -> None:
    with NvmlBackend(make_stub(h100_mig=False)) as backend:
        assert backend.list_gpu_instances(H100) == []


def test_destroy_compute_instance_first_then_gpu_instance(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    gi_id = stub.add_instance(A100, ID_2G, Placement(4, 2))

    err = raised(lambda: backend.destroy_gpu_instance(A100, gi_id))
    assert (err.call, err.error) == ("nvmlGpuInstanceDestroy", NvmlError.IN_USE)
    backend.destroy_compute_instance(A100, gi_id, 0)
    backend.destroy_gpu_instance(A100, gi_id)

    assert backend.list_gpu_instances(A100) == []
    destroys = [
        n for n in stub.called() if n in ("nvmlComputeInstanceDestroy", "nvmlGpuInstanceDestroy")
    ]
    assert destroys == [
        "nvmlGpuInstanceDestroy",
        "nvmlComputeInstanceDestroy",
        "nvmlGpuInstanceDestroy",
    ]


def test_a_gi_left_without_ci_can_be_completed_or_destroyed(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    completed = stub.add_instance(A100, ID_3G, Placement(0, 4), with_ci=False)
    destroyed = stub.add_instance(A100, ID_3G, Placement(4, 4), with_ci=False)

    assert backend.create_compute_instance(A100, completed) == 0
    backend.destroy_gpu_instance(A100, destroyed)

    (gi,) = backend.list_gpu_instances(A100)
    assert gi.gi_id == completed
    assert gi.compute_instances[0].uuid == stub.mig_uuid(A100, completed, 0)


def test_destroying_a_compute_instance_with_a_process_is_in_use(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    gi_id = stub.add_instance(A100, ID_3G, Placement(0, 4))
    stub.start_process(A100, pid=4242, gi_id=gi_id, ci_id=0)
    err = raised(lambda: backend.destroy_compute_instance(A100, gi_id, 0))
    assert (err.call, err.error) == ("nvmlComputeInstanceDestroy", NvmlError.IN_USE)
    assert f"GPU 0 GI {gi_id} CI 0" in str(err)


def test_destroying_missing_instances_is_not_found(stub: PynvmlStub, backend: NvmlBackend) -> None:
    gi_id = stub.add_instance(A100, ID_3G, Placement(0, 4))
    err = raised(lambda: backend.destroy_gpu_instance(A100, 42))
    assert (err.call, err.error) == ("nvmlDeviceGetGpuInstances", NvmlError.NOT_FOUND)
    err = raised(lambda: backend.destroy_compute_instance(A100, gi_id, 5))
    assert (err.call, err.error) == ("nvmlGpuInstanceGetComputeInstances", NvmlError.NOT_FOUND)
    err = raised(lambda: backend.create_compute_instance(A100, 42))
    assert err.error is NvmlError.NOT_FOUND


# -- processes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parent_processes_visible", [True, False], ids=["privileged", "unprivileged"]
)
def test_list_processes_reports_each_mig_device_with_its_ids(
    parent_processes_visible: bool,
) -> None:
    stub = make_stub(parent_processes_visible=parent_processes_visible)
    three = stub.add_instance(A100, ID_3G, Placement(0, 4))
    two = stub.add_instance(A100, ID_2G, Placement(4, 2))
    stub.start_process(A100, pid=200, used_mib=512, gi_id=two, ci_id=0)
    stub.start_process(A100, pid=100, used_mib=2048, gi_id=three, ci_id=0)
    with NvmlBackend(stub) as backend:
        stub.calls.clear()
        processes = backend.list_processes(A100)

    assert processes == [GpuProcess(100, 2048, three, 0), GpuProcess(200, 512, two, 0)]
    # The GPU handle, then each of the two MIG device handles.
    assert len(stub.calls_to("nvmlDeviceGetComputeRunningProcesses")) == 3


def test_list_processes_without_mig_has_no_instance_ids(
    stub: PynvmlStub, backend: NvmlBackend
) -> None:
    stub.start_process(T4, pid=7, used_mib=300)
    assert backend.list_processes(T4) == [GpuProcess(7, 300, None, None)]
    assert "nvmlDeviceGetMaxMigDeviceCount" not in stub.called()


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (1, NvmlError.UNINITIALIZED),
        (2, NvmlError.INVALID_ARGUMENT),
        (3, NvmlError.NOT_SUPPORTED),
        (4, NvmlError.NO_PERMISSION),
        (6, NvmlError.NOT_FOUND),
        (7, NvmlError.INSUFFICIENT_SIZE),
        (9, NvmlError.DRIVER_NOT_LOADED),
        (10, NvmlError.TIMEOUT),
        (12, NvmlError.LIBRARY_NOT_FOUND),
        (15, NvmlError.GPU_IS_LOST),
        (16, NvmlError.RESET_REQUIRED),
        (19, NvmlError.IN_USE),
        (23, NvmlError.INSUFFICIENT_RESOURCES),
        (5, NvmlError.UNKNOWN),  # ALREADY_INITIALIZED
        (13, NvmlError.FUNCTION_NOT_FOUND),
        (999, NvmlError.UNKNOWN),
    ],
    ids=[
        "uninitialized",
        "invalid-argument",
        "not-supported",
        "no-permission",
        "not-found",
        "insufficient-size",
        "driver-not-loaded",
        "timeout",
        "library-not-found",
        "gpu-is-lost",
        "reset-required",
        "in-use",
        "insufficient-resources",
        "already-initialized-is-unknown",
        "function-not-found-is-unknown",
        "unlisted-code-is-unknown",
    ],
)
def test_every_nvml_error_code_maps_to_its_nvml_error(
    stub: PynvmlStub, backend: NvmlBackend, code: int, error: NvmlError
) -> None:
    stub.fail("nvmlDeviceGetCount", code)
    err = raised(backend.list_gpus)
    assert (err.call, err.error) == ("nvmlDeviceGetCount", error)
    assert str(err).startswith(f"nvmlDeviceGetCount: NVML_ERROR_{error.name}")
    assert isinstance(err.__cause__, pynvml.NVMLError)


def _populated_stub() -> tuple[PynvmlStub, dict[str, int]]:
    stub = make_stub()
    ids = {
        "busy": stub.add_instance(A100, ID_3G, Placement(0, 4)),
        "idle": stub.add_instance(A100, ID_2G, Placement(4, 2)),
        "orphan": stub.add_instance(A100, ID_1G, Placement(6, 1), with_ci=False),
    }
    stub.start_process(A100, pid=4242, gi_id=ids["busy"], ci_id=0)
    return stub, ids


SCENARIOS: dict[str, Callable[[NvmlBackend, dict[str, int]], object]] = {
    "list_gpus": lambda b, ids: b.list_gpus(),
    "get_mig_mode": lambda b, ids: b.get_mig_mode(A100),
    "set_mig_mode": lambda b, ids: b.set_mig_mode(A100, False),
    "list_profiles": lambda b, ids: b.list_profiles(A100),
    "list_gpu_instances": lambda b, ids: b.list_gpu_instances(A100),
    "create_gpu_instance": lambda b, ids: b.create_gpu_instance(H100, ID_3G, Placement(4, 4)),
    "create_compute_instance": lambda b, ids: b.create_compute_instance(A100, ids["orphan"]),
    "destroy_compute_instance": lambda b, ids: b.destroy_compute_instance(A100, ids["idle"], 0),
    "destroy_gpu_instance": lambda b, ids: b.destroy_gpu_instance(A100, ids["orphan"]),
    "list_processes": lambda b, ids: b.list_processes(A100),
}


@pytest.mark.parametrize("method", list(SCENARIOS))
def test_a_failure_of_any_nvml_call_of_any_method_is_a_backend_error(method: str) -> None:
    stub, ids = _populated_stub()
    with NvmlBackend(stub) as backend:
        stub.calls.clear()
        SCENARIOS[method](backend, ids)  # succeeds; records which NVML calls the method makes
    names = sorted(set(stub.called()) - {"nvmlShutdown"})
    assert names

    for name in names:
        stub, ids = _populated_stub()
        stub.fail(name, pynvml.NVML_ERROR_GPU_IS_LOST)  # no method skips this error
        with NvmlBackend(stub) as backend:
            err = raised(lambda: SCENARIOS[method](backend, ids))  # noqa: B023
        assert (err.call, err.error) == (name, NvmlError.GPU_IS_LOST), name


# -- the stub itself rejects what the C library would misread ---------------------------


def test_stub_rejects_a_placement_passed_by_value_or_as_a_tuple(stub: PynvmlStub) -> None:
    stub.nvmlInit()
    device = stub.nvmlDeviceGetHandleByIndex(A100)
    with pytest.raises(StubMisuse):
        stub.nvmlDeviceCreateGpuInstanceWithPlacement(
            device, ID_1G_2X, pynvml.c_nvmlGpuInstancePlacement_t(0, 2)
        )
    with pytest.raises(StubMisuse):
        stub.nvmlDeviceCreateGpuInstanceWithPlacement(device, ID_1G_2X, (0, 2))
    with pytest.raises(StubMisuse):
        stub.nvmlDeviceCreateGpuInstanceWithPlacement(device, Placement(0, 2), None)
    assert stub.gpus[A100].gis == {}


def test_stub_rejects_an_array_too_small_for_the_profile(stub: PynvmlStub) -> None:
    stub.nvmlInit()
    device = stub.nvmlDeviceGetHandleByIndex(A100)
    count = pynvml.c_uint(1)
    with pytest.raises(StubMisuse):  # 1g allows 7 instances: NVML may write 7 handles
        stub.nvmlDeviceGetGpuInstances(
            device, ID_1G, (pynvml.c_nvmlGpuInstance_t * 1)(), pynvml.byref(count)
        )
