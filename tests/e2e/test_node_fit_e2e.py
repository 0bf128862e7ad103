"""Node constraints end to end: the operator places a pod only on a node kube-scheduler
would accept for it (docs/planner.md, "Node constraints"), with the operator and fake-GPU
agents of test_operator_e2e.py against the same API."""

from __future__ import annotations

from migweaver.core.resources.api import ANNOTATION_RESERVATION
from tests.e2e.kube_api import MIGLAYOUTS, NODES, PODS, Kube, meta
from tests.e2e.test_operator_e2e import (
    A100,
    HOSTNAME,
    PLACEMENT_GATE,
    add_nodeconfig,
    allocation_of,
    gpu_pod,
    node_body,
    released,
    running_agents,
    running_operator,
    wait_events,
    wait_pod,
)

ZONE = "e2e.migweaver.io/zone"


async def add_node(kube: Kube, name: str, *, cordoned: bool = False) -> None:
    body = node_body(name)
    if cordoned:
        body["spec"] = {"unschedulable": True}
    await kube.create(NODES, body)
    kube.track(MIGLAYOUTS, f"{name}-gpu0")  # created by the agent


async def test_a_cordoned_node_takes_no_new_pod(kube: Kube, binder: None) -> None:
    # Both nodes are empty and equal: without the cordon the first by name would win.
    cordoned, open_node = kube.name("fit-a"), kube.name("fit-b")
    await add_node(kube, cordoned, cordoned=True)
    await add_node(kube, open_node)
    for node in (cordoned, open_node):
        await add_nodeconfig(kube, node, "mig")
    agents = running_agents(kube, (cordoned, f"{A100}:1"), (open_node, f"{A100}:1"))
    async with agents, running_operator(kube):
        await kube.create(PODS, gpu_pod("away-from-cordon", 1, 8000, "mig"))
        pod = await wait_pod(kube, "away-from-cordon", released)
        assert allocation_of(pod).node == open_node
        assert pod["spec"]["nodeSelector"] == {HOSTNAME: open_node}
        layout = await kube.get(MIGLAYOUTS, f"{cordoned}-gpu0")
        assert layout["spec"]["instances"] == []  # nothing new on the cordoned node


async def test_a_pod_whose_node_selector_matches_no_node_says_so(kube: Kube, binder: None) -> None:
    node = kube.name("fit-c")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    async with running_agents(kube, (node, f"{A100}:1")), running_operator(kube):
        body = gpu_pod("zone-nowhere", 1, 8000, "mig")
        body["spec"]["nodeSelector"] = {ZONE: "nowhere"}
        created = await kube.create(PODS, body)
        events = await wait_events(kube, created, {"MigUnschedulable"})
        (event,) = [e for e in events if e["reason"] == "MigUnschedulable"]
        assert event["type"] == "Warning"
        assert "no node can take the pod" in event["message"]
        assert f"match the pod's nodeSelector {ZONE}=nowhere" in event["message"]
        assert node in event["message"]
        still = await kube.get(PODS, "zone-nowhere")
        assert still["spec"]["schedulingGates"] == [{"name": PLACEMENT_GATE}]
        assert ANNOTATION_RESERVATION not in (meta(still).get("annotations") or {})

        # The node gets the label: the node change brings a round, and the pod its place.
        await kube.patch(NODES, node, {"metadata": {"labels": {ZONE: "nowhere"}}})
        pod = await wait_pod(kube, "zone-nowhere", released)
        assert allocation_of(pod).node == node
        assert pod["spec"]["nodeSelector"] == {ZONE: "nowhere", HOSTNAME: node}
