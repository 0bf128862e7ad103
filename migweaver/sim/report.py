"""The simulation report: statistics of a run, as text or JSON-ready data."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migweaver.sim.results import PodOutcome, Sample, SimResult

__all__ = [
    "Summary",
    "format_duration",
    "percentile",
    "render_text",
    "report_json",
    "summarize",
    "time_weighted",
    "timeline",
]

TIMELINE_POINTS = 12
MAX_LISTED = 15


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (`p` in 0-100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def time_weighted(samples: Sequence[Sample], horizon: float, field: str) -> tuple[float, float]:
    """(mean over [0, horizon], peak) of a sample field, read as a step function: each
    sample's value holds until the next sample (0 before the first)."""
    if horizon <= 0 or not samples:
        return 0.0, 0.0
    total = 0.0
    peak = 0.0
    for i, sample in enumerate(samples):
        if sample.time >= horizon:
            break
        value = float(getattr(sample, field))
        until = samples[i + 1].time if i + 1 < len(samples) else horizon
        total += value * (min(until, horizon) - sample.time)
        peak = max(peak, value)
    return total / horizon, peak


def timeline(
    samples: Sequence[Sample], horizon: float, points: int = TIMELINE_POINTS
) -> list[Sample]:
    """The fleet at `points` evenly spaced instants from t=0 to the horizon (the last
    sample at or before each instant)."""
    result: list[Sample] = []
    if horizon <= 0:
        return result
    k = 0
    current = Sample(0.0, 0, 0, 0.0, 0.0, 0.0)
    for i in range(points + 1):
        t = horizon * i / points
        while k < len(samples) and samples[k].time <= t:
            current = samples[k]
            k += 1
        result.append(
            Sample(t, current.running, current.pending, current.memory_allocated,
                   current.memory_requested, current.compute)
        )  # fmt: skip
    return result


def format_duration(seconds: float | None) -> str:
    """`45s`, `12m30s`, `3h05m`: short and exact enough for a report."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers of a run."""

    pods: int
    placed: int
    unplaced: list[PodOutcome]
    wait_p50: float | None
    wait_p95: float | None
    wait_max: float | None
    wait_mean: float | None
    memory_allocated: tuple[float, float]
    memory_requested: tuple[float, float]
    compute: tuple[float, float]


def summarize(result: SimResult) -> Summary:
    waits = [p.waited for p in result.pods if p.waited is not None]
    return Summary(
        pods=len(result.pods),
        placed=sum(1 for p in result.pods if p.placed),
        unplaced=[p for p in result.pods if not p.placed],
        wait_p50=percentile(waits, 50),
        wait_p95=percentile(waits, 95),
        wait_max=max(waits) if waits else None,
        wait_mean=sum(waits) / len(waits) if waits else None,
        memory_allocated=time_weighted(result.samples, result.horizon, "memory_allocated"),
        memory_requested=time_weighted(result.samples, result.horizon, "memory_requested"),
        compute=time_weighted(result.samples, result.horizon, "compute"),
    )


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def render_text(result: SimResult) -> str:
    """The report as a person reads it."""
    s = summarize(result)
    nodes = len({g.split("/")[0] for g in result.gpus})
    node_word = "node" if nodes == 1 else "nodes"
    lines = [
        f"SCENARIO     {result.scenario} (policy {result.policy}): "
        f"{format_duration(result.horizon)} simulated, "
        f"{len(result.gpus)} GPUs on {nodes} {node_word}",
        f"PODS         {s.placed} of {s.pods} placed; {len(s.unplaced)} not placed by the end",
        f"PENDING      p50 {format_duration(s.wait_p50)}, p95 {format_duration(s.wait_p95)}, "
        f"max {format_duration(s.wait_max)} (placed pods, from arrival to start)",
        f"GPU MEMORY   held by running pods: mean {_pct(s.memory_allocated[0])}, peak "
        f"{_pct(s.memory_allocated[1])}; asked for: mean {_pct(s.memory_requested[0])}, "
        f"peak {_pct(s.memory_requested[1])}",
        f"GPU COMPUTE  held by running pods: mean {_pct(s.compute[0])}, peak {_pct(s.compute[1])}",
        f"RECONFIG     {result.reconfigurations} GPU reconfigurations in {result.plans} plans: "
        f"{result.instances_created} instances created, {result.instances_destroyed} destroyed, "
        f"{result.mode_switches} MIG mode switches; {len(result.failures)} failed agent passes",
        "",
        f"{'TIME':<8} {'RUNNING':>7} {'PENDING':>7} {'MEMORY':>7} {'COMPUTE':>7}",
    ]
    for sample in timeline(result.samples, result.horizon):
        lines.append(
            f"{format_duration(sample.time):<8} {sample.running:>7} {sample.pending:>7} "
            f"{100 * sample.memory_allocated:>6.1f}% {100 * sample.compute:>6.1f}%"
        )
    if s.unplaced:
        codes = Counter(p.code or "NotPlanned" for p in s.unplaced)
        by_code = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
        lines += ["", f"NOT PLACED: {len(s.unplaced)} pods ({by_code})"]
        for pod in s.unplaced[:MAX_LISTED]:
            lines.append(f"{pod.key}: {pod.reason or 'not planned before the end'}")
        if len(s.unplaced) > MAX_LISTED:
            lines.append(f"... and {len(s.unplaced) - MAX_LISTED} more (--json lists them all)")
    if result.failures:
        lines += ["", f"AGENT FAILURES: {len(result.failures)}", *result.failures[:MAX_LISTED]]
    return "\n".join(lines)


