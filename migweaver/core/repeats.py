"""Say a failure that repeats once, then ever more rarely, with a count (pure: time is passed in).

A loop that retries every second (the device plugin binding its socket in a directory
that does not exist, a watch that keeps failing) must not write a line a second. `Repeats`
decides, for each occurrence of a message under a key, whether to log it:

- the first occurrence of a message is logged at once;
- the same message again is logged only once `interval` has passed since the last line,
  and the interval then doubles, up to `max_interval`; the line carries the count of
  occurrences since the previous line (the ones kept quiet, plus this one);
- a different message under the same key is logged at once (the situation changed), and
  so is the first occurrence after `clear` (the failure ended and came back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Repeats"]


@dataclass(slots=True)
class _Run:
    message: str
    logged_at: float
    interval: float
    quiet: int = 0
    """Occurrences since the last logged line."""


@dataclass(slots=True)
class Repeats:
    """Which occurrences of repeated messages to log; see the module docstring."""

    interval: float = 10.0
    max_interval: float = 600.0
    _runs: dict[str, _Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.interval <= self.max_interval:
            raise ValueError("need 0 < interval <= max_interval")

    def occurred(self, key: str, message: str, now: float) -> int | None:
        """This message happened now: None to keep quiet, else the count to log with it
        (1 for a first occurrence, n when n-1 identical ones were kept quiet before it)."""
        run = self._runs.get(key)
        if run is None or run.message != message:
            self._runs[key] = _Run(message, now, self.interval)
            return 1
        run.quiet += 1
        if now - run.logged_at < run.interval:
            return None
        count, run.quiet = run.quiet, 0
        run.logged_at = now
        run.interval = min(self.max_interval, run.interval * 2)
        return count

    def clear(self, key: str | None = None) -> None:
        """The failure under `key` (every key when None) is over: its next one is news."""
        if key is None:
            self._runs.clear()
        else:
            self._runs.pop(key, None)
