"""Run the benchmarks and write docs/benchmarks.md (`make bench`).

Inputs are generated with fixed seeds, so the tables change only when the code does
(times vary a little from run to run and from machine to machine).

The operator's figures come from the in-process API emulator and, when there is one, a
real control plane: the cluster of `--kubeconfig`, or one started for the run
(`benchmarks/control_plane.py`).

Run: python -m benchmarks.write_report [OUTPUT] [--quick] [--kubeconfig FILE] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import bench_operator, bench_planner, optimum, simulation
from benchmarks.control_plane import control_plane
from migweaver.core.planning.plan import PlannerOptions

OPTIMUM_INSTANCES = 300
OPTIMUM_SEED = 2024

INTRO = """\
# Benchmarks

Produced by `make bench` (`benchmarks/write_report.py`); do not edit by hand. Inputs are
generated with fixed seeds. Machine: {machine}.

## Planner speed

One call of `migweaver.core.planning.planner.plan` on a random cluster of nodes with 8 GPUs each
(mostly A100-80GB, H100, A100-40GB and A30 in MIG mode, 10 % hami-core nodes; 30 % of the
GPUs already run 1-3 instances or shares) and pending pods of realistic sizes
(`benchmarks/workloads.py`). Median of 3 runs, pure Python on one core.
**Target: 1,000 pending pods over 1,000 nodes x 8 GPUs in under 1 s.**

{speed}

Time grows linearly with the number of nodes (each distinct pod demand scores every node
once, from the node's distinct GPU states) and with the number of pods (each pod then
costs a heap pop and the few nodes that changed since). Repair retries
(docs/planner.md, "Repair") run only when pods x nodes is at most 50,000: in this table
only in the first row, where every pod fits at once and no retry is needed.

## Packing quality against the optimum

