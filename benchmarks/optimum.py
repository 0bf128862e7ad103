"""How close migweaver's plan comes to the most pods that could be placed at once.

On small random instances (1-3 nodes with 1-4 GPUs each of A100-40GB, A100-80GB, H100 or
A30, some running instances in use, 3-12 pending pods), an integer program finds the
exact maximum number of pods placeable at once under the same rules the planner obeys
(placements, count limits, configured geometries with the rest of the geometry still
fitting, busy instances fixed, hami-core memory/cores/split count, one node per pod,
distinct hami-core GPUs per container, filters by mode). migweaver plans the same
instance once, in its own order; the ratio of the two counts is reported.

The integer program (scipy's HiGHS through `scipy.optimize.milp`):
- x[p]: pod p placed; w[p, n]: pod p on node n, sum over n equals x[p];
- y[g, L]: MIG GPU g ends with layout L (one per GPU; L ranges over every valid layout
  that keeps the busy instances where they are, deduplicated by its new profiles);
- a[d, g, P]: device d gets a new instance of profile P on GPU g (P must serve d), at
  most as many as the chosen layout has; a[d, g]: device d gets a share of hami-core
  GPU g, within memory, cores and split count;
- every device of a pod on its node: sum over the node's GPUs of a = w[p, n].

Run: python -m benchmarks.optimum [--instances N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from benchmarks.workloads import gpu_state, random_instances
from migweaver.core.config import DeviceConfig, NvidiaConfig, load_device_config
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, valid_layouts
from migweaver.core.mig.profiles import MigProfile, ProfileTable
from migweaver.core.planning.plan import PlannerOptions
from migweaver.core.planning.snapshot import GpuState, NodeState, Share, Snapshot
from migweaver.core.resources.requests import ContainerDemand, PodDemand, VgpuMode

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB")
MEMORY = (3000, 5000, 8000, 10000, 12000, 18000, 20000, 30000, 40000, 60000)


# --------------------------------------------------------------------------- instances


@cache
def shipped_config() -> DeviceConfig:
    """The geometry ConfigMap migweaver ships (manifests/device-config.yaml)."""
    text = (ROOT / "manifests" / "device-config.yaml").read_text(encoding="utf-8")
    result = load_device_config(text)
    assert result.config is not None, result.errors
    return result.config


def no_geometry_config() -> DeviceConfig:
    return DeviceConfig.model_validate({"nvidia": {}})


def random_pod(rng: random.Random, i: int) -> PodDemand:
    if rng.random() < 0.1:
        container = ContainerDemand("main", 1, None, rng.choice((50, 100)), 0, None)
    else:
        count = 2 if rng.random() < 0.15 else 1
        cores = rng.choice((0, 0, 0, 20, 50))
        container = ContainerDemand("main", count, rng.choice(MEMORY), None, cores, None)
    roll = rng.random()
    mode = VgpuMode.MIG if roll < 0.4 else VgpuMode.HAMI_CORE if roll < 0.5 else None
    return PodDemand(
        namespace="opt",
        name=f"pod-{i:02d}",
        uid=str(i),
        containers=(container,),
        mode=mode,
        created=f"2024-01-01T00:00:{i:02d}Z",
    )


def random_instance(rng: random.Random) -> tuple[Snapshot, list[PodDemand], DeviceConfig]:
    """One small random instance: cluster, pods and configuration."""
    nodes = []
    for n in range(rng.randint(1, 3)):
        name = f"n{n}"
        hami = rng.random() < 0.2
        model = get_model(rng.choice(MODELS))
        assert model is not None
        gpus = []
        for index in range(rng.randint(1, 4)):
            busy = rng.random() < 0.5
            instances = (
                random_instances(rng, model.key, f"run/{name}-{index}") if busy and not hami else ()
            )
            shares: tuple[Share, ...] = ()
            if busy and hami:
                shares = tuple(
                    Share(f"run/{name}-{index}-{k}", rng.choice((4000, 8000)), rng.choice((0, 30)))
                    for k in range(rng.randint(1, 2))
                )
            enabled = not hami and (bool(instances) or rng.random() < 0.8)
            gpus.append(gpu_state(name, index, model, hami, enabled, instances, shares))
        nodes.append(NodeState(name, "hami-core" if hami else "mig", tuple(gpus)))
    pods = [random_pod(rng, i) for i in range(rng.randint(3, 12))]
    config = shipped_config() if rng.random() < 0.5 else no_geometry_config()
    return Snapshot(tuple(nodes), now=0.0), pods, config


# --------------------------------------------------------------------------- the rules


def serves(table: ProfileTable, profile: MigProfile, container: ContainerDemand) -> bool:
    """Whether an instance of `profile` gives a device of `container` what it asks."""
    compute = max(p.compute_slices for p in table.profiles)
    if container.memory_mib:
        memory_ok = profile.memory_mib >= container.memory_mib
    else:
        pct = container.memory_percentage or 100
        memory_ok = profile.memory_slices * 100 >= pct * table.memory_slots
    return memory_ok and profile.compute_slices * 100 >= container.cores * compute


@cache
def _geometry_layouts(
    table: ProfileTable, geometries: tuple[tuple[tuple[str, int], ...], ...]
) -> frozenset[frozenset[PlacedInstance]]:
    """Every layout that is part of a full placement of one configured geometry."""
    allowed: set[frozenset[PlacedInstance]] = set()
    wanted = []
    for geometry in geometries:
        counts: Counter[str] = Counter()
        for name, count in geometry:
            profile = table.get(name)
            if profile is None:
                break
            counts[profile.name] += count
        else:
            wanted.append(counts)
    for layout in valid_layouts(table):
        if Counter(i.profile for i in layout) in wanted:
            items = list(layout)
            for mask in range(1 << len(items)):
                allowed.add(frozenset(items[k] for k in range(len(items)) if mask >> k & 1))
    return frozenset(allowed)


def new_profile_sets(gpu: GpuState, config: DeviceConfig) -> list[Counter[str]]:
    """The distinct multisets of new instances GPU `gpu` can end with (busy ones fixed)."""
    table = gpu.table
    busy = frozenset(i.placed for i in gpu.instances)
    geometries = config.geometries_for(gpu.name, get_model(gpu.model or ""))
    allowed = None
    if geometries is not None:
        allowed = _geometry_layouts(table, tuple(g.profiles for g in geometries))
    result: dict[tuple[tuple[str, int], ...], Counter[str]] = {(): Counter()}
    for layout in valid_layouts(table):
        placed = frozenset(layout)
        if not busy <= placed or (allowed is not None and placed not in allowed):
            continue
        new = Counter(i.profile for i in placed - busy)
        result.setdefault(tuple(sorted(new.items())), new)
    return list(result.values())


# --------------------------------------------------------------------------- the program


@dataclass
class _Program:
    """A 0/1 program under construction: maximise sum(objective . x)."""

    objective: list[float] = field(default_factory=list)
    rows: list[tuple[dict[int, float], float, float]] = field(default_factory=list)

    def var(self, weight: float = 0.0) -> int:
        self.objective.append(weight)
        return len(self.objective) - 1

    def constrain(self, coefficients: dict[int, float], low: float, high: float) -> None:
        if coefficients:
            self.rows.append((coefficients, low, high))

    def feasible(self) -> bool:
        """Whether the constraints can all hold."""
        return self._run() is not None

    def solve(self) -> int:
        """The maximum of the objective."""
        value = self._run()
        assert value is not None
        return round(value)

    def _run(self) -> float | None:
        import numpy as np
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import lil_matrix

        n = len(self.objective)
        matrix = lil_matrix((max(len(self.rows), 1), n))
        lows, highs = [], []
        for r, (coefficients, low, high) in enumerate(self.rows):
            for column, value in coefficients.items():
                matrix[r, column] = value
            lows.append(low)
            highs.append(high)
        if not self.rows:
            lows, highs = [0.0], [0.0]
        result = milp(
            c=-np.array(self.objective),
            constraints=LinearConstraint(matrix.tocsr(), lows, highs),
            integrality=np.ones(n),
            bounds=Bounds(0, 1),
        )
        if result.status == 2:  # infeasible
            return None
        assert result.success, result.message
        return float(-result.fun)


def _program(
    snapshot: Snapshot, pods: Sequence[PodDemand], config: DeviceConfig
) -> tuple[_Program, list[int]]:
    """The integer program of an instance, and the variable x[p] of each pod."""
    prog = _Program()
    nvidia = config.nvidia
    devices = [
        (p, c, container)
        for p, pod in enumerate(pods)
        for c, container in enumerate(pod.containers)
        for _ in range(container.count)
    ]
    placed = [prog.var(1.0) for _ in pods]
    on_node = {(p, node.name): prog.var() for p in range(len(pods)) for node in snapshot.nodes}
    for p in range(len(pods)):
        prog.constrain({placed[p]: 1.0, **{on_node[p, n.name]: -1.0 for n in snapshot.nodes}}, 0, 0)
    link: Links = {}
    for node in snapshot.nodes:
        for gpu in node.gpus:
            if gpu.mode == "mig":
                _mig_gpu(prog, gpu, config, pods, devices, link)
            else:
                _hami_gpu(prog, gpu, nvidia, pods, devices, link)
    for d, (p, _, _) in enumerate(devices):
        for node in snapshot.nodes:
            coefficients = dict(link.get((d, node.name), {}))
            coefficients[on_node[p, node.name]] = -1.0
            prog.constrain(coefficients, 0, 0)
    return prog, placed


def optimum(snapshot: Snapshot, pods: Sequence[PodDemand], config: DeviceConfig) -> int:
    """The exact maximum number of `pods` placeable at once on `snapshot`."""
    prog, _ = _program(snapshot, pods, config)
    return prog.solve()


def fifo_optimum(snapshot: Snapshot, pods: Sequence[PodDemand], config: DeviceConfig) -> int:
    """The most pods placeable when pods are taken in planning order (priority, then age)
    and each is placed whenever it still can be: the best any order-respecting planner
    can do (a lexicographic optimum, one integer program per pod)."""
    order = sorted(
        range(len(pods)), key=lambda p: (-pods[p].pod_priority, pods[p].created or "", pods[p].key)
    )
    prog, placed = _program(snapshot, pods, config)
    fixed: dict[int, float] = {}
    for p in order:
        trial = _Program(list(prog.objective), list(prog.rows))
        for q, value in (*fixed.items(), (p, 1.0)):
            trial.constrain({placed[q]: 1.0}, value, value)
        fixed[p] = 1.0 if trial.feasible() else 0.0
    return int(sum(fixed.values()))


Device = tuple[int, int, ContainerDemand]
"""(pod index, container index, container) of one device."""
Links = dict[tuple[int, str], dict[int, float]]
"""(device, node) -> the variables that give the device a place on that node."""


def _mig_gpu(
    prog: _Program,
    gpu: GpuState,
    config: DeviceConfig,
    pods: Sequence[PodDemand],
    devices: Sequence[Device],
    link: Links,
) -> None:
    allowed = [d for d, (p, _, _) in enumerate(devices) if pods[p].mode != VgpuMode.HAMI_CORE]
    if not allowed:
        return
    sets = new_profile_sets(gpu, config)
    layout_vars = [prog.var() for _ in sets]
    prog.constrain(dict.fromkeys(layout_vars, 1.0), 1, 1)
    for profile in gpu.table.profiles:
        capacity = {
            v: -float(s[profile.name])
            for v, s in zip(layout_vars, sets, strict=True)
            if s[profile.name]
        }
        if not capacity:
            continue
        usage = {}
        for d in allowed:
            if serves(gpu.table, profile, devices[d][2]):
                v = prog.var()
                usage[v] = 1.0
                link.setdefault((d, gpu.node), {})[v] = 1.0
        prog.constrain({**usage, **capacity}, -float("inf"), 0)


def _hami_gpu(
    prog: _Program,
    gpu: GpuState,
    nvidia: NvidiaConfig,
    pods: Sequence[PodDemand],
    devices: Sequence[Device],
    link: Links,
) -> None:
    total_mem = int(gpu.memory_mib * nvidia.device_memory_scaling)
    total_cores = int(100 * nvidia.device_core_scaling)
    used_mem = sum(s.memory_mib for s in gpu.shares)
    used_cores = sum(s.cores for s in gpu.shares)
    if gpu.mig_enabled or used_cores >= total_cores or any(s.cores >= 100 for s in gpu.shares):
        return
    room = nvidia.device_split_count - len(gpu.shares)
    chosen: dict[int, int] = {}
    for d, (p, _, container) in enumerate(devices):
        if pods[p].mode == VgpuMode.MIG:
            continue
        if container.cores >= 100 and gpu.shares:
            continue
        chosen[d] = prog.var()
        link.setdefault((d, gpu.node), {})[chosen[d]] = 1.0
    if not chosen:
        return
    memory_row = {}
    cores_row = {}
    for d, v in chosen.items():
        container = devices[d][2]
        memory_row[v] = float(
            container.memory_mib or total_mem * (container.memory_percentage or 100) // 100
        )
        cores_row[v] = float(container.cores)
    prog.constrain(memory_row, -float("inf"), total_mem - used_mem)
    prog.constrain(cores_row, -float("inf"), total_cores - used_cores)
    prog.constrain(dict.fromkeys(chosen.values(), 1.0), -float("inf"), room)
    by_container: dict[tuple[int, int], list[int]] = {}
    for d, v in chosen.items():
        p, c, _ = devices[d]
        by_container.setdefault((p, c), []).append(v)
    for variables in by_container.values():
        if len(variables) > 1:
            prog.constrain(dict.fromkeys(variables, 1.0), -float("inf"), 1)
    big = float(len(chosen))
    for d, v in chosen.items():
        if devices[d][2].cores >= 100:  # exclusive: alone on the GPU
            others = {u: 1.0 for e, u in chosen.items() if e != d}
            prog.constrain({**others, v: big}, -float("inf"), big)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Comparison:
    """migweaver's placed count against both optima over a set of instances."""

    instances: int
    optimum: int
    fifo: int
    migweaver: int
    below_optimum: int
    below_fifo: int
    seconds: float

    @property
    def ratio(self) -> float:
        """migweaver / the most pods placeable at once."""
        return self.migweaver / self.optimum if self.optimum else 1.0

    @property
    def fifo_ratio(self) -> float:
        """migweaver / the most pods an order-respecting planner can place."""
        return self.migweaver / self.fifo if self.fifo else 1.0


