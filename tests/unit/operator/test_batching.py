"""The batching window: plan after `idle` seconds without arrivals, or `max_wait` after the
first arrival, whichever comes first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migweaver.core.operator.batching import BatchWindow


def window(*arrivals: float, idle: float = 1.0, max_wait: float = 5.0) -> BatchWindow:
    result = BatchWindow(idle, max_wait)
    for at in arrivals:
        result = result.arrive(at)
    return result


@pytest.mark.parametrize(
    ("arrivals", "now", "due", "wait"),
    [
        pytest.param((), 100.0, False, None, id="closed-window-is-never-due"),
        pytest.param((10.0,), 10.5, False, 0.5, id="one-pod-waits-for-the-idle-period"),
        pytest.param((10.0,), 11.0, True, 0.0, id="one-pod-due-after-idle"),
        pytest.param((10.0, 10.8), 11.5, False, 0.3, id="a-new-arrival-extends-idle"),
        pytest.param((10.0, 10.8), 11.8, True, 0.0, id="due-idle-after-the-last"),
        pytest.param(
            (10.0, 10.9, 11.8, 12.7, 13.6, 14.5), 15.0, True, 0.0, id="trickle-capped-by-max"
        ),
        pytest.param((10.0, 10.9, 11.8, 12.7, 13.6), 14.0, False, 0.6, id="trickle-before-max"),
        pytest.param((10.0, 9.0), 10.5, False, 0.5, id="late-clock-never-moves-last-back"),
    ],
)
def test_window(arrivals: tuple[float, ...], now: float, due: bool, wait: float | None) -> None:
    w = window(*arrivals)
    assert w.due(now) is due
    found = w.wait(now)
    if wait is None:
        assert found is None
    else:
        assert found == pytest.approx(wait)


def test_close_forgets_the_batch() -> None:
    closed = window(10.0, 10.5).close()
    assert not closed.is_open
    assert closed.due_at() is None
    assert (closed.idle, closed.max_wait) == (1.0, 5.0)


@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=30),
    st.floats(0.01, 10),
    st.floats(0.01, 30),
)
def test_plan_is_never_later_than_max_wait_nor_earlier_than_idle(
    arrivals: list[float], idle: float, max_wait: float
) -> None:
    ordered = sorted(arrivals)
    w = window(*ordered, idle=idle, max_wait=max_wait)
    at = w.due_at()
    assert at is not None
    assert at <= ordered[0] + max_wait + 1e-9
    assert at >= min(ordered[-1] + idle, ordered[0] + max_wait) - 1e-9
