"""Issue 3's acceptance: the node agent with fake GPUs against a Kubernetes API.

`migweaver agent --backend fake --fake-gpus A100-SXM4-80GB:2 --node-name n1` creates
`n1-gpu0` and `n1-gpu1` with their status filled in, applies a spec change, and a
restarted agent adopts the instances that exist instead of recreating them. The agent
runs in-process (`run_agent`, or `NodeAgent` when the test must keep the same fake GPUs
across a restart, as real GPUs outlive the agent process) and as the real command in a
subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.main import AgentOptions, run_agent
from migweaver.agent.node_agent import NodeAgent
from migweaver.core.resources.api import LABEL_NODE
from migweaver.core.resources.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL, node_label_value
from migweaver.k8s.client import ClusterObjects, CoreObjects, connect
from migweaver.k8s.events import EventRecorder
from tests.e2e.emulator import Emulator
from tests.e2e.kube_api import EVENTS, MIGLAYOUTS, NODES, Kube, condition, meta

JsonDict = dict[str, Any]
T = TypeVar("T")

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
GPUS = "A100-SXM4-80GB:2"
THREE_G = {"profile": "3g.40gb", "placement": {"start": 4, "size": 4}}
TWO_G = {"profile": "2g.20gb", "placement": {"start": 0, "size": 2}}
NEW_SPEC = {"spec": {"migEnabled": True, "instances": [THREE_G, TWO_G]}}


async def add_node(kube: Kube, node: str) -> None:
    """The Node object the agent reads its labels from (a kubelet would register it)."""
    await kube.create(
        NODES, {"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}
    )
    for index in (0, 1):
        kube.track(MIGLAYOUTS, f"{node}-gpu{index}")  # created by the agent


def synced(obj: JsonDict | None, generation: int | None = None) -> bool:
    """The agent reported on this generation of the spec and the layout is Ready."""
    if obj is None:
        return False
    status = obj.get("status") or {}
    wanted = generation if generation is not None else meta(obj)["generation"]
    return status.get("observedGeneration") == wanted and status.get("phase") == "Ready"


async def wait_layouts(
    kube: Kube, node: str, check: Callable[[list[JsonDict]], bool], timeout_s: float = 15
) -> dict[str, JsonDict]:
    selector = f"{LABEL_NODE}={node_label_value(node)}"
    items = await kube.wait_for_list(
        MIGLAYOUTS, check, label_selector=selector, timeout_s=timeout_s
    )
    return {meta(o)["name"]: o for o in items}


def two_synced(items: list[JsonDict]) -> bool:
    return len(items) == 2 and all(synced(o) for o in items)


def applied(obj: JsonDict | None) -> bool:
    """`NEW_SPEC` is in force: generation 2 observed, both instances with MIG UUIDs."""
    if not synced(obj, 2):
        return False
    instances = (obj or {})["status"].get("instances") or []
    return len(instances) == 2 and all(str(i.get("uuid", "")).startswith("MIG-") for i in instances)


def instance_map(obj: JsonDict) -> dict[tuple[str, int, int], str]:
    """(profile, start, size) -> MIG UUID of the instances a status reports."""
    return {
        (i["profile"], i["placement"]["start"], i["placement"]["size"]): i["uuid"]
        for i in obj["status"]["instances"]
    }


def assert_adopted_layout(obj: JsonDict, node: str, index: int, uuid: str) -> None:
    """A freshly adopted, idle A100: the spec is what exists, the status says so."""
    assert meta(obj)["labels"] == {LABEL_NODE: node_label_value(node)}
    assert obj["spec"] == {
        "nodeName": node,
        "gpuIndex": index,
        "gpuUUID": uuid,
        "policy": "dynamic",
        "migEnabled": False,
        "instances": [],
    }
    status = obj["status"]
    assert status["observedGeneration"] == 1
    assert status["phase"] == "Ready"
    assert status["gpu"] == {
        "model": "NVIDIA A100-SXM4-80GB",
        "memoryMiB": 81920,
        "migCapable": True,
        "pciDeviceId": 0x20B2,
    }
    assert status["migMode"] == {"current": "Disabled", "pending": "Disabled"}
    assert status["instances"] == []
    assert status["instancesSummary"] == "-"
    assert status["used"] == "-"
    assert (condition(obj, "Ready") or {}).get("status") == "True"


def assert_applied(obj: JsonDict) -> None:
    status = obj["status"]
    assert status["migMode"]["current"] == "Enabled"
    assert set(instance_map(obj)) == {("3g.40gb", 4, 4), ("2g.20gb", 0, 2)}
    assert {"3g.40gb", "2g.20gb"} <= set(status["instancesSummary"].replace("x", ",").split(","))
    assert status["used"] == "0/2"
    assert {p["name"] for p in status["profiles"]} >= {"1g.10gb", "3g.40gb", "7g.80gb"}


async def wait_events(kube: Kube, obj: JsonDict, reasons: set[str]) -> list[JsonDict]:
    """The Events recorded about `obj` (in `default`: it is cluster-scoped), once all arrived."""
    events = await kube.wait_for_list(
        EVENTS,
        lambda items: reasons <= {e["reason"] for e in items},
        "default",
        field_selector=f"involvedObject.uid={meta(obj)['uid']}",
    )
    for event in events:
        kube.track(EVENTS, meta(event)["name"], "default")
    return events


@contextlib.contextmanager
def signal_handlers_removed_after() -> Any:
    """`run_agent` installs SIGTERM/SIGINT handlers on the loop and must take them away
    when it returns (a library caller's loop is not the agent's to keep)."""
    loop = asyncio.get_running_loop()
    yield
    for sig in (signal.SIGTERM, signal.SIGINT):
        assert not loop.remove_signal_handler(sig), f"run_agent left its {sig.name} handler"


async def test_agent_creates_layouts_reports_status_and_applies_a_spec(
    kube: Kube, tmp_path: Path
) -> None:
    node = kube.name("n1")
    await add_node(kube, node)
    expected = FakeBackend.from_spec(GPUS, seed=node)  # same seed: same GPU UUIDs
    options = AgentOptions(
        node_name=node,
        backend="fake",
        fake_gpus=GPUS,
        kubeconfig=str(kube.kubeconfig),
        probe_address="127.0.0.1",
        probe_port=0,
        metrics_address="127.0.0.1",
        metrics_port=0,
        resync_s=2,
        # Never the host's /var/lib/kubelet/device-plugins: a real kubelet may run there
        # (the real kubelet tier), and this agent would register with it.
        plugin_dir=str(tmp_path),
    )
    stop = asyncio.Event()
    with signal_handlers_removed_after():
        agent = asyncio.create_task(run_agent(options, stop))
        try:
            layouts = await wait_layouts(kube, node, two_synced)
            assert sorted(layouts) == [f"{node}-gpu0", f"{node}-gpu1"]
            for index in (0, 1):
                layout = layouts[f"{node}-gpu{index}"]
                assert_adopted_layout(layout, node, index, expected.uuid(index))

            gpu0 = f"{node}-gpu0"
            await ClusterObjects(kube.api, MIGLAYOUT_PLURAL).patch(gpu0, NEW_SPEC)
            done = await kube.wait_for(MIGLAYOUTS, gpu0, applied)
            assert done is not None
            assert_applied(done)
            assert done["spec"]["instances"] == [THREE_G, TWO_G]

            events = await wait_events(kube, done, {"Adopted", "LayoutApplied"})
            applied_event = next(e for e in events if e["reason"] == "LayoutApplied")
            assert "3g.40gb" in applied_event["message"]
            assert applied_event["involvedObject"]["kind"] == "MigLayout"
            await wait_events(kube, layouts[f"{node}-gpu1"], {"Adopted"})
        finally:
            stop.set()
            assert await asyncio.wait_for(agent, 10) == 0


@dataclass(frozen=True, slots=True)
class RunningAgent:
    agent: NodeAgent
    task: asyncio.Task[None]

    async def unless_it_dies(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, but raise the agent's error at once if its task ends first."""
        waiter = asyncio.ensure_future(awaitable)
        await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            self.task.result()  # raises what ended the agent
            raise AssertionError("the agent stopped by itself")
        return waiter.result()


