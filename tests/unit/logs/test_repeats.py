"""A failure repeated every second is logged once, then ever more rarely, with a count."""

from __future__ import annotations

import pytest

from migweaver.core.repeats import Repeats

Seq = list[tuple[float, str, str]]  # (time, key, message)


def logged(occurrences: Seq, *, clear_at: float | None = None) -> list[tuple[float, int]]:
    """(time, count) of each occurrence that is logged."""
    repeats = Repeats(interval=10.0, max_interval=40.0)
    out = []
    for now, key, message in occurrences:
        if clear_at is not None and now >= clear_at:
            repeats.clear(key)
            clear_at = None
        count = repeats.occurred(key, message, now)
        if count is not None:
            out.append((now, count))
    return out


def every_second(until: int, message: str = "bind failed", key: str = "plugin") -> Seq:
    return [(float(t), key, message) for t in range(until)]


@pytest.mark.parametrize(
    ("occurrences", "expected"),
    [
        pytest.param(every_second(1), [(0.0, 1)], id="first-is-logged"),
        pytest.param(every_second(10), [(0.0, 1)], id="repeats-within-the-interval-are-quiet"),
        pytest.param(
            every_second(100),
            # 10 s, then 20 s, then 40 s (the cap), 40 s; each line counts the quiet ones.
            [(0.0, 1), (10.0, 10), (30.0, 20), (70.0, 40)],
            id="backoff-doubles-up-to-the-cap-with-counts",
        ),
        pytest.param(
            [(0.0, "k", "a"), (1.0, "k", "b"), (2.0, "k", "b")],
            [(0.0, 1), (1.0, 1)],
            id="a-different-message-is-news",
        ),
        pytest.param(
            [(0.0, "k1", "a"), (1.0, "k2", "a"), (2.0, "k1", "a")],
            [(0.0, 1), (1.0, 1)],
            id="keys-are-independent",
        ),
    ],
)
def test_repeats(occurrences: Seq, expected: list[tuple[float, int]]) -> None:
    assert logged(occurrences) == expected


def test_after_clear_the_failure_is_news_again() -> None:
    assert logged(every_second(6), clear_at=3.0) == [(0.0, 1), (3.0, 1)]


@pytest.mark.parametrize(
    ("interval", "max_interval"),
    [pytest.param(0.0, 10.0, id="zero"), pytest.param(20.0, 10.0, id="cap-below-interval")],
)
def test_bad_intervals_are_refused(interval: float, max_interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        Repeats(interval, max_interval)