def compare(instances: int, seed: int, options: PlannerOptions | None = None) -> Comparison:
    """Plan `instances` random instances with migweaver and solve both optima."""
    return compare_many(instances, seed, [options or PlannerOptions()])[0]


def compare_many(instances: int, seed: int, variants: Sequence[PlannerOptions]) -> list[Comparison]:
    """`compare` for several planner options at once (the optima are solved once)."""
    from migweaver.core.planning.planner import plan

    rng = random.Random(seed)
    optima: list[tuple[int, int]] = []
    placed: list[list[int]] = [[] for _ in variants]
    started = time.perf_counter()
    for _ in range(instances):
        snapshot, pods, config = random_instance(rng)
        best = optimum(snapshot, pods, config)
        fifo = fifo_optimum(snapshot, pods, config)
        optima.append((best, fifo))
        for counts, options in zip(placed, variants, strict=True):
            count = len(plan(snapshot, pods, config, options).assignments)
            if count > best or fifo > best:
                raise AssertionError(f"placed {count}, fifo {fifo} > optimum {best}")
            counts.append(count)
    seconds = time.perf_counter() - started
    return [
        Comparison(
            instances=instances,
            optimum=sum(b for b, _ in optima),
            fifo=sum(f for _, f in optima),
            migweaver=sum(counts),
            below_optimum=sum(c < b for c, (b, _) in zip(counts, optima, strict=True)),
            below_fifo=sum(c < f for c, (_, f) in zip(counts, optima, strict=True)),
            seconds=seconds,
        )
        for counts in placed
    ]


def markdown(result: Comparison, seed: int) -> str:
    """The comparison as a markdown table."""
    return "\n".join(
        [
            "| instances (seed) | most placeable at once | most placeable in planning order "
            "| placed by migweaver | vs at once | vs in order "
            "| instances below (at once / in order) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {result.instances} ({seed}) | {result.optimum} | {result.fifo} "
            f"| {result.migweaver} | {result.ratio:.1%} | {result.fifo_ratio:.1%} "
            f"| {result.below_optimum} / {result.below_fifo} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    print(markdown(compare(args.instances, args.seed), args.seed))


if __name__ == "__main__":
    main()
