"""`migweaver simulate --chart FILE.png`: slice occupancy per GPU over time (matplotlib).

One band per GPU, its memory slots stacked vertically (8 on A100/H100, 4 on A30); every
device a pod ran on is a bar over the slots of its instance, from its start to its end,
coloured by compute slices. A hami-core share is drawn as a grey bar whose height is its
share of the GPU's memory. matplotlib is optional (`pip install migweaver[chart]`).
"""

from __future__ import annotations

from typing import Any

from migweaver.core.mig.profiles import compute_slices_of
from migweaver.sim.results import SimResult

__all__ = ["ChartUnavailable", "check_available", "write_chart"]

_COLOURS = {1: "#4C72B0", 2: "#55A868", 3: "#C44E52", 4: "#8172B2", 6: "#64B5CD", 7: "#CCB974"}


class ChartUnavailable(Exception):
    """matplotlib cannot be imported."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChartUnavailable(
            f"--chart needs matplotlib ({exc}); install it with: pip install 'migweaver[chart]'"
        ) from None
    return plt


def check_available() -> None:
    """Raise ChartUnavailable when matplotlib cannot be imported."""
    _pyplot()


def _stack(intervals: list[tuple[float, float, float]]) -> list[float]:
    """Lowest free offset (0-8) for each (start, end, height), first fit."""
    placed: list[tuple[float, float, float, float]] = []  # start, end, y, height
    offsets: list[float] = []
    for start, end, height in intervals:
        active = [p for p in placed if p[0] < end and start < p[1]]
        choices = sorted({0.0, *(p[2] + p[3] for p in active)})
        y = next(
            (
                c
                for c in choices
                if c + height <= 8.0001
                and all(not (c < p[2] + p[3] and p[2] < c + height) for p in active)
            ),
            0.0,
        )
        placed.append((start, end, y, height))
        offsets.append(y)
    return offsets


def write_chart(result: SimResult, path: str) -> None:
    """Draw the run's slice occupancy into `path` (PNG); raises ChartUnavailable."""
    plt = _pyplot()
    gpus = list(result.gpus)
    row = {gpu: i for i, gpu in enumerate(gpus)}
    band = 9.0
    height = max(3.0, 0.32 * len(gpus) + 1.5)
    fig, ax = plt.subplots(figsize=(12, height))
    hours = 3600.0
    shares: dict[str, list[tuple[float, float, float]]] = {}
    for pod in result.pods:
        if pod.started is None:
            continue
        end = pod.ended if pod.ended is not None else result.horizon
        for device in pod.devices:
            base = (len(gpus) - 1 - row[device.gpu]) * band
            if device.start_slot is not None and device.slots is not None:
                size = compute_slices_of(device.profile or "") or device.slots
                colour = _COLOURS.get(size, "#937860")
                ax.broken_barh(
                    [(pod.started / hours, (end - pod.started) / hours)],
                    (base + device.start_slot, device.slots),
                    facecolors=colour,
                    edgecolors="white",
                    linewidth=0.3,
                )
            else:
                memory = device.memory_mib / max(1, result.gpu_memory.get(device.gpu, 0))
                shares.setdefault(device.gpu, []).append((pod.started, end, 8 * memory))
    for gpu, intervals in shares.items():
        intervals.sort()
        base = (len(gpus) - 1 - row[gpu]) * band
        for (start, end, h), y in zip(intervals, _stack(intervals), strict=True):
            ax.broken_barh(
                [(start / hours, (end - start) / hours)],
                (base + y, h),
                facecolors="#999999",
                edgecolors="white",
                linewidth=0.3,
            )
    ax.set_yticks([(len(gpus) - 1 - i) * band + 4 for i in range(len(gpus))])
    ax.set_yticklabels(gpus, fontsize=6)
    ax.set_ylim(-1, len(gpus) * band)
    ax.set_xlim(0, max(result.horizon, 1.0) / hours)
    ax.set_xlabel("hours")
    ax.set_title(
        f"{result.scenario} ({result.policy}): memory slots in use per GPU "
        "(colour: instance size; grey: hami-core shares)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")  # PNG whatever the file name says
    plt.close(fig)
