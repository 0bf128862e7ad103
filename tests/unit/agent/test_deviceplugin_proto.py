"""The checked-in device plugin API code is what `make proto` makes from api.proto, and it
speaks the kubelet's v1beta1 wire contract (service paths, field numbers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from migweaver.agent.deviceplugin import api_pb2

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = Path("migweaver/agent/deviceplugin")
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    (tmp_path / PACKAGE).mkdir(parents=True)
    shutil.copy(ROOT / PACKAGE / "api.proto", tmp_path / PACKAGE / "api.proto")
    # The same command as `make proto`, run from a copy of the repository's layout.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            str(PACKAGE / "api.proto"),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        checked_in = (ROOT / PACKAGE / name).read_text()
        assert fresh == checked_in, f"{PACKAGE / name} is stale: run `make proto`"


def test_services_have_the_kubelets_method_paths() -> None:
    services = {s.full_name: s for s in api_pb2.DESCRIPTOR.services_by_name.values()}
    assert sorted(services) == ["v1beta1.DevicePlugin", "v1beta1.Registration"]
    assert [m.name for m in services["v1beta1.Registration"].methods] == ["Register"]
    plugin = {m.name: m for m in services["v1beta1.DevicePlugin"].methods}
    assert sorted(plugin) == [
        "Allocate",
        "GetDevicePluginOptions",
        "GetPreferredAllocation",
        "ListAndWatch",
        "PreStartContainer",
    ]
    assert plugin["ListAndWatch"].server_streaming
    assert plugin["Allocate"].input_type.full_name == "v1beta1.AllocateRequest"


def fields(message: str) -> dict[str, int]:
    descriptor = api_pb2.DESCRIPTOR.message_types_by_name[message]
    return {f.name: f.number for f in descriptor.fields}


def test_messages_have_the_kubelets_field_numbers() -> None:
    assert fields("RegisterRequest") == {
        "version": 1,
        "endpoint": 2,
        "resource_name": 3,
        "options": 4,
    }
    assert fields("DevicePluginOptions") == {
        "pre_start_required": 1,
        "get_preferred_allocation_available": 2,
    }
    assert fields("Device") == {"ID": 1, "health": 2, "topology": 3}
    assert fields("ContainerAllocateRequest") == {"devices_ids": 1}
    assert fields("ContainerAllocateResponse") == {
        "envs": 1,
        "mounts": 2,
        "devices": 3,
        "annotations": 4,
        "cdi_devices": 5,
    }
    assert fields("CDIDevice") == {"name": 1}
    assert fields("ContainerPreferredAllocationRequest") == {
        "available_deviceIDs": 1,
        "must_include_deviceIDs": 2,
        "allocation_size": 3,
    }
