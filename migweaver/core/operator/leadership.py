"""Which replica of the operator leads: a `coordination.k8s.io/v1` Lease, as client-go's
leader election keeps it (`kubectl get lease -n migweaver-system`).

The holder renews `spec.renewTime` every few seconds. Another replica takes the Lease over
only when it has seen the same record unchanged for longer than `leaseDurationSeconds`
on its own monotonic clock (so clocks of different hosts never need to agree), or when the
holder released it (an empty `holderIdentity`, written on a clean stop).

Pure: times are passed in; `decide` says what to write, the shell (`operator/leader.py`)
writes it with the Lease's resourceVersion, so two replicas never both win one round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Decision",
    "LeaseRecord",
    "Observed",
    "decide",
    "lease_record",
    "lease_spec",
    "released_spec",
]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The parts of a Lease's spec that leader election reads."""

    holder: str = ""
    duration_s: int = 0
    renew_time: str = ""
    acquire_time: str = ""
    transitions: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def lease_record(lease: Mapping[str, Any] | None) -> LeaseRecord | None:
    """The record of a Lease object as the API returns it; None when there is no Lease.
    Never raises: fields of the wrong type count as absent."""
    if lease is None:
        return None
    spec = lease.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}

    def text(key: str) -> str:
        value = spec.get(key)
        return value if isinstance(value, str) else ""

    return LeaseRecord(
        holder=text("holderIdentity"),
        duration_s=_int(spec.get("leaseDurationSeconds")),
        renew_time=text("renewTime"),
        acquire_time=text("acquireTime"),
        transitions=_int(spec.get("leaseTransitions")),
    )


@dataclass(frozen=True, slots=True)
class Observed:
    """The record a replica last saw, and when it first saw it (monotonic seconds)."""

    record: LeaseRecord
    since: float


@dataclass(frozen=True, slots=True)
class Decision:
    """`create` the Lease, `renew` or `acquire` it (a conditional replace), or `wait`."""

    action: Literal["create", "renew", "acquire", "wait"]
    observed: Observed | None
    """What to remember for the next look."""


def decide(
    record: LeaseRecord | None,
    me: str,
    previous: Observed | None,
    now: float,
    duration_s: int,
) -> Decision:
    """What replica `me` does with the Lease it just read (`record`; None: no Lease)."""
    if record is None:
        return Decision("create", None)
    observed = previous if previous is not None and previous.record == record else None
    observed = observed or Observed(record, now)
    if record.holder == me:
        return Decision("renew", observed)
    if not record.holder:
        return Decision("acquire", observed)  # released by a replica that stopped cleanly
    duration = record.duration_s if record.duration_s > 0 else duration_s
    if now - observed.since > duration:
        return Decision("acquire", observed)
    return Decision("wait", observed)


def lease_spec(
    record: LeaseRecord | None, me: str, duration_s: int, now_rfc3339: str
) -> dict[str, Any]:
    """The spec `me` writes to create, renew or acquire the Lease (`record`: as read)."""
    mine = record is not None and record.holder == me
    transitions = record.transitions if record is not None else 0
    if record is not None and not mine:
        transitions += 1
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration_s,
        "acquireTime": record.acquire_time if mine and record is not None else now_rfc3339,
        "renewTime": now_rfc3339,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now_rfc3339: str) -> dict[str, Any]:
    """The spec a holder writes when it stops cleanly: nobody holds the Lease, so another
    replica takes it at its next look instead of after the whole duration."""
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquire_time or None,
        "renewTime": now_rfc3339,
        "leaseTransitions": record.transitions,
    }
