"""Pods: the gated ones open batches; reserved, ended and deleted ones ask for a round.

Watched by the work loop itself (`k8s.informer`), not kopf: a burst changes pods by the
thousand. Every event goes to the operator's store of pods, which keeps the pods that
concern migweaver (`core.operator.state.concerns_operator`: gated by
`migweaver.io/placement`, or carrying a reservation or an allocation) and forgets one that
stops concerning it; `core.operator.state.pod_trigger` says what the event asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from migweaver.core.operator.state import pod_trigger
from migweaver.core.resources.bodies import PodBody
from migweaver.k8s.client import JsonDict, Listing
from migweaver.k8s.informer import inform
from migweaver.operator.rounds import Operator


def _trigger(operator: Operator, event_type: str | None, pod: Mapping[str, Any]) -> None:
    trigger = pod_trigger(event_type, cast(PodBody, pod))
    if trigger == "plan":
        operator.pod_arrived()
    elif trigger == "round":
        operator.capacity_changed()


async def watch_pods(operator: Operator) -> None:
    """Every pod's events into the operator, until cancelled."""

    def on_list(listing: Listing) -> None:
        operator.listed("pods", listing.items, listing.resource_version)
        for pod in listing.items:
            _trigger(operator, None, pod)

    def on_event(event_type: str, pod: JsonDict) -> None:
        operator.observed("pods", event_type, pod)
        _trigger(operator, event_type, pod)

    await inform("pods", operator.pods.list, operator.pods.watch, on_list, on_event)
