"""Leader election of the operator's replicas on a Lease (`core/operator/leadership.py`).

One task per replica looks at the Lease every `renew_s` seconds: the holder renews it,
the others wait until it expires (or was released) and then take it. The work loop asks
`leading()` before every round; a holder that could not renew for `deadline_s` stops
counting itself as the leader before anyone else may take the Lease over, so two
replicas never write at once. On a clean stop the holder releases the Lease, so the other
replica takes over at its next look; a killed holder is replaced once the Lease expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from migweaver.core.operator.leadership import (
    Observed,
    decide,
    lease_record,
    lease_spec,
    released_spec,
)
from migweaver.k8s.client import ApiError, Conflict, NotFound
from migweaver.k8s.leases import Leases, now_micro
from migweaver.logs import get_logger

log = get_logger("migweaver.operator")


class LeaderElector:
    def __init__(
        self,
        leases: Leases,
        name: str,
        identity: str,
        *,
        duration_s: int = 15,
        renew_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.renew_s = renew_s
        # Stop leading well before the others may take over (client-go's renew deadline).
        self.deadline_s = duration_s * 2 / 3
        self._mono = monotonic
        self._renewed: float | None = None
        self._observed: Observed | None = None

    def leading(self) -> bool:
        """Whether this replica holds the Lease, renewed recently enough to be sure."""
        return self._renewed is not None and self._mono() - self._renewed < self.deadline_s

    async def run(self, stop: asyncio.Event) -> None:
        """Look at the Lease every `renew_s` until `stop`; then release it if held."""
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except ApiError as exc:
                    log.warning("leader election failed", lease=self.name, error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_s)
        finally:
            await self.release()

    async def step(self) -> None:
        """One look: create, renew, acquire, or wait."""
        lease = await self.leases.get(self.name)
        record = lease_record(lease)
        now = self._mono()
        decision = decide(record, self.identity, self._observed, now, self.duration_s)
        self._observed = decision.observed
        if decision.action == "wait":
            if self._renewed is not None:
                log.warning("lost the Lease", lease=self.name, holder=record and record.holder)
            self._renewed = None
            return
        spec = lease_spec(record, self.identity, self.duration_s, now_micro())
        was_leading = self.leading()
        try:
            if lease is None:
                await self.leases.create(self.name, spec)
            else:
                await self.leases.replace(lease, spec)
        except (Conflict, NotFound):
            return  # another replica wrote it first: look again next time
        self._renewed = now
        if not was_leading:
            log.info("this replica leads", identity=self.identity, lease=self.name)

    async def release(self) -> None:
        """Give the Lease up (best effort) if this replica holds it."""
        if self._renewed is None:
            return
        self._renewed = None
        try:
            lease = await self.leases.get(self.name)
            record = lease_record(lease)
            if lease is None or record is None or record.holder != self.identity:
                return
            await self.leases.replace(lease, released_spec(record, now_micro()))
            log.info("released the Lease", lease=self.name)
        except ApiError as exc:
            log.warning("could not release the Lease", lease=self.name, error=str(exc))
