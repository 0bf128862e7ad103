"""The operator benchmark on a tiny fleet, so that it cannot rot (a few seconds)."""

from __future__ import annotations

from benchmarks import bench_operator


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
    table = bench_operator.markdown(result)
    assert "| pods released | 5 of 5 |" in table
    assert table.count("\n") >= 10
