"""Placement policies the simulator can run: migweaver's planner and HAMi's legacy rules.

A policy turns a snapshot and the pending pods into a `core.plan.Plan`; the simulator
applies every plan the same way (MigLayout specs through the agent's reconciler on fake
GPUs, then pods started on the instances that exist), so policies differ only in what
they decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from migweaver.core.config import DeviceConfig
from migweaver.core.planning.plan import Plan, PlannerOptions
from migweaver.core.planning.planner import plan as migweaver_plan
from migweaver.core.planning.snapshot import Snapshot
from migweaver.core.resources.requests import PodDemand
from migweaver.sim.hami_legacy import hami_legacy_plan

__all__ = ["POLICIES", "HamiLegacyPolicy", "MigweaverPolicy", "Policy", "policy_named"]


class Policy(Protocol):
    """Decides placements; must be pure and deterministic (the report depends on it)."""

    @property
    def name(self) -> str: ...

    def plan(
        self, snapshot: Snapshot, pending: Sequence[PodDemand], config: DeviceConfig | None
    ) -> Plan: ...


class MigweaverPolicy:
    """The real planner (`migweaver.core.planning.planner.plan`), with the operator's options."""

    name = "migweaver"

    def __init__(self, options: PlannerOptions | None = None) -> None:
        self.options = options or PlannerOptions()

    def plan(
        self, snapshot: Snapshot, pending: Sequence[PodDemand], config: DeviceConfig | None
    ) -> Plan:
        return migweaver_plan(snapshot, pending, config, self.options)


class HamiLegacyPolicy:
    """HAMi's legacy dynamic-MIG rules (`migweaver.sim.hami_legacy`), as a baseline."""

    name = "hami-legacy"

    def plan(
        self, snapshot: Snapshot, pending: Sequence[PodDemand], config: DeviceConfig | None
    ) -> Plan:
        return hami_legacy_plan(snapshot, pending, config)


POLICIES: Final = ("migweaver", "hami-legacy")


def policy_named(name: str) -> Policy:
    """The policy of this name (one of `POLICIES`); ValueError otherwise."""
    if name == "migweaver":
        return MigweaverPolicy()
    if name == "hami-legacy":
        return HamiLegacyPolicy()
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
