"""The agent's Kubernetes shell against in-memory API objects and the fake GPU backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from migweaver.agent import reconciler as reconciler_module
from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.protocol import NvmlError
from migweaver.agent.node_agent import NodeAgent
from migweaver.agent.reconciler import Reconciler, ReconcileResult
from migweaver.agent.waiting import until_stopped
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.profiles import Placement, ProfileTable
from migweaver.core.resources.models import CONDITION_CATALOG_MISMATCH, MigLayout, find_condition
from tests.component.memory_api import MemoryEvents, MemoryNodes, MemoryObjects

NODE = "n1"


def make_agent(
    backend: FakeBackend, configs: list[dict[str, Any]] | None = None
) -> tuple[NodeAgent, MemoryObjects, MemoryEvents]:
    layouts = MemoryObjects()
    config_store = MemoryObjects()
    config_store.objects = {c["metadata"]["name"]: c for c in configs or []}
    events = MemoryEvents()
    agent = NodeAgent(
        NODE, backend, layouts, config_store, MemoryNodes({NODE: {}}), events, resync_s=5
    )
    return agent, layouts, events


def nodeconfig(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "migweaver.io/v1alpha1",
        "kind": "NodeConfig",
        "metadata": {"name": "cfg", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": NODE, **spec},
    }


def destroyed(backend: FakeBackend) -> list[str]:
    return [c.name for c in backend.calls if c.name.startswith("destroy") and c.error is None]


async def test_start_creates_one_layout_per_gpu_with_status_filled_in() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", seed=NODE)
    agent, layouts, _ = make_agent(backend)
    await agent.sync()
    assert sorted(layouts.objects) == ["n1-gpu0", "n1-gpu1"]
    for index in (0, 1):
        obj = layouts.objects[f"n1-gpu{index}"]
        assert obj["metadata"]["labels"] == {"migweaver.io/node": NODE}
        assert obj["spec"] == {
            "nodeName": NODE,
            "gpuIndex": index,
            "gpuUUID": backend.uuid(index),
            "policy": "dynamic",
            "migEnabled": False,
            "instances": [],
        }
        status = obj["status"]
        assert status["phase"] == "Ready"
        assert status["observedGeneration"] == 1
        assert status["gpu"]["memoryMiB"] > 0
        assert status["gpu"]["migCapable"] is True
        assert status["migMode"]["current"] == "Disabled"
    assert agent.ready.is_set()


async def test_existing_instances_are_adopted_not_destroyed() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    table = backend.table(0)
    three = table.get("3g.40gb")
    one = table.get("1g.10gb")
    assert three is not None
    assert one is not None
    for profile, start in ((three, 4), (one, 0)):
        gi = backend.create_gpu_instance(
            0, profile.profile_id, Placement(start, profile.memory_slices)
        )
        backend.create_compute_instance(0, gi)
    uuids_before = backend.mig_uuids(0)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    spec = layouts.objects["n1-gpu0"]["spec"]
    assert spec["migEnabled"] is True
    assert spec["instances"] == [
        {"profile": "1g.10gb", "placement": {"start": 0, "size": 1}},
        {"profile": "3g.40gb", "placement": {"start": 4, "size": 4}},
    ]
    status = layouts.objects["n1-gpu0"]["status"]
    assert status["instancesSummary"] == "1g.10gb,3g.40gb"
    assert sorted(i["uuid"] for i in status["instances"]) == sorted(uuids_before.values())
    assert destroyed(backend) == []
    assert backend.mig_uuids(0) == uuids_before
    assert "Adopted" in events.reasons("n1-gpu0")


async def test_a_spec_change_is_applied_and_reported() -> None:
    backend = FakeBackend.from_spec("H100-SXM5-80GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    await layouts.patch(
        "n1-gpu0",
        {
            "spec": {
                "migEnabled": True,
                "instances": [
                    {"profile": "3g.40gb", "placement": {"start": 0, "size": 4}},
                    {"profile": "2g.20gb", "placement": {"start": 4, "size": 2}},
                ],
            }
        },
    )
    await agent.handle(layouts.objects["n1-gpu0"])
    status = layouts.objects["n1-gpu0"]["status"]
    assert status["observedGeneration"] == 2
    assert status["phase"] == "Ready"
    assert status["migMode"]["current"] == "Enabled"
    assert [(i["profile"], i["placement"]["start"]) for i in status["instances"]] == [
        ("3g.40gb", 0),
        ("2g.20gb", 4),
    ]
    assert all(i["uuid"].startswith("MIG-") for i in status["instances"])
    assert status["used"] == "0/2"
    assert "LayoutApplied" in events.reasons("n1-gpu0")


async def test_an_in_use_instance_survives_a_spec_that_drops_it() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE, mig_enabled=True)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    await layouts.patch(
        "n1-gpu0",
        {"spec": {"instances": [{"profile": "3g.40gb", "placement": {"start": 4, "size": 4}}]}},
    )
    await agent.handle(layouts.objects["n1-gpu0"])
    (uuid,) = backend.mig_uuids(0).values()
    backend.start_process(0, uuid, 1000)
    await layouts.patch("n1-gpu0", {"spec": {"instances": []}})
    await agent.handle(layouts.objects["n1-gpu0"])
    status = layouts.objects["n1-gpu0"]["status"]
    assert list(backend.mig_uuids(0).values()) == [uuid]
    assert status["phase"] == "Degraded"
    (instance,) = status["instances"]
    assert instance["inUse"] is True
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "3g.40gb" in degraded["message"]
    assert "LayoutDegraded" in events.reasons("n1-gpu0")


async def test_filtered_gpus_get_no_layout_and_are_never_touched() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", seed=NODE)
    agent, layouts, _ = make_agent(
        backend, [nodeconfig(operatingMode="mig", filterDevices={"index": [1]})]
    )
    await agent.sync()
    assert sorted(layouts.objects) == ["n1-gpu0"]
    assert not any(c.args and c.args[0] == 1 and c.mutating for c in backend.calls)


async def test_an_invalid_spec_leaves_the_gpu_alone_and_says_which_field() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    mutations = len(backend.mutating_calls)
    await layouts.patch("n1-gpu0", {"spec": {"migEnabled": True, "instancez": []}})
    await agent.handle(layouts.objects["n1-gpu0"])
    status = layouts.objects["n1-gpu0"]["status"]
    assert status["phase"] == "Failed"
    (condition,) = [c for c in status["conditions"] if c["reason"] == "InvalidSpec"]
    assert "instancez" in condition["message"]
    assert len(backend.mutating_calls) == mutations
    assert "InvalidSpec" in events.reasons("n1-gpu0")


async def test_the_watch_applies_changes_until_stopped() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, layouts, _ = make_agent(backend)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 10)
    await layouts.patch(
        "n1-gpu0",
        {
            "spec": {
                "migEnabled": True,
                "instances": [{"profile": "7g.80gb", "placement": {"start": 0, "size": 8}}],
            }
        },
    )

    def applied(store: MemoryObjects) -> bool:
        status = store.objects["n1-gpu0"].get("status", {})
        return bool(status.get("observedGeneration") == 2 and status.get("phase") == "Ready")

    async with asyncio.timeout(10):
        await layouts.wait_for(applied)
    assert layouts.objects["n1-gpu0"]["status"]["instancesSummary"] == "7g.80gb"
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("model", ["A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB"])
async def test_adopted_specs_round_trip_through_the_models(model: str) -> None:
    backend = FakeBackend.from_spec(f"{model}:1", seed=NODE, mig_enabled=True)
    catalog_model = get_model(model)
    assert catalog_model is not None
    agent, layouts, _ = make_agent(backend)
    await agent.sync()
    status = layouts.objects["n1-gpu0"]["status"]
    assert {p["name"] for p in status["profiles"]} >= {
        p.name for p in catalog_model.profiles if not p.media_extensions
    }


class CountingReconciler(Reconciler):
    """Counts reconcile passes (each one reads the GPU through NVML)."""

    def __init__(self, backend: FakeBackend) -> None:
        super().__init__(backend)
        self.passes = 0

    def reconcile(self, *args: Any, **kwargs: Any) -> ReconcileResult:
        self.passes += 1
        return super().reconcile(*args, **kwargs)


async def test_the_agent_does_not_reconcile_again_on_the_echo_of_its_own_status_write() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    reconciler = CountingReconciler(backend)
    layouts = MemoryObjects()
    agent = NodeAgent(
        NODE,
        backend,
        layouts,
        MemoryObjects(),
        MemoryNodes({NODE: {}}),
        MemoryEvents(),
        reconciler=reconciler,
        resync_s=300,  # no periodic re-list during the test: every pass comes from the watch
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 10)
    after_sync = reconciler.passes

    def applied(generation: int) -> Any:
        def check(store: MemoryObjects) -> bool:
            status = store.objects["n1-gpu0"].get("status", {})
            return bool(status.get("observedGeneration") == generation)

        return check

    seven = [{"profile": "7g.80gb", "placement": {"start": 0, "size": 8}}]
    three = [{"profile": "3g.40gb", "placement": {"start": 4, "size": 4}}]
    await layouts.patch("n1-gpu0", {"spec": {"migEnabled": True, "instances": seven}})
    async with asyncio.timeout(10):
        await layouts.wait_for(applied(2))
    await layouts.patch("n1-gpu0", {"spec": {"instances": three}})
    async with asyncio.timeout(10):
        await layouts.wait_for(applied(3))
    # Watch events arrive in order: the echo of the generation-2 status write came before
    # the generation-3 spec change, so a pass on it would already be counted here.
    assert reconciler.passes == after_sync + 2
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_gpus_that_cannot_be_listed_are_retried_not_fatal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The failing call also stops the agent, so the test needs no timing.
    backend = FakeBackend.from_spec(
        "A100-SXM4-80GB:1",
        seed=NODE,
        latency_s={"list_gpus": 1e-9},
        sleep=lambda _: loop.call_soon_threadsafe(stop.set),
    )
    backend.fail_call("list_gpus", NvmlError.DRIVER_NOT_LOADED)
    agent, layouts, _ = make_agent(backend)
    await asyncio.wait_for(agent.run(stop), 10)  # returns: the error did not escape
    assert not agent.ready.is_set()
    assert layouts.objects == {}


async def test_a_pod_change_after_the_agent_stopped_does_nothing() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, _, _ = make_agent(backend)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    calls = len(backend.calls)
    await agent.refresh()  # the pod watch may still deliver one: no closed GPU thread
    assert len(backend.calls) == calls


async def test_until_stopped_leaves_no_task_behind() -> None:
    stop = asyncio.Event()
    finished: list[str] = []
    started = asyncio.Event()

    async def work(name: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.append(name)

    assert await until_stopped(work("timed out"), stop, timeout_s=0) is False
    caller = asyncio.create_task(until_stopped(work("caller cancelled"), stop))
    started.clear()
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["timed out", "caller cancelled"]

    async def fails() -> None:
        raise RuntimeError("watch broke")

    with pytest.raises(RuntimeError, match="watch broke"):
        await until_stopped(fails(), stop)
    stop.set()
    assert await until_stopped(work("stopped"), stop) is False
    assert finished[-1] == "stopped"


async def test_an_invalid_spec_is_reported_once_not_at_every_pass() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    await layouts.patch(
        "n1-gpu0",
        {"spec": {"instances": [{"profile": "1g.10gb", "placement": {"start": "x", "size": 1}}]}},
    )
    await agent.handle(layouts.objects["n1-gpu0"])
    status = layouts.objects["n1-gpu0"]["status"]
    (condition,) = status["conditions"]
    assert condition["message"].startswith(
        "spec is invalid, GPU left as it is: spec.instances[0].placement.start: "
    )
    version = layouts.version
    await agent.handle(layouts.objects["n1-gpu0"])  # the next resync
    assert layouts.version == version  # nothing written again
    assert layouts.objects["n1-gpu0"]["status"] == status
    assert events.reasons("n1-gpu0").count("InvalidSpec") == 1


async def test_a_layout_for_a_gpu_the_node_lacks_fails_once_and_touches_nothing() -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    body = {
        "apiVersion": "migweaver.io/v1alpha1",
        "kind": "MigLayout",
        "metadata": {"name": "n1-gpu5", "labels": {"migweaver.io/node": NODE}},
        "spec": {"nodeName": NODE, "gpuIndex": 5, "gpuUUID": "GPU-x", "migEnabled": False},
    }
    await layouts.create(body)
    mutations = len(backend.mutating_calls)
    await agent.handle(layouts.objects["n1-gpu5"])
    status = layouts.objects["n1-gpu5"]["status"]
    assert status["phase"] == "Failed"
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Ready",
        "False",
        "GpuNotFound",
    )
    assert condition["message"] == "no GPU with index 5 on node n1"
    version = layouts.version
    await agent.handle(layouts.objects["n1-gpu5"])
    assert layouts.version == version
    assert events.reasons("n1-gpu5") == ["GpuNotFound"]
    assert len(backend.mutating_calls) == mutations


def _catalog_with_a_wrong_figure(key: str, profile_name: str, memory_mib: int) -> Any:
    """The catalog's model `key`, with one profile's memory changed (a wrong entry)."""
    model = get_model(key)
    assert model is not None
    profiles = tuple(
        replace(p, memory_mib=memory_mib) if p.name == profile_name else p
        for p in model.table.profiles
    )
    return replace(model, table=ProfileTable(model.table.memory_slots, profiles))


async def test_a_catalog_entry_nvml_contradicts_is_a_condition_and_one_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    wrong = _catalog_with_a_wrong_figure("A100-SXM4-80GB", "3g.40gb", 40000)
    monkeypatch.setattr(reconciler_module, "match_model", lambda *_: wrong)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    await agent.refresh()  # a second pass: the condition stays, the Event is not repeated

    status = MigLayout.from_api(layouts.objects["n1-gpu0"]).status
    assert status is not None
    condition = find_condition(status.conditions, CONDITION_CATALOG_MISMATCH)
    assert condition is not None
    assert (condition.status, condition.reason) == ("True", "NvmlDiffersFromCatalog")
    assert "3g.40gb (id 9) memory MiB: NVML 40192, catalog 40000" in condition.message
    assert events.reasons("n1-gpu0").count("CatalogMismatch") == 1
    # NVML's figure is what the status reports and the operator plans with.
    assert {p.name: p.memory_mib for p in status.profiles}["3g.40gb"] == 40192


async def test_a_gpu_that_agrees_with_the_catalog_says_so_without_an_event() -> None:
    backend = FakeBackend.from_spec("H200-141GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    status = MigLayout.from_api(layouts.objects["n1-gpu0"]).status
    assert status is not None
    condition = find_condition(status.conditions, CONDITION_CATALOG_MISMATCH)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "NvmlMatchesCatalog")
    assert "CatalogMismatch" not in events.reasons("n1-gpu0")


async def test_a_second_layout_for_a_gpu_is_a_conflict_never_applied() -> None:
    # Only n1-gpu0 is applied to GPU 0; another MigLayout claiming it (a person's, or one
    # created with stolen credentials) would make the agent flip between two specs.
    backend = FakeBackend.from_spec("A100-SXM4-80GB:1", seed=NODE)
    agent, layouts, events = make_agent(backend)
    await agent.sync()
    uuid = layouts.objects["n1-gpu0"]["spec"]["gpuUUID"]
    body = {
        "apiVersion": "migweaver.io/v1alpha1",
        "kind": "MigLayout",
        "metadata": {"name": "rogue", "labels": {"migweaver.io/node": NODE}},
        "spec": {
            "nodeName": NODE,
            "gpuIndex": 0,
            "gpuUUID": uuid,
            "migEnabled": True,
            "instances": [{"profile": "7g.80gb", "placement": {"start": 0, "size": 8}}],
        },
    }
    await layouts.create(body)
    mutations = len(backend.mutating_calls)
    await agent.sync()
    assert len(backend.mutating_calls) == mutations  # nothing applied
    status = layouts.objects["rogue"]["status"]
    assert status["phase"] == "Failed"
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Ready",
        "False",
        "Conflict",
    )
    assert (
        condition["message"] == "claims GPU 0 of node n1, whose MigLayout is n1-gpu0: not applied"
    )
    assert events.reasons("rogue") == ["Conflict"]
    assert layouts.objects["n1-gpu0"]["status"]["phase"] == "Ready"
