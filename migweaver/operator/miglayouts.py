"""MigLayouts: every change (an agent's status, a spec) asks for a round: a reserved pod
may be Ready now, or room for waiting pods may have appeared."""

from __future__ import annotations

from typing import Any

import kopf

from migweaver.core.resources.api import GROUP, VERSION
from migweaver.core.resources.models import MIGLAYOUT_PLURAL
from migweaver.operator.triggers import Triggers


def register(registry: kopf.OperatorRegistry, operator: Triggers) -> None:
    @kopf.on.event(GROUP, VERSION, MIGLAYOUT_PLURAL, registry=registry, id="migweaver-layouts")
    async def layout_event(**_: Any) -> None:
        operator.capacity_changed()
