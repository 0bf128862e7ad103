"""The simulator's virtual clock and event queue: time moves only from event to event.

Nothing sleeps: `pop` advances `now` to the next event. Events at the same time run in a
fixed order (by kind, then in the order they were scheduled), so a scenario always gives
the same run.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = ["Event", "EventKind", "EventQueue"]


class EventKind(IntEnum):
    """What happens; at equal times, lower values run first: pods end (freeing their
    devices), then pods start, then new pods arrive, then the operator plans."""

    END = 0
    START = 1
    ARRIVE = 2
    PLAN = 3


@dataclass(frozen=True, slots=True, order=True)
class Event:
    time: float
    kind: EventKind
    seq: int
    pod: str = field(default="", compare=False)


class EventQueue:
    """A priority queue of events and the current virtual time (seconds from t=0)."""

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0
        self.now = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: float, kind: EventKind, pod: str = "") -> Event:
        """Schedule an event; never in the past."""
        event = Event(max(time, self.now), kind, self._seq, pod)
        self._seq += 1
        heapq.heappush(self._heap, event)
        return event

    def peek_time(self) -> float | None:
        return self._heap[0].time if self._heap else None

    def pop(self) -> Event:
        """The next event; `now` moves to its time."""
        event = heapq.heappop(self._heap)
        self.now = event.time
        return event