@contextlib.asynccontextmanager
async def running_agent(kube: Kube, node: str, backend: FakeBackend) -> AsyncIterator[RunningAgent]:
    """A `NodeAgent` on `backend`, wired as `run_agent` wires it, with its own API client."""
    api = await connect(str(kube.kubeconfig))
    async with api:
        core = CoreObjects(api)
        agent = NodeAgent(
            node,
            backend,
            ClusterObjects(api, MIGLAYOUT_PLURAL),
            ClusterObjects(api, NODECONFIG_PLURAL),
            core,
            EventRecorder(core, "migweaver-agent"),
            resync_s=2,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.wait_for(agent.ready.wait(), 10)
            yield RunningAgent(agent, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_restarted_agent_adopts_the_instances_that_exist(kube: Kube) -> None:
    node = kube.name("n1")
    await add_node(kube, node)
    gpu0 = f"{node}-gpu0"
    # The GPUs (and their MIG instances) outlive every agent process: one backend object.
    backend = FakeBackend.from_spec(GPUS, seed=node)

    async with running_agent(kube, node, backend):
        await wait_layouts(kube, node, two_synced)
        await kube.patch(MIGLAYOUTS, gpu0, NEW_SPEC)
        first = await kube.wait_for(MIGLAYOUTS, gpu0, applied)
        assert first is not None
    uuids = instance_map(first)
    created = len(backend.mutating_calls)
    assert created > 0

    # Restart with the layouts in place: nothing to do, nothing touched.
    async with running_agent(kube, node, backend) as running:
        assert running.agent.ready.is_set()
        again = await kube.get(MIGLAYOUTS, gpu0)
        assert synced(again, 2)
        assert instance_map(again) == uuids
    assert len(backend.mutating_calls) == created

    # Restart after the layouts were lost: the agent adopts what exists into a new spec.
    await kube.delete(MIGLAYOUTS, gpu0)
    await kube.delete(MIGLAYOUTS, f"{node}-gpu1")
    await kube.wait_gone(MIGLAYOUTS, gpu0)
    async with running_agent(kube, node, backend):
        layouts = await wait_layouts(kube, node, two_synced)
    adopted = layouts[gpu0]
    assert meta(adopted)["uid"] != meta(first)["uid"]
    assert adopted["spec"]["migEnabled"] is True
    assert adopted["spec"]["instances"] == [TWO_G, THREE_G]  # by placement
    assert instance_map(adopted) == uuids
    assert len(backend.mutating_calls) == created  # nothing destroyed, nothing created
    events = await wait_events(kube, adopted, {"Adopted"})
    message = next(e["message"] for e in events if e["reason"] == "Adopted")
    assert "3g.40gb" in message
    assert "2g.20gb" in message


async def _cli_has_agent() -> bool:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "migweaver",
        "agent",
        "--help",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30) == 0


async def test_agent_command_runs_against_the_api_and_stops_cleanly_on_sigterm(
    kube: Kube, tmp_path: Path
) -> None:
    if not await _cli_has_agent():
        pytest.skip("`migweaver agent` is not registered in migweaver/cli.py yet")
    node = kube.name("n1")
    await add_node(kube, node)
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "migweaver",
            "agent",
            "--backend",
            "fake",
            "--fake-gpus",
            GPUS,
            "--node-name",
            node,
            "--kubeconfig",
            str(kube.kubeconfig),
            "--probe-address",
            "127.0.0.1",
            "--probe-port",
            "0",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        expected = FakeBackend.from_spec(GPUS, seed=node)
        layouts = await wait_layouts(kube, node, two_synced, timeout_s=30)
        for index in (0, 1):
            assert_adopted_layout(layouts[f"{node}-gpu{index}"], node, index, expected.uuid(index))
        await kube.patch(MIGLAYOUTS, f"{node}-gpu0", NEW_SPEC)
        done = await kube.wait_for(MIGLAYOUTS, f"{node}-gpu0", applied)
        assert done is not None
        assert_applied(done)

        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
        assert code == 0, log_path.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.emulator_only("stops and restarts an API server")
async def test_agent_rides_out_an_api_server_restart(tmp_path: Path) -> None:
    """The API server goes away under a running agent and comes back (same port, same
    objects): the agent keeps running, acts on nothing meanwhile, and then applies a spec
    written after the restart."""
    async with Emulator() as api_server:
        kube = await Kube.connect(api_server.write_kubeconfig(tmp_path / "config"), "default")
        try:
            await kube.ensure_crds(CRD_DIR.glob("*.yaml"))
            node = "n1"
            await add_node(kube, node)
            backend = FakeBackend.from_spec(GPUS, seed=node)
            async with running_agent(kube, node, backend) as running:
                await wait_layouts(kube, node, two_synced)
                port = api_server.port
                await api_server.stop()
                # The length of the outage (not a wait for anything): long enough for the
                # agent's watch to break and its re-list to find no server.
                await asyncio.sleep(0.5)
                await api_server.start(port=port)
                await kube.patch(MIGLAYOUTS, f"{node}-gpu0", NEW_SPEC)
                done = await running.unless_it_dies(
                    kube.wait_for(MIGLAYOUTS, f"{node}-gpu0", applied, timeout_s=15)
                )
                assert done is not None
        finally:
            await kube.close()
