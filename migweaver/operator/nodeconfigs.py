"""NodeConfigs: any change asks for a round, which sets `spec.migEnabled` of the GPUs they
select and reports in their status (`core.nodeconfig_actions`)."""

from __future__ import annotations

from typing import Any

import kopf

from migweaver.core.resources.api import GROUP, VERSION
from migweaver.core.resources.models import NODECONFIG_PLURAL
from migweaver.operator.triggers import Triggers


def register(registry: kopf.OperatorRegistry, operator: Triggers) -> None:
    @kopf.on.event(GROUP, VERSION, NODECONFIG_PLURAL, registry=registry, id="migweaver-configs")
    async def nodeconfig_event(type: str | None, event: kopf.RawEvent, **_: Any) -> None:
        operator.observed(NODECONFIG_PLURAL, type, event["object"])
        operator.capacity_changed()
