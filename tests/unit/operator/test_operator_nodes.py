"""The Node watch asks for a round when what the planner reads of a Node changes
(labels, cordon, Ready, taints), and not on status heartbeats."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf

from migweaver.operator import nodes
from tests import builders

JsonDict = dict[str, Any]


class Counter:
    def __init__(self) -> None:
        self.rounds = 0
        self.seen: list[tuple[str, str | None, str]] = []

    def pod_arrived(self) -> None:
        raise AssertionError("a Node never opens a batch by itself")

    def capacity_changed(self) -> None:
        self.rounds += 1

    def observed(self, kind: str, event_type: str | None, obj: JsonDict) -> None:
        self.seen.append((kind, event_type, obj["metadata"]["name"]))


def node(heartbeat: str = "t0") -> JsonDict:
    ready = {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}
    return builders.node(labels={"zone": "a"}, spec={}, status={"conditions": [ready]})


def test_node_changes_that_matter_ask_for_a_round() -> None:
    registry = kopf.OperatorRegistry()
    counter = Counter()
    nodes.register(registry, counter)  # type: ignore[arg-type]
    (handler,) = registry._watching.get_all_handlers()

    def event(kind: str | None, body: JsonDict) -> int:
        before = counter.rounds
        raw = {"type": kind, "object": body}
        asyncio.run(handler.fn(type=kind, name="node-a", body=kopf.Body(body), event=raw))
        assert counter.seen[-1] == ("nodes", kind, "node-a")  # every event reaches the store
        return counter.rounds - before

    body = node()
    assert event(None, body) == 1  # first sight
    assert event("MODIFIED", node(heartbeat="t1")) == 0  # heartbeat only
    cordoned = copy.deepcopy(body)
    cordoned["spec"]["unschedulable"] = True
    assert event("MODIFIED", cordoned) == 1
    assert event("MODIFIED", cordoned) == 0
    tainted = copy.deepcopy(cordoned)
    tainted["spec"]["taints"] = [{"key": "gpu", "effect": "NoSchedule"}]
    assert event("MODIFIED", tainted) == 1
    not_ready = copy.deepcopy(tainted)
    not_ready["status"]["conditions"][0]["status"] = "Unknown"
    assert event("MODIFIED", not_ready) == 1
    relabelled = copy.deepcopy(not_ready)
    relabelled["metadata"]["labels"]["zone"] = "b"
    assert event("MODIFIED", relabelled) == 1
    assert event("DELETED", relabelled) == 1
