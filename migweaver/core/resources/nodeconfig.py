"""Which NodeConfig governs a node, and which of its GPUs migweaver manages.

Several NodeConfigs may select one node (a pool selector and a per-node override). The
most specific wins: a `nodeName` config beats a `nodeSelector` config; among equals the
oldest (then the first by name) wins, and the others are reported as conflicts so a
person sees them in the NodeConfig status and Events. A node no NodeConfig selects runs
in `hami-core` mode, HAMi's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from migweaver.core.resources.models import FilterDevices, NodeConfig, OperatingMode

DEFAULT_MODE: OperatingMode = "hami-core"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How one node's GPUs are run: the mode, the GPUs to leave alone, and why."""

    mode: OperatingMode
    filter_devices: FilterDevices
    source: str | None
    """Name of the NodeConfig in force, None for the default."""
    conflicts: tuple[str, ...] = ()
    """Names of other NodeConfigs that select the node but lost to `source`."""

    def manages(self, gpu_index: int, gpu_uuid: str) -> bool:
        """False for a GPU listed in `filterDevices` (by index or UUID, case-insensitive)."""
        if gpu_index in self.filter_devices.index:
            return False
        return gpu_uuid.lower() not in {u.lower() for u in self.filter_devices.uuid}


def _rank(config: NodeConfig) -> tuple[int, str, str]:
    specific = 0 if config.spec.node_name is not None else 1
    created = str(config.metadata.get("creationTimestamp") or "")
    return (specific, created, config.name)


def settings_for(
    node_name: str, labels: Mapping[str, str], configs: Iterable[NodeConfig]
) -> NodeSettings:
    """The settings in force on a node, from every NodeConfig in the cluster."""
    matching = sorted(
        (c for c in configs if not c.metadata.get("deletionTimestamp")),
        key=_rank,
    )
    matching = [c for c in matching if c.spec.applies_to(node_name, labels)]
    if not matching:
        return NodeSettings(DEFAULT_MODE, FilterDevices(), None)
    winner, *others = matching
    return NodeSettings(
        mode=winner.spec.operating_mode,
        filter_devices=winner.spec.filter_devices,
        source=winner.name,
        conflicts=tuple(c.name for c in others),
    )
