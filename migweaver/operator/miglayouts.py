"""MigLayouts: every change (an agent's status, a spec) asks for a round: a reserved pod
may be Ready now, or room for waiting pods may have appeared.

Watched by the work loop itself (`k8s.informer`), not kopf: a burst reconfigures hundreds
of GPUs, each reported by its agent."""

from __future__ import annotations

from migweaver.core.resources.models import MIGLAYOUT_PLURAL
from migweaver.k8s.client import JsonDict, Listing
from migweaver.k8s.informer import inform
from migweaver.operator.rounds import Operator


async def watch_layouts(operator: Operator) -> None:
    """Every MigLayout's events into the operator, until cancelled."""

    def on_list(listing: Listing) -> None:
        operator.listed(MIGLAYOUT_PLURAL, listing.items, listing.resource_version)
        operator.capacity_changed()

    def on_event(event_type: str, layout: JsonDict) -> None:
        operator.observed(MIGLAYOUT_PLURAL, event_type, layout)
        operator.capacity_changed()

    await inform(MIGLAYOUT_PLURAL, operator.layouts.list, operator.layouts.watch, on_list, on_event)
