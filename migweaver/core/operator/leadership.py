"""Which replica of the operator is active: kopf's peering rule, read from its peering object.

Kopf pauses an operator's handlers while another live peer with a higher priority exists
(and pauses every peer when two live ones share the highest priority). The operator's own
work loop applies the same rule to the same `ClusterKopfPeering` object before each round,
so the replica kopf pauses also makes no writes of its own. A peer is alive until its
`lastseen` plus its `lifetime` (seconds), as kopf counts it.

Pure: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

__all__ = ["is_active"]


def _alive(peer: Mapping[str, Any], now: datetime) -> bool:
    seen = peer.get("lastseen")
    if not isinstance(seen, str):
        return True  # kopf counts a peer without lastseen as seen now
    try:
        when = datetime.fromisoformat(seen.replace("Z", "+00:00"))
    except ValueError:
        return False
    lifetime = peer.get("lifetime", 60)
    try:
        seconds = int(lifetime)
    except (TypeError, ValueError):
        seconds = 60
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    try:
        return when + timedelta(seconds=seconds) > now
    except OverflowError:
        return seconds > 0  # beyond the calendar: alive for ever, or long dead


def is_active(peers: Mapping[str, Any] | None, me: str, priority: int, now: datetime) -> bool:
    """Whether the peer `me` with `priority` may work, given the peering object's status
    (identity -> {priority, lifetime, lastseen}). No peering object: not active."""
    if peers is None:
        return False
    for identity, info in peers.items():
        if identity == me or not isinstance(info, Mapping) or not _alive(info, now):
            continue
        other = info.get("priority", 0)
        if isinstance(other, int) and other >= priority:
            return False
    return True
