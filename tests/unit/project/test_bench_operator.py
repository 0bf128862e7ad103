"""The operator benchmark on a tiny fleet, so that it cannot rot (a few seconds)."""

from __future__ import annotations

import random
from typing import Any

from benchmarks import bench_operator
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.allocation import AllocatedDevice, Allocation, ContainerAllocation
from migweaver.core.resources.api import ANNOTATION_ALLOCATION, ANNOTATION_RESERVATION
from migweaver.core.resources.models import PlacementModel


def test_bench_operator_on_two_nodes_and_five_pods() -> None:
    result = bench_operator.measure(nodes=2, gpus=8, pods=5, timeout_s=60)
    assert not result.timed_out
    assert result.released == 5
    assert result.unplaceable == 0
    assert result.pods_placed_metric == 5
    assert result.plan_passes >= 1
    assert result.first_plan_s is not None
    assert result.released_s is not None
    assert result.operator_exit == 0
    assert (result.double_allocations, result.lost_reservations) == (0, 0)
    table = bench_operator.markdown([("emulator", result), ("again", result)])
    assert "| pods released | 5 of 5 | 5 of 5 |" in table
    assert "| double allocations, lost reservations | 0, 0 | 0, 0 |" in table
    assert table.count("\n") >= 10


def _released(name: str, node: str, gpu_uuid: str, mig_uuid: str) -> dict[str, Any]:
    allocation = Allocation(
        node=node,
        containers=[
            ContainerAllocation(
                name="main",
                devices=[
                    AllocatedDevice(
                        gpu_uuid=gpu_uuid,
                        gpu_index=0,
                        mode="mig",
                        profile="1g.10gb",
                        placement=PlacementModel(start=0, size=1),
                        mig_uuid=mig_uuid,
                        memory_mib=9856,
                    )
                ],
            )
        ],
    )
    return {
        "metadata": {
            "name": name,
            "annotations": {ANNOTATION_ALLOCATION: allocation.to_annotation()},
        }
    }


def test_the_check_counts_double_allocations_and_lost_reservations() -> None:
    """The benchmark's own check would catch the operator's mistakes: a device given twice,
    a device a process ran on, a reservation dropped, a device that is gone."""
    fleet = bench_operator.Fleet.build(random.Random(1), ["n1"], 1)
    backend = fleet.backends["n1"]
    gpu = backend.uuid(0)
    backend.create_gpu_instance(0, 19, Placement(0, 1))  # 1g.10gb
    backend.create_compute_instance(0, backend.gi_ids(0)[Placement(0, 1)])
    free = backend.mig_uuids(0)[Placement(0, 1)]
    busy = "MIG-busy"
    fleet.busy_uuids.add(busy)
    tracker = bench_operator.PodTracker({"p1", "p2", "p3", "p4", "p5"})
    tracker.reserved.update({"p4": 1.0, "p5": 1.0})
    pods = [
        _released("p1", "n1", gpu, free),
        _released("p2", "n1", gpu, free),  # the same device again
        _released("p3", "n1", gpu, busy),  # a device a process runs on (and gone)
        {"metadata": {"name": "p4", "annotations": {}}},  # reservation dropped
        {"metadata": {"name": "p5", "annotations": {ANNOTATION_RESERVATION: "{}"}}},
    ]
    result = bench_operator.Result(1, 1, 5)
    bench_operator._verify(result, tracker, fleet, pods)
    assert (result.double_allocations, result.lost_reservations) == (2, 2)
