"""The CDI spec the agent keeps: exactly the GPUs and MIG instances that exist, valid CDI.

A fake `/proc` (the driver's MIG minors) and `/dev` tree stand in for the host; the GPUs
are the fake backend's, changed through MigLayouts as the operator would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.cdi import SPEC_FILE, CdiSpecWriter, cdi_gpus
from migweaver.agent.node_agent import NodeAgent
from migweaver.core.agent.cdi import CdiGpu, CdiInstance, cdi_spec, parse_mig_minors
from tests import builders
from tests.component.memory_api import MemoryEvents, MemoryNodes, MemoryObjects

NODE = "n1"
SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "cdi-spec.schema.json").read_text())
# The driver's mig-minors file lists every capability a GPU can have (GI ids 0-14, CI ids
# 0-7), not only those in use; minors are handed out in that order after config/monitor.
MAX_GI, MAX_CI = 15, 8


def mig_minors(gpus: int) -> list[tuple[str, int]]:
    lines = [("config", 1), ("monitor", 2)]
    minor = 3
    for gpu in range(gpus):
        for gi in range(MAX_GI):
            lines.append((f"gpu{gpu}/gi{gi}/access", minor))
            minor += 1
            for ci in range(MAX_CI):
                lines.append((f"gpu{gpu}/gi{gi}/ci{ci}/access", minor))
                minor += 1
    return lines


def host_tree(root: Path, gpus: int) -> tuple[Path, Path]:
    """A fake /proc and /dev: the MIG minors file and a node for every device."""
    proc, dev = root / "proc", root / "host"
    caps = proc / "driver" / "nvidia-caps"
    caps.mkdir(parents=True)
    minors = mig_minors(gpus)
    caps.joinpath("mig-minors").write_text("".join(f"{cap} {m}\n" for cap, m in minors))
    (dev / "dev" / "nvidia-caps").mkdir(parents=True)
    for name in (
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        *(f"nvidia{g}" for g in range(gpus)),
    ):
        (dev / "dev" / name).touch()
    for _, minor in minors:
        (dev / "dev" / "nvidia-caps" / f"nvidia-cap{minor}").touch()
    return proc, dev


def agent_with_cdi(
    backend: FakeBackend, root: Path, gpus: int
) -> tuple[NodeAgent, MemoryObjects, CdiSpecWriter]:
    layouts = MemoryObjects()
    agent = NodeAgent(
        NODE, backend, layouts, MemoryObjects(), MemoryNodes({NODE: {}}), MemoryEvents()
    )
    proc, dev = host_tree(root, gpus)
    writer = CdiSpecWriter(
        root / "cdi",
        lambda: cdi_gpus(agent.managed_devices(), agent.state.observations),
        proc_root=proc,
        dev_root=dev,
    )
    agent.listeners.append(writer.refresh)
    return agent, layouts, writer


def written(writer: CdiSpecWriter) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(writer.path.read_text())
    jsonschema.validate(spec, SCHEMA)
    return spec


def existing_devices(backend: FakeBackend, gpus: int) -> set[str]:
    names = {backend.uuid(g) for g in range(gpus)}
    for g in range(gpus):
        names |= (
            {
                ci.uuid
                for gi in backend.list_gpu_instances(g)
                for ci in gi.compute_instances
                if ci.uuid
            }
            if backend.get_mig_mode(g).current
            else set()
        )
    return names


def layout(*instances: tuple[str, int, int]) -> dict[str, Any]:
    return {
        "spec": {
            "migEnabled": True,
            "instances": [builders.placed(p, start, size) for p, start, size in instances],
        }
    }


async def test_the_spec_lists_exactly_the_instances_that_exist_after_each_layout_change(
    tmp_path: Path,
) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", seed=NODE)
    agent, layouts, writer = agent_with_cdi(backend, tmp_path, gpus=2)
    await agent.sync()
    spec = written(writer)
    assert {d["name"] for d in spec["devices"]} == {backend.uuid(0), backend.uuid(1)}

    for change in (
        layout(("3g.40gb", 0, 4), ("2g.20gb", 4, 2), ("1g.10gb", 6, 1)),
        layout(("7g.80gb", 0, 8)),
        layout(("1g.10gb", 0, 1), ("1g.10gb", 1, 1), ("3g.40gb", 4, 4)),
    ):
        await layouts.patch("n1-gpu0", change)
        await agent.handle(layouts.objects["n1-gpu0"])
        spec = written(writer)
        assert {d["name"] for d in spec["devices"]} == existing_devices(backend, 2)
    assert len(spec["devices"]) == 2 + 3


async def test_a_mig_device_gets_its_gpu_node_and_its_two_capability_nodes(
    tmp_path: Path,
) -> None:
    backend = FakeBackend.from_spec("H100-SXM5-80GB:1", seed=NODE)
    agent, layouts, writer = agent_with_cdi(backend, tmp_path, gpus=1)
    await agent.sync()
    await layouts.patch("n1-gpu0", layout(("3g.40gb", 4, 4)))
    await agent.handle(layouts.objects["n1-gpu0"])

    spec = written(writer)
    (gi,) = backend.list_gpu_instances(0)
    (ci,) = gi.compute_instances
    minors = dict(mig_minors(1))
    mig = next(d for d in spec["devices"] if d["name"] == ci.uuid)
    assert mig["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/nvidia0"},
        {"path": f"/dev/nvidia-caps/nvidia-cap{minors[f'gpu0/gi{gi.gi_id}/access']}"},
        {"path": f"/dev/nvidia-caps/nvidia-cap{minors[f'gpu0/gi{gi.gi_id}/ci{ci.ci_id}/access']}"},
    ]
    assert spec["kind"] == "nvidia.com/gpu"
    assert spec["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/nvidiactl"},
        {"path": "/dev/nvidia-uvm"},
        {"path": "/dev/nvidia-uvm-tools"},
    ]


async def test_the_file_is_rewritten_only_when_the_devices_change(tmp_path: Path) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, _, writer = agent_with_cdi(backend, tmp_path, gpus=1)
    await agent.sync()
    first = writer.path.stat().st_mtime_ns
    writer.path.write_text(writer.path.read_text())  # same content, new mtime
    touched = writer.path.stat().st_mtime_ns
    await agent.refresh()
    assert writer.path.stat().st_mtime_ns == touched >= first
    assert [p.name for p in writer.directory.iterdir()] == [SPEC_FILE]  # no temporary left


def test_an_instance_whose_nodes_are_missing_is_left_out_with_a_reason() -> None:
    gpus = [CdiGpu("GPU-a", 0, (CdiInstance("MIG-1", 1, 0), CdiInstance("MIG-2", 2, 0)))]
    minors = parse_mig_minors("gpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\ngpu0/gi2/access 21\n")
    plan = cdi_spec(gpus, minors)
    assert plan.device_names == ("GPU-a", "MIG-1")
    assert plan.problems == ("MIG-2: no MIG minor for gpu0/gi2/ci0/access; left out",)

    present = frozenset({"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12"})
    plan = cdi_spec(gpus[:1], minors, present=present)
    assert plan.device_names == ("GPU-a",)
    assert "MIG-1: /dev/nvidia-caps/nvidia-cap13 missing; left out" in plan.problems
    jsonschema.validate(plan.spec, SCHEMA)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("config 1\nmonitor 2\n", {"config": 1, "monitor": 2}, id="globals"),
        pytest.param("gpu3/gi14/ci7/access 999\n", {"gpu3/gi14/ci7/access": 999}, id="ci"),
        pytest.param("gpu0/gi1/access\nbogus 4\ngpu0/gi1/access x\n", {}, id="malformed"),
    ],
)
def test_mig_minors_are_parsed_as_the_driver_writes_them(
    text: str, expected: dict[str, int]
) -> None:
    assert parse_mig_minors(text) == expected


def test_the_schema_rejects_what_cdi_forbids() -> None:
    good = cdi_spec([CdiGpu("GPU-a", 0)], {}).spec
    jsonschema.validate(good, SCHEMA)
    for bad in (
        {**good, "kind": "gpu"},
        {**good, "devices": []},
        {**good, "devices": [{"name": "bad name", "containerEdits": {}}]},
        {**good, "containerEdits": {"deviceNodes": [{"path": "dev/nvidia0"}]}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
