"""Statistics of the simulation report: percentiles, time-weighted means, the timeline."""

from __future__ import annotations

import pytest

from migweaver.sim.report import (
    format_duration,
    percentile,
    render_text,
    report_json,
    summarize,
    time_weighted,
    timeline,
)
from migweaver.sim.results import DeviceUse, PodOutcome, Sample, SimResult


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        pytest.param([], 50, None, id="empty"),
        pytest.param([7.0], 95, 7.0, id="one-value"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.0, id="p50-even-nearest-rank"),
        pytest.param([5.0, 1.0, 3.0], 50, 3.0, id="p50-odd-unsorted"),
        pytest.param([float(i) for i in range(1, 101)], 95, 95.0, id="p95-of-1-to-100"),
        pytest.param([float(i) for i in range(1, 21)], 95, 19.0, id="p95-of-1-to-20"),
        pytest.param([1.0, 2.0], 100, 2.0, id="p100-is-max"),
        pytest.param([1.0, 2.0], 0, 1.0, id="p0-is-min"),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def sample(time: float, memory: float, running: int = 0) -> Sample:
    return Sample(time, running, 0, memory, memory / 2, memory)


@pytest.mark.parametrize(
    ("samples", "horizon", "expected"),
    [
        pytest.param([], 100.0, (0.0, 0.0), id="no-samples"),
        pytest.param([sample(0, 0.5)], 100.0, (0.5, 0.5), id="constant"),
        pytest.param([sample(0, 1.0), sample(25, 0.0)], 100.0, (0.25, 1.0), id="step-down"),
        pytest.param([sample(50, 1.0)], 100.0, (0.5, 1.0), id="zero-before-first-sample"),
        pytest.param([sample(0, 0.2), sample(100, 0.9)], 100.0, (0.2, 0.2),
                     id="sample-at-horizon-does-not-count"),
        pytest.param([sample(0, 0.4)], 0.0, (0.0, 0.0), id="empty-horizon"),
    ],
)  # fmt: skip
def test_time_weighted_mean_and_peak(
    samples: list[Sample], horizon: float, expected: tuple[float, float]
) -> None:
    assert time_weighted(samples, horizon, "memory_allocated") == pytest.approx(expected)


def test_timeline_takes_the_last_sample_at_or_before_each_instant() -> None:
    samples = [sample(0, 0.1, 1), sample(30, 0.5, 5), sample(90, 0.0, 0)]
    points = timeline(samples, 100.0, points=4)
    assert [(p.time, p.running) for p in points] == [
        (0.0, 1),
        (25.0, 1),
        (50.0, 5),
        (75.0, 5),
        (100.0, 0),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(0, "0s", id="zero"),
        pytest.param(59.6, "1m00s", id="rounds-up-to-a-minute"),
        pytest.param(754, "12m34s", id="minutes"),
        pytest.param(3 * 3600 + 5 * 60 + 59, "3h05m", id="hours"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def result() -> SimResult:
    device = DeviceUse("n/gpu0", "mig", "1g.10gb", 6, 1, 9728, 8000, 1 / 7)
    pods = [
        PodOutcome("a/one", 0.0, 100.0, started=10.0, ended=110.0, node="n", devices=(device,)),
        PodOutcome("a/two", 5.0, 100.0, started=35.0, ended=135.0, node="n", devices=(device,)),
        PodOutcome("a/big", 6.0, 100.0, code="TooLarge", reason="asks too much"),
    ]
    samples = [
        Sample(0.0, 0, 1, 0.0, 0.0, 0.0),
        Sample(10.0, 1, 2, 0.5, 0.4, 0.25),
        Sample(35.0, 2, 1, 1.0, 0.8, 0.5),
        Sample(135.0, 0, 1, 0.0, 0.0, 0.0),
    ]
    return SimResult(
        scenario="s",
        policy="migweaver",
        horizon=200.0,
        gpus=("n/gpu0",),
        gpu_memory={"n/gpu0": 81920},
        pods=pods,
        samples=samples,
        plans=3,
        reconfigurations=2,
        instances_created=2,
    )


def test_summary_counts_and_waits() -> None:
    s = summarize(result())
    assert (s.pods, s.placed, [p.key for p in s.unplaced]) == (3, 2, ["a/big"])
    assert (s.wait_p50, s.wait_p95, s.wait_max) == (10.0, 30.0, 30.0)
    # 0.5 for 25 s, 1.0 for 100 s, 0 for the rest of 200 s.
    assert s.memory_allocated == pytest.approx((0.5625, 1.0))


def test_json_report_shape() -> None:
    data = report_json(result())
    assert data["pods"] == {"total": 3, "placed": 2, "notPlaced": 1}
    assert data["pendingSeconds"] == {"p50": 10.0, "p95": 30.0, "max": 30.0, "mean": 20.0}
    assert data["notPlaced"] == [{"pod": "a/big", "code": "TooLarge", "reason": "asks too much"}]
    assert data["reconfigurations"]["gpuReconfigurations"] == 2
    assert data["placedPods"][0]["devices"][0]["placement"] == {"start": 6, "size": 1}
    assert len(data["utilisation"]["timeline"]) == 49


def test_text_report_names_every_figure() -> None:
    text = render_text(result())
    assert "2 of 3 placed; 1 not placed by the end" in text
    assert "p50 10s, p95 30s, max 30s" in text
    assert "held by running pods: mean 56.2 %, peak 100.0 %" in text
    assert "NOT PLACED: 1 pods (TooLarge 1)" in text
    assert "a/big: asks too much" in text
