"""The exact-optimum benchmark on a few tiny instances, so that it cannot rot."""

from __future__ import annotations

from benchmarks import optimum
from migweaver.core.planning.planner import plan
from tests.unit.planner_helpers import cluster, pod


def test_optimum_on_a_known_instance() -> None:
    snapshot = cluster("nodes: [{name: a, mode: mig, gpus: [{model: A100-SXM4-80GB}]}]")
    pods = [pod("big", mem=60000, mode="mig", created="2024-01-01T00:00:00Z")]
    pods += [pod(f"s{i}", mem=8000, mode="mig", created="2024-01-01T00:01:00Z") for i in range(8)]
    config = optimum.no_geometry_config()
    assert optimum.optimum(snapshot, pods, config) == 7  # seven 1g.10gb, the big pod waits
    assert optimum.fifo_optimum(snapshot, pods, config) == 1  # in order: the big pod first
    assert len(plan(snapshot, pods, config).assignments) == 1


def test_optimum_respects_geometries_and_hami_core() -> None:
    snapshot = cluster(
        """
nodes:
- name: a
  mode: mig
  gpus: [{model: A100-SXM4-80GB, instances: [{profile: 1g.10gb, placement: 0, inUse: true}]}]
- {name: h, mode: hami-core, gpus: [{model: A30, shares: [{pod: x/y, memoryMiB: 20000}]}]}
"""
    )
    pods = [pod(f"p{i}", mem=15000, mode="mig") for i in range(3)]
    pods += [pod("share", mem=4000, mode="hami-core"), pod("too-big", mem=5000, mode="hami-core")]
    # Without geometries: 1g.20gb at 2, 4 and 6 around the busy 1g; with the seeds' the
    # busy 1g at slot 0 rules out 2g x3 + 1g, so no 15000 MiB instance fits at all.
    assert optimum.optimum(snapshot, pods, optimum.no_geometry_config()) == 4
    assert optimum.optimum(snapshot, pods, optimum.shipped_config()) == 1


def test_compare_on_five_tiny_instances() -> None:
    result = optimum.compare(5, seed=1)
    assert result.instances == 5
    assert result.migweaver <= result.fifo <= result.optimum
    assert result.optimum > 0
    table = optimum.markdown(result, 1)
    assert table.count("\n") == 2
    assert "| 5 (1) |" in table
