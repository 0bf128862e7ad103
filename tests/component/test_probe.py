"""`migweaver probe` and NVML recordings: read-only, faithful, and replayable.

The H200 fixture is transcribed from a real read-only session (see its `source` and
docs/agent.md), not a raw recording; a raw recording from `probe --record` replaces it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from migweaver.agent.backends.nvml import NvmlBackend
from migweaver.agent.backends.nvml_record import (
    MUTATING_CALLS,
    READ_ONLY_CALLS,
    ReadOnlyNvml,
    RefusedCall,
)
from migweaver.agent.backends.protocol import profile_table
from migweaver.agent.probe import probe_nvml, render_json, render_text
from migweaver.agent.reconciler import GpuObservation, ReconcileResult
from migweaver.agent.status import catalog_condition, layout_status
from migweaver.cli import cmd_probe, main
from migweaver.core.mig.catalog import get_model, match_model
from migweaver.core.mig.catalog_check import catalog_mismatches
from migweaver.core.mig.profiles import Placement, ProfileTable
from tests.component.nvml_replay import NvmlReplay, ReplayRefused, load
from tests.component.pynvml_stub import PynvmlStub, a100_80gb, h100_sxm, tesla_t4

H200_FIXTURE = "h200-transcribed.json"
ID_3G, ID_2G = 9, 14


def busy_stub() -> PynvmlStub:
    """An A100 in MIG mode with instances and a process, an H100 with MIG off, a T4."""
    stub = PynvmlStub([a100_80gb(), h100_sxm(mig=False), tesla_t4()])
    gi = stub.add_instance(0, ID_3G, Placement(0, 4))
    stub.add_instance(0, ID_2G, Placement(4, 2))
    stub.add_instance(0, 19, Placement(6, 1), with_ci=False)
    stub.start_process(0, pid=4242, used_mib=2048, gi_id=gi, ci_id=0)
    stub.start_process(1, pid=77, used_mib=512)
    return stub


def probe_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="nvml")
    parser.add_argument("--fake-gpus", default="")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record")
    return parser.parse_args(list(extra))


# -- read-only ---------------------------------------------------------------------------


def test_the_probe_and_its_recording_call_no_mutating_nvml_function(tmp_path: Path) -> None:
    stub = busy_stub()
    assert cmd_probe(probe_args("--record", str(tmp_path / "r.json")), nvml=stub) == 0
    assert cmd_probe(probe_args("--json"), nvml=stub) == 0
    called = set(stub.called())
    assert called <= READ_ONLY_CALLS, called - READ_ONLY_CALLS
    assert not called & MUTATING_CALLS
    # ...and it did ask the questions that matter: instances, MIG devices, processes.
    assert {"nvmlDeviceGetGpuInstances", "nvmlDeviceGetMigDeviceHandleByIndex"} <= called
    assert "nvmlDeviceGetComputeRunningProcesses" in called


@pytest.mark.parametrize("name", sorted(MUTATING_CALLS & set(dir(PynvmlStub))))
def test_read_only_nvml_refuses_every_mutating_function_before_the_driver_sees_it(
    name: str,
) -> None:
    stub = busy_stub()
    with pytest.raises(RefusedCall):
        getattr(ReadOnlyNvml(stub), name)
    assert stub.calls == []


def test_read_only_nvml_passes_constants_and_structures() -> None:
    nvml = ReadOnlyNvml(busy_stub())
    assert nvml.NVML_DEVICE_MIG_ENABLE == 1
    assert nvml.c_nvmlGpuInstancePlacement_t(0, 4).size == 4


# -- the probe's report ------------------------------------------------------------------


def test_probe_on_the_fake_backend_prints_nvml_beside_the_catalog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["probe", "--backend", "fake", "--fake-gpus", "H200-141GB:1"]) == 0
    text = capsys.readouterr().out
    assert "PCI device id 0x2335; catalog entry: H200-141GB" in text
    assert "MIG mode: current Disabled, pending Disabled" in text
    assert "catalog differences: none" in text
    for name in ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"):
        assert f" {name} " in text


def test_probe_json_on_the_fake_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--backend", "fake", "--fake-gpus", "A100-SXM4-80GB:2", "--json"]) == 0
    gpus = json.loads(capsys.readouterr().out)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["catalog"]["model"] == "A100-SXM4-80GB"
    assert gpus[0]["differences"] == []
    assert {p["name"] for p in gpus[0]["profiles"]} >= {"1g.10gb", "7g.80gb"}


def test_probe_marks_where_nvml_and_the_catalog_differ() -> None:
    stub = busy_stub()
    stub.gpus[0].profiles = tuple(
        replace(p, memory_mib=40000) if p.profile_id == ID_3G else p for p in stub.gpus[0].profiles
    )
    reports = probe_nvml(stub)
    text = render_text(reports)
    assert "40000 *(40192)" in text
    assert "catalog differences: 1" in text
    (difference,) = render_json(reports)[0]["differences"]
    assert difference == {
        "profileId": ID_3G,
        "profile": "3g.40gb",
        "field": "memory MiB",
        "nvml": "40000",
        "catalog": "40192",
    }


def test_probe_reports_instances_processes_and_gpus_without_mig() -> None:
    stub = busy_stub()
    gpus = render_json(probe_nvml(stub))
    a100, h100, t4 = gpus
    assert [gi["placement"] for gi in a100["instances"]] == [[0, 4], [4, 2], [6, 1]]
    assert a100["instances"][2]["computeInstances"] == []  # a GI left without its CI
    assert a100["processes"] == [
        {"pid": 4242, "usedMemoryMiB": 2048, "gpuInstanceId": 1, "computeInstanceId": 0}
    ]
    assert h100["migMode"] == {"current": False, "pending": False}
    assert len(h100["profiles"]) == 7  # NVML lists them with MIG off
    assert t4["migCapable"] is False
    assert t4["catalog"] is None


# -- recordings replayed -----------------------------------------------------------------


def _backend_view(nvml: Any) -> dict[str, Any]:
    """What NvmlBackend makes of an NVML, through every read method."""
    with NvmlBackend(nvml) as backend:
        gpus = backend.list_gpus()
        view: dict[str, Any] = {"gpus": gpus}
        for gpu in gpus:
            if gpu.mig_capable:
                view[f"{gpu.index}/mode"] = backend.get_mig_mode(gpu.index)
                view[f"{gpu.index}/profiles"] = backend.list_profiles(gpu.index)
                view[f"{gpu.index}/instances"] = backend.list_gpu_instances(gpu.index)
            view[f"{gpu.index}/processes"] = backend.list_processes(gpu.index)
    return view


def test_a_recording_replays_to_the_same_backend_view(tmp_path: Path) -> None:
    stub = busy_stub()
    path = tmp_path / "recording.json"
    assert cmd_probe(probe_args("--record", str(path)), nvml=stub) == 0
    recording = json.loads(path.read_text())

    assert _backend_view(NvmlReplay(recording)) == _backend_view(busy_stub())
    assert render_json(probe_nvml(NvmlReplay(recording))) == render_json(probe_nvml(busy_stub()))


def test_a_replay_refuses_to_change_anything() -> None:
    replay = NvmlReplay(load(H200_FIXTURE))
    with NvmlBackend(replay) as backend, pytest.raises(ReplayRefused):
        backend.set_mig_mode(0, True)


def test_the_h200_recording_through_nvml_backend_and_the_catalog_has_no_difference() -> None:
    replay = NvmlReplay(load(H200_FIXTURE))
    with NvmlBackend(replay) as backend:
        (gpu,) = backend.list_gpus()
        mode = backend.get_mig_mode(0)
        profiles = backend.list_profiles(0)
    assert (gpu.name, gpu.memory_mib, gpu.pci_device_id) == ("NVIDIA H200", 143771, 0x2335)
    assert (mode.current, mode.pending) == (False, False)  # profiles answered with MIG off
    model = match_model(gpu.name, gpu.pci_device_id)
    assert model is not None
    assert model.key == "H200-141GB"
    assert catalog_mismatches(profile_table(profiles), model.table) == ()
    assert {p.profile_id: p.name for p in profiles} == {
        19: "1g.18gb", 20: "1g.18gb+me", 15: "1g.35gb", 14: "2g.35gb",
        9: "3g.71gb", 5: "4g.71gb", 0: "7g.141gb",
    }  # fmt: skip
    # v2 answered FUNCTION_NOT_FOUND once; every later question was v1.
    versions = [c.args[2] for c in replay.calls if c.name == "nvmlDeviceGetGpuInstanceProfileInfo"]
    assert versions[0] == 2
    assert set(versions[1:]) == {1}


def test_an_altered_catalog_entry_against_the_h200_recording_is_the_mismatch_condition() -> None:
    h200 = get_model("H200-141GB")
    assert h200 is not None
    # The figure the catalog had before the H200 was read: 33024 MiB for 2g.35gb.
    wrong = ProfileTable(
        h200.table.memory_slots,
        tuple(
            replace(p, memory_mib=33024) if p.profile_id == ID_2G else p
            for p in h200.table.profiles
        ),
    )
    with NvmlBackend(NvmlReplay(load(H200_FIXTURE))) as backend:
        (gpu,) = backend.list_gpus()
        observation = GpuObservation(
            device=gpu,
            mig_mode=backend.get_mig_mode(0),
            profiles=tuple(backend.list_profiles(0)),
            instances=(),
            fallback_table=wrong,
        )
    condition = catalog_condition(observation)
    assert condition is not None
    assert (condition.type, condition.status) == ("CatalogMismatch", "True")
    assert "2g.35gb (id 14) memory MiB: NVML 33280, catalog 33024" in condition.message
    result = ReconcileResult(gpu=0, phase="Ready", conditions=(), observation=observation)
    status = layout_status(result, generation=1, now="2026-01-01T00:00:00Z")
    assert [c.type for c in status.conditions] == ["CatalogMismatch"]
    assert {p.id: p.memory_mib for p in status.profiles}[ID_2G] == 33280  # NVML's figure


def test_the_h200_fixture_says_it_is_transcribed() -> None:
    assert load(H200_FIXTURE)["source"].startswith("TRANSCRIBED, not a raw recording")
