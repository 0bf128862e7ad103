"""Random clusters and pods for the planner benchmarks (fixed seeds: reproducible).

A cluster mixes MIG nodes (A100-80GB, H100, A100-40GB, A30) with hami-core nodes; some
GPUs already carry instances in use, laid out the way earlier plans would have left them.
Pods ask for the sizes inference and training jobs ask for in practice: mostly one device
of 5-20 GB, some half or whole GPUs, a few two-device pods, some pinned to a mode.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from migweaver.core.mig.catalog import GpuModel, get_model
from migweaver.core.mig.geometry import free_placements
from migweaver.core.planning.snapshot import (
    GpuState,
    InstanceState,
    NodeState,
    Share,
    Snapshot,
    fake_gpu_uuid,
)
from migweaver.core.resources.requests import ContainerDemand, PodDemand, VgpuMode

MIG_MODELS = ("A100-SXM4-80GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "A100-SXM4-40GB", "A30-24GB")
POD_MEMORY = (4000, 8000, 8000, 10000, 16000, 20000, 20000, 30000, 40000, 70000)


def random_instances(
    rng: random.Random, model_key: str, pod_prefix: str
) -> tuple[InstanceState, ...]:
    """A valid set of in-use instances: up to three random profiles at free placements."""
    model = get_model(model_key)
    assert model is not None
    placed: list[InstanceState] = []
    for n in range(rng.randint(0, 3)):
        profile = rng.choice([p for p in model.profiles if not p.media_extensions])
        free = free_placements(model.table, [i.placed for i in placed], profile.name)
        if free:
            placed.append(
                InstanceState(
                    profile.name, rng.choice(free), in_use=True, reserved_by=f"{pod_prefix}-{n}"
                )
            )
    return tuple(sorted(placed, key=lambda i: i.placement))


def gpu_state(
    node: str,
    index: int,
    model: GpuModel,
    hami: bool,
    mig_enabled: bool,
    instances: tuple[InstanceState, ...],
    shares: tuple[Share, ...],
) -> GpuState:
    """A GPU of a catalog model on a `mig` (or, `hami`, hami-core) node, with a made-up
    UUID and the NVML name `NVIDIA <model>`."""
    return GpuState(
        node=node,
        index=index,
        uuid=fake_gpu_uuid(node, index),
        name=f"NVIDIA {model.key}",
        model=model.key,
        mode="hami-core" if hami else "mig",
        mig_enabled=mig_enabled,
        table=model.table,
        memory_mib=model.memory_mib,
        instances=instances,
        shares=shares,
    )


def random_cluster(
    rng: random.Random,
    nodes: int,
    gpus_per_node: int,
    *,
    busy_fraction: float = 0.3,
    hami_fraction: float = 0.1,
    models: Sequence[str] = MIG_MODELS,
) -> Snapshot:
    """`nodes` nodes of `gpus_per_node` GPUs; each node one model; `busy_fraction` of the
    GPUs carry random in-use instances (or shares on hami-core nodes)."""
    result = []
    for n in range(nodes):
        name = f"node-{n:04d}"
        hami = rng.random() < hami_fraction
        model = get_model("A100-SXM4-40GB" if hami else rng.choice(list(models)))
        assert model is not None
        gpus = []
        for index in range(gpus_per_node):
            busy = rng.random() < busy_fraction
            instances: tuple[InstanceState, ...] = ()
            shares: tuple[Share, ...] = ()
            if busy and hami:
                shares = tuple(
                    Share(f"default/{name}-{index}-{k}", rng.choice((4000, 8000, 10000)), 10)
                    for k in range(rng.randint(1, 3))
                )
            elif busy:
                instances = random_instances(rng, model.key, f"default/{name}-{index}")
            gpus.append(gpu_state(name, index, model, hami, not hami, instances, shares))
        result.append(NodeState(name, "hami-core" if hami else "mig", tuple(gpus)))
    return Snapshot(tuple(result), now=1_700_000_000.0)


def random_pods(
    rng: random.Random, count: int, *, memory: Sequence[int] = POD_MEMORY
) -> list[PodDemand]:
    """`count` pods of realistic sizes, created one second apart."""
    pods = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.05:
            container = ContainerDemand("main", 1, None, 100, 0, None)  # a whole GPU
        elif roll < 0.10:
            container = ContainerDemand("main", 1, None, 50, 0, None)
        else:
            devices = 2 if rng.random() < 0.1 else 1
            cores = rng.choice((0, 0, 0, 30))
            container = ContainerDemand(
                "main", devices, rng.choice(list(memory)), None, cores, None
            )
        mode_roll = rng.random()
        mode = VgpuMode.MIG if mode_roll < 0.5 else VgpuMode.HAMI_CORE if mode_roll < 0.6 else None
        pods.append(
            PodDemand(
                namespace="bench",
                name=f"pod-{i:05d}",
                uid=f"uid-{i}",
                containers=(container,),
                mode=mode,
                created=f"2023-11-14T22:{(i // 60) % 60:02d}:{i % 60:02d}Z",
            )
        )
    return pods
