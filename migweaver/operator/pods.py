"""Pods: the gated ones open batches; reserved, ended and deleted ones ask for a round.

Only pods that concern migweaver pass the filter (`core.operator.state.concerns_operator`):
gated by `migweaver.io/placement`, or carrying a reservation or an allocation.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from migweaver.core.operator.state import concerns_operator, pod_trigger
from migweaver.core.resources.bodies import PodBody
from migweaver.operator.triggers import Triggers


def _concerns(body: kopf.Body, **_: Any) -> bool:
    return concerns_operator(cast(PodBody, body))


def register(registry: kopf.OperatorRegistry, operator: Triggers) -> None:
    @kopf.on.event("v1", "pods", registry=registry, when=_concerns, id="migweaver-pods")
    async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        trigger = pod_trigger(type, cast(PodBody, body))
        if trigger == "plan":
            operator.pod_arrived()
        elif trigger == "round":
            operator.capacity_changed()