{instances} random small instances (1-3 nodes of 1-4 GPUs each, A100-40GB, A100-80GB,
H100 or A30; half of the GPUs running random instances or shares; 3-12 pending pods; half
of the instances with the shipped geometry configuration). For each, an integer program
(`benchmarks/optimum.py`, scipy's HiGHS) computes:

- **most placeable at once**: the maximum number of the pods that fit together;
- **most placeable in planning order**: the maximum when pods are taken by priority, then
  age, and each is placed whenever it still can be (a lexicographic optimum): the best any
  planner that honours the queue order can do, with perfect knowledge of later pods.

{quality}

migweaver honours the queue order (docs/design.md: "pods by priority, then age"), so the
second column is its real bound; the difference between the first two columns is the
price of that fairness: the count optimum skips an old large pod to fit several small
ones behind it. Against the count optimum migweaver stays below the 98 % goal for that
reason; against the order-respecting optimum it is above it. (On a single instance it
can even place more than that optimum: when it cannot fit an earlier pod that a perfect
arrangement would have fitted, the space serves later pods instead.) The repair retries
(docs/planner.md, "Repair") account for most of the difference between a single greedy
pass and the order-respecting optimum:

{without_repair}

## Simulation: migweaver against HAMi's legacy policy

`migweaver simulate` (docs/simulator.md) runs each scenario of `examples/scenarios/`, and
an overloaded variant of the mixed day (`benchmarks/scenarios/mixed-day-heavy.yaml`), once
with migweaver's planner and once with HAMi's legacy dynamic-MIG rules
(`migweaver/sim/hami_legacy.py`: whole templates from `knownMigGeometries`, the first
geometry in config order that serves the request, a template switch only on a GPU with no
instance in use, the first free template entry that serves). Both go through the same
machinery: the MigLayouts a policy writes are applied by the agent's reconciler on fake
GPUs that enforce NVML's rules, and pods start on the instances that then exist. All
scenarios use the shipped geometry configuration. *Pods placed* counts the pods that
started before the scenario's end; *pending* is the time from a pod's arrival to its
start (placed pods only); *GPU memory held* is the memory of the instances and shares
running pods hold, *asked for* what they requested, both as a time-weighted mean over the
whole fleet.

{simulation}

{verdicts}

How to read it:

- HAMi gives a pod the first free template entry whose configured memory serves it, so
  small pods take large entries (an 8000 MiB pod gets the free half of a GPU in the
  `3g x2` template): it holds more memory than was asked for, and pods that need those
  entries wait. migweaver creates the smallest instance the configured geometries allow,
  and can change a GPU's geometry around the instances in use when they fit the new one.
- On the mixed pool, pods that name no mode can take a hami-core share or a MIG instance;
  migweaver weighs both for each device (the share when it is the smaller part of a GPU),
  HAMi-legacy takes the most used node and GPU where the request fits, of either kind.
- migweaver creates instances when a pod needs them (20 s of `reconfigureSeconds` in
  these scenarios), while HAMi's whole templates leave idle instances ready for the next
  pods: in the burst, migweaver's median pending time is that delay.
- A GPU that drains: when a whole-GPU job ends it leaves an idle 7g. migweaver keeps an
  idle instance on a GPU where nothing runs only when it is the size a new instance would
  have there, and otherwise repartitions that GPU (docs/planner.md, "Choosing the option
  on one GPU"), so a half-GPU notebook no longer takes a whole GPU while the next one
  waits. It costs more reconfigurations (the `RECONFIG` counts of `migweaver simulate`),
  each on an idle GPU. Before this rule migweaver placed 875 pods on mixed-day-heavy
  (HAMi-legacy 884), and the p95 pending time on the mixed day was 1h24m.
- What neither policy fixes: from mid-morning on the overloaded day about two thirds of
  the GPUs run small pods without a break (they arrive faster than they leave), so the
  large pods share the rest and wait, under either policy.

{operator}
"""


OPERATOR_HEADING = "## Operator against"


def _operator_section(args: argparse.Namespace) -> str:
    """On the cluster of `--kubeconfig`, else on a control plane started for the run."""
    burst = not args.quick
    if args.kubeconfig is not None:
        return bench_operator.section(args.kubeconfig, args.runs, args.burst_runs, burst)
    with control_plane() as kubeconfig:
        return bench_operator.section(kubeconfig, args.runs, args.burst_runs, burst)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and instances")
    parser.add_argument(
        "--kubeconfig", type=Path, help="the operator's benchmark on this cluster too"
    )
    parser.add_argument("--runs", type=int, default=2, help="runs of the 500-pod burst")
    parser.add_argument("--burst-runs", type=int, default=1, help="runs of the 5,000-pod one")
    parser.add_argument(
        "--operator-only",
        action="store_true",
        help="run only the operator's benchmark and replace its section of OUTPUT",
    )
    args = parser.parse_args(argv)
    if args.operator_only:
        operator = _operator_section(args)
        text = Path(args.output).read_text(encoding="utf-8")
        head = text[: text.index(OPERATOR_HEADING)] if OPERATOR_HEADING in text else text
        Path(args.output).write_text(head + operator + "\n", encoding="utf-8")
        print(f"wrote the operator's section of {args.output}", file=sys.stderr)
        return
    instances = 20 if args.quick else OPTIMUM_INSTANCES
    speed = bench_planner.markdown(bench_planner.run(repeat=3, quick=args.quick))
    print(speed, flush=True)
    full, greedy = optimum.compare_many(
        instances, OPTIMUM_SEED, [PlannerOptions(), PlannerOptions(repair_trials=0)]
    )
    quality = optimum.markdown(full, OPTIMUM_SEED)
    print(quality, flush=True)
    without_repair = optimum.markdown(greedy, OPTIMUM_SEED).replace(
        "placed by migweaver", "placed by migweaver without repair"
    )
    print(without_repair, flush=True)
    rows = simulation.run()
    simulated = simulation.markdown(rows)
    verdicts = simulation.verdicts(rows)
    print(simulated, verdicts, sep="\n\n", flush=True)
    operator = _operator_section(args)
    print(operator, flush=True)
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    text = INTRO.format(
        machine=machine,
        speed=speed,
        instances=instances,
        quality=quality,
        without_repair=without_repair,
        simulation=simulated,
        verdicts=verdicts,
        operator=operator,
    )
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
