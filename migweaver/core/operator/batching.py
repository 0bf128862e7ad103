"""The operator's batching window: plan when arrivals pause, or when the batch is old enough.

Pods are planned in batches so that pods created together (a Job's pods, a burst of
notebooks) are planned together, which packs them better than one plan each. The window
opens with the first arrival after a plan. The plan is due when no new arrival came for
`idle` seconds, or `max_wait` seconds after the window opened, whichever is first, so a
steady trickle of pods cannot postpone planning for ever.

Pure arithmetic on times passed in (monotonic seconds): no clock, no sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchWindow"]


@dataclass(frozen=True, slots=True)
class BatchWindow:
    """An open (or closed) batching window. Immutable: every method returns a new one."""

    idle: float = 1.0
    max_wait: float = 5.0
    opened: float | None = None
    """When the first arrival of this batch came; None while no batch is open."""
    last: float | None = None
    """When the latest arrival came."""

    @property
    def is_open(self) -> bool:
        return self.opened is not None

    def arrive(self, now: float) -> BatchWindow:
        """An arrival at `now`: opens the window, or extends its idle period."""
        opened = self.opened if self.opened is not None else now
        last = now if self.last is None else max(self.last, now)
        return BatchWindow(self.idle, self.max_wait, opened, last)

    def due_at(self) -> float | None:
        """When the plan is due; None while no batch is open."""
        if self.opened is None or self.last is None:
            return None
        return min(self.last + self.idle, self.opened + self.max_wait)

    def due(self, now: float) -> bool:
        at = self.due_at()
        return at is not None and now >= at

    def wait(self, now: float) -> float | None:
        """Seconds from `now` until the plan is due (0 when due); None while closed."""
        at = self.due_at()
        return None if at is None else max(0.0, at - now)

    def close(self) -> BatchWindow:
        """The window after a plan: closed until the next arrival."""
        return BatchWindow(self.idle, self.max_wait)
