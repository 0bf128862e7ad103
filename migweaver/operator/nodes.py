"""Nodes: a node's labels decide which NodeConfig selects it, and whether it is cordoned,
Ready and how it is tainted decides whether the planner may place pods there
(`core/resources/node_fit.py`). A change of any of these (or a node that comes or goes) asks for a
round; status heartbeats and other status updates do not."""

from __future__ import annotations

from typing import Any

import kopf

from migweaver.core.resources.node_fit import NodeFacts, node_facts
from migweaver.operator.triggers import Triggers


def register(registry: kopf.OperatorRegistry, operator: Triggers) -> None:
    seen: dict[str, NodeFacts] = {}

    @kopf.on.event("v1", "nodes", registry=registry, id="migweaver-nodes")
    async def node_event(
        type: str | None, name: str, body: kopf.Body, event: kopf.RawEvent, **_: Any
    ) -> None:
        operator.observed("nodes", type, event["object"])
        current = None if type == "DELETED" else node_facts(body)
        if seen.get(name) == current:
            return
        if current is None:
            seen.pop(name, None)
        else:
            seen[name] = current
        operator.capacity_changed()
