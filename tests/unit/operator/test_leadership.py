"""Leader election on a Lease (`core/operator/leadership.py`, `operator/leader.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from migweaver.core.operator.leadership import (
    LeaseRecord,
    Observed,
    decide,
    lease_record,
    lease_spec,
    released_spec,
)
from migweaver.k8s.client import ApiError, Conflict
from migweaver.operator.leader import LeaderElector

OTHER = LeaseRecord(holder="other", duration_s=15, renew_time="t1", transitions=2)


@pytest.mark.parametrize(
    ("record", "previous", "now", "action"),
    [
        pytest.param(None, None, 0.0, "create", id="no-lease-yet"),
        pytest.param(LeaseRecord(holder="me", duration_s=15), None, 0.0, "renew", id="mine"),
        pytest.param(LeaseRecord(duration_s=1), None, 0.0, "acquire", id="released"),
        pytest.param(OTHER, None, 100.0, "wait", id="first-look-at-a-holder"),
        pytest.param(OTHER, Observed(OTHER, 90.0), 100.0, "wait", id="unchanged-for-10s"),
        pytest.param(OTHER, Observed(OTHER, 80.0), 100.0, "acquire", id="unchanged-for-20s"),
        pytest.param(
            LeaseRecord(holder="other", duration_s=15, renew_time="t2"),
            Observed(OTHER, 80.0),
            100.0,
            "wait",
            id="renewed-since-the-last-look",
        ),
        pytest.param(
            LeaseRecord(holder="other", duration_s=0),
            Observed(LeaseRecord(holder="other", duration_s=0), 70.0),
            100.0,
            "acquire",
            id="no-duration-uses-ours",
        ),
    ],
)
def test_decide(
    record: LeaseRecord | None, previous: Observed | None, now: float, action: str
) -> None:
    assert decide(record, "me", previous, now, 15).action == action


def test_a_renewed_lease_restarts_the_count() -> None:
    first = decide(OTHER, "me", None, 0.0, 15)
    renewed = LeaseRecord(holder="other", duration_s=15, renew_time="t2")
    second = decide(renewed, "me", first.observed, 14.0, 15)
    assert second.observed == Observed(renewed, 14.0)
    assert decide(renewed, "me", second.observed, 28.0, 15).action == "wait"
    assert decide(renewed, "me", second.observed, 30.0, 15).action == "acquire"


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param({}, LeaseRecord(), id="no-spec"),
        pytest.param({"spec": "junk"}, LeaseRecord(), id="spec-not-a-mapping"),
        pytest.param(
            {"spec": {"holderIdentity": 7, "leaseDurationSeconds": "15", "leaseTransitions": True}},
            LeaseRecord(),
            id="wrong-types-count-as-absent",
        ),
        pytest.param(
            {"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "t"}},
            LeaseRecord(holder="a", duration_s=15, renew_time="t"),
            id="plain",
        ),
    ],
)
def test_lease_record_never_raises(lease: Any, expected: LeaseRecord | None) -> None:
    assert lease_record(lease) == expected


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = lease_spec(OTHER, "me", 15, "now")
    assert (taken["holderIdentity"], taken["leaseTransitions"], taken["acquireTime"]) == (
        "me",
        3,
        "now",
    )
    mine = LeaseRecord(holder="me", duration_s=15, acquire_time="then", transitions=3)
    renewed = lease_spec(mine, "me", 15, "now")
    assert (renewed["acquireTime"], renewed["renewTime"], renewed["leaseTransitions"]) == (
        "then",
        "now",
        3,
    )
    assert released_spec(mine, "now")["holderIdentity"] is None


class FakeLeases:
    """One Lease in memory, with resourceVersion checks like the API server's."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    async def get(self, name: str) -> dict[str, Any] | None:
        return None if self.lease is None else {**self.lease, "spec": dict(self.lease["spec"])}

    async def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise Conflict(409, "AlreadyExists", "create lease")
        self.version += 1
        self.lease = {"metadata": {"name": name, "resourceVersion": str(self.version)}}
        self.lease["spec"] = dict(spec)
        return self.lease

    async def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if lease["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "replace lease")
        self.version += 1
        self.lease = {"metadata": {**lease["metadata"], "resourceVersion": str(self.version)}}
        self.lease["spec"] = dict(spec)
        return self.lease


async def test_one_leader_and_a_take_over_after_the_lease_expires() -> None:
    clock = [0.0]
    leases = FakeLeases()

    def elector(identity: str) -> LeaderElector:
        return LeaderElector(
            leases,  # type: ignore[arg-type]
            "lease",
            identity,
            duration_s=15,
            monotonic=lambda: clock[0],
        )

    a, b = elector("a"), elector("b")
    await a.step()
    await b.step()
    assert (a.leading(), b.leading()) == (True, False)
    for _ in range(10):  # a renews every 2 s: b never takes over
        clock[0] += 2.0
        await a.step()
        await b.step()
        assert (a.leading(), b.leading()) == (True, False)
    # a is killed (no more renewals, no release): it stops trusting its lease after the
    # renew deadline, b takes over only once the whole duration passed without a renewal.
    clock[0] += 10.0
    assert not a.leading()
    await b.step()
    assert not b.leading()
    clock[0] += 6.0
    await b.step()
    assert b.leading()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "b"
    assert leases.lease["spec"]["leaseTransitions"] == 1


async def test_a_clean_stop_releases_the_lease_for_the_next_look() -> None:
    clock = [0.0]
    leases = FakeLeases()
    a = LeaderElector(leases, "lease", "a", monotonic=lambda: clock[0])  # type: ignore[arg-type]
    b = LeaderElector(leases, "lease", "b", monotonic=lambda: clock[0])  # type: ignore[arg-type]
    await a.step()
    await b.step()
    stop = asyncio.Event()
    stop.set()
    await a.run(stop)  # stops at once and releases
    assert not a.leading()
    clock[0] += 2.0
    await b.step()
    assert b.leading()


async def test_no_right_to_the_lease_is_logged_and_nobody_leads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Forbidden(FakeLeases):
        async def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
            raise ApiError(403, "Forbidden", "create lease")

    a = LeaderElector(Forbidden(), "lease", "a", renew_s=0.01)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await asyncio.sleep(0.05)
    assert not a.leading()
    stop.set()
    await task  # the refusal never ended the election loop
    assert any("403" in r.getMessage() for r in caplog.records)


async def test_another_replica_creating_the_lease_first_is_fine() -> None:
    leases = FakeLeases()
    await leases.create("lease", {"holderIdentity": "b", "leaseDurationSeconds": 15})
    a = LeaderElector(leases, "lease", "a")  # type: ignore[arg-type]
    await a.step()
    assert not a.leading()