def render_comparison(first: SimResult, second: SimResult) -> str:
    """Two runs of one scenario side by side (`migweaver simulate --compare`)."""
    a, b = summarize(first), summarize(second)
    rows = [
        ("pods placed", f"{a.placed} of {a.pods}", f"{b.placed} of {b.pods}"),
        ("pending p50", format_duration(a.wait_p50), format_duration(b.wait_p50)),
        ("pending p95", format_duration(a.wait_p95), format_duration(b.wait_p95)),
        ("pending max", format_duration(a.wait_max), format_duration(b.wait_max)),
        ("memory held, mean", _pct(a.memory_allocated[0]), _pct(b.memory_allocated[0])),
        ("memory asked for, mean", _pct(a.memory_requested[0]), _pct(b.memory_requested[0])),
        ("compute held, mean", _pct(a.compute[0]), _pct(b.compute[0])),
        ("GPU reconfigurations", str(first.reconfigurations), str(second.reconfigurations)),
    ]
    width = max(len(first.policy), len(second.policy), 12)
    lines = [
        f"COMPARED WITH {second.policy} (same scenario, same fake GPUs)",
        f"{'':<24} {first.policy:>{width}} {second.policy:>{width}}",
    ]
    lines += [f"{name:<24} {x:>{width}} {y:>{width}}" for name, x, y in rows]
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def report_json(result: SimResult) -> dict[str, Any]:
    """The report as JSON-ready data (camelCase)."""
    s = summarize(result)
    return {
        "scenario": result.scenario,
        "policy": result.policy,
        "horizonSeconds": result.horizon,
        "gpus": len(result.gpus),
        "pods": {"total": s.pods, "placed": s.placed, "notPlaced": len(s.unplaced)},
        "pendingSeconds": {
            "p50": _round(s.wait_p50),
            "p95": _round(s.wait_p95),
            "max": _round(s.wait_max),
            "mean": _round(s.wait_mean),
        },
        "utilisation": {
            "memoryAllocated": {
                "mean": _round(s.memory_allocated[0]),
                "peak": _round(s.memory_allocated[1]),
            },
            "memoryRequested": {
                "mean": _round(s.memory_requested[0]),
                "peak": _round(s.memory_requested[1]),
            },
            "compute": {"mean": _round(s.compute[0]), "peak": _round(s.compute[1])},
            "timeline": [
                {
                    "time": t.time,
                    "running": t.running,
                    "pending": t.pending,
                    "memoryAllocated": _round(t.memory_allocated),
                    "memoryRequested": _round(t.memory_requested),
                    "compute": _round(t.compute),
                }
                for t in timeline(result.samples, result.horizon, 48)
            ],
        },
        "reconfigurations": {
            "plans": result.plans,
            "gpuReconfigurations": result.reconfigurations,
            "instancesCreated": result.instances_created,
            "instancesDestroyed": result.instances_destroyed,
            "migModeSwitches": result.mode_switches,
            "failedAgentPasses": len(result.failures),
            "failures": result.failures,
            "podsNotApplied": result.start_failures,
        },
        "notPlaced": [
            {"pod": p.key, "code": p.code or "NotPlanned", "reason": p.reason} for p in s.unplaced
        ],
        "placedPods": [
            {
                "pod": p.key,
                "arrival": p.arrival,
                "started": p.started,
                "ended": p.ended,
                "node": p.node,
                "devices": [
                    {
                        "gpu": d.gpu,
                        "mode": d.mode,
                        "profile": d.profile,
                        "placement": None
                        if d.start_slot is None
                        else {"start": d.start_slot, "size": d.slots},
                        "memoryMiB": d.memory_mib,
                        "requestedMiB": d.requested_mib,
                    }
                    for d in p.devices
                ],
            }
            for p in result.pods
            if p.placed
        ],
    }
