"""How long one planning round takes, and how it grows with pods and GPUs.

The cluster and pods come from `workloads.py` with fixed seeds: nodes of 8 GPUs (mostly
MIG A100-80GB, H100, A100-40GB and A30; 10 % hami-core nodes), 30 % of the GPUs already
running 1-3 instances (or hami-core shares), pods of realistic sizes (a tenth of them two
devices, some pinned to a mode). Each size is planned `--repeat` times; the median is
reported, in wall-clock seconds of one `plan()` call (pure Python, one core).

Run: python -m benchmarks.bench_planner [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.workloads import random_cluster, random_pods
from migweaver.core.planning.planner import plan

HEADLINE = (1000, 1000)
"""(pods, nodes): the target is planning 1,000 pods over 1,000 nodes x 8 GPUs in < 1 s."""
SIZES = [(100, 100), (1000, 100), (100, 1000), (1000, 1000), (5000, 1000), (1000, 2000)]
QUICK_SIZES = [(100, 100), (1000, 1000)]


@dataclass(frozen=True)
class Timing:
    pods: int
    nodes: int
    seconds: float
    placed: int

    @property
    def gpus(self) -> int:
        return self.nodes * 8


def measure(pods: int, nodes: int, repeat: int, seed: int = 7) -> Timing:
    """Median time of planning `pods` pods on `nodes` nodes of 8 GPUs."""
    rng = random.Random(seed)
    snapshot = random_cluster(rng, nodes, 8)
    pending = random_pods(rng, pods)
    times = []
    placed = 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = plan(snapshot, pending)
        times.append(time.perf_counter() - started)
        placed = len(result.assignments)
    return Timing(pods, nodes, statistics.median(times), placed)


def markdown(timings: Sequence[Timing]) -> str:
    lines = [
        "| pending pods | nodes | GPUs | pods placed | plan time (median) | per pod |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.pods:,} | {t.nodes:,} | {t.gpus:,} | {t.placed:,} | {t.seconds:.3f} s "
            f"| {t.seconds / t.pods * 1e3:.2f} ms |"
        )
    return "\n".join(lines)


def run(repeat: int, quick: bool) -> list[Timing]:
    return [measure(p, n, repeat) for p, n in (QUICK_SIZES if quick else SIZES)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="two sizes only")
    args = parser.parse_args(argv)
    print(markdown(run(args.repeat, args.quick)))


if __name__ == "__main__":
    main()
