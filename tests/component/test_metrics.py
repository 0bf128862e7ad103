"""The operator's Prometheus metrics: rendered text parsed back, and the /metrics endpoint.

Everything is read back through prometheus_client's own parser, so the tests check what a
Prometheus server would ingest (names, label sets, values, escaping), not string layouts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from migweaver.operator.metrics import (
    DEFAULT_PORT,
    PLAN_DURATION_BUCKETS,
    POD_WAIT_BUCKETS,
    OperatorMetrics,
)
from tests import builders

Sample = tuple[dict[str, str], float]

SEED_GPU0 = "GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313"
SEED_GPU1 = "GPU-30f90f49-43ab-0a78-bf5c-93ed41ef2da2"


def instance(
    profile: str,
    start: int,
    size: int,
    *,
    in_use: bool = False,
    uuid: str | None = None,
    gi: int | None = None,
    ci: int | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "profile": profile,
        "placement": {"start": start, "size": size},
        "inUse": in_use,
    }
    if uuid is not None:
        entry["uuid"] = uuid
    if gi is not None:
        entry["gpuInstanceId"] = gi
    if ci is not None:
        entry["computeInstanceId"] = ci
    return entry


def layout(
    node: str,
    index: int,
    uuid: str,
    instances: list[dict[str, Any]],
    *,
    memory: int = 40960,
    mode: str = "mig",
) -> dict[str, Any]:
    """A MigLayout as the API returns it, with a status holding `instances`."""
    return builders.layout(
        node,
        index,
        uuid=uuid,
        name=f"gpu{index}-of-a-node",
        instances=[{"profile": i["profile"], "placement": i["placement"]} for i in instances],
        status={
            "mode": mode,
            "gpu": {"model": "NVIDIA A100-SXM4-40GB", "memoryMiB": memory, "migCapable": True},
            "instances": instances,
        },
    )


def seed_layouts() -> list[dict[str, Any]]:
    """The seed's example: aio-node15, two A100-40GB split 3g.20gb x2, three in use."""
    return [
        layout(
            "aio-node15",
            0,
            SEED_GPU0,
            [
                instance("3g.20gb", 0, 4, in_use=True, uuid="MIG-a", gi=1, ci=0),
                instance("3g.20gb", 4, 4, uuid="MIG-b", gi=2, ci=0),
            ],
        ),
        layout(
            "aio-node15",
            1,
            SEED_GPU1,
            [
                instance("3g.20gb", 0, 4, in_use=True, uuid="MIG-c", gi=1, ci=0),
                instance("3g.20gb", 4, 4, in_use=True, uuid="MIG-d", gi=2, ci=0),
            ],
        ),
    ]


def parse(text: bytes | str) -> dict[str, list[Sample]]:
    """Every sample of an exposition, by sample name (e.g. `x_total`, `x_bucket`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    result: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return result


def family_types(text: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text.decode("utf-8"))}


def labelled(samples: Iterable[Sample], *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(labels[k] for k in keys): value for labels, value in samples}


# ------------------------------------------------------------------- HAMi-named metrics


# The seed's example output (HAMi's dynamic-MIG docs, "Monitor MIG Instance"), verbatim.
SEED_EXPOSITION = """\
# HELP nodeGPUMigInstance GPU Sharing mode. 0 for hami-core, 1 for mig, 2 for mps
# TYPE nodeGPUMigInstance gauge
nodeGPUMigInstance{deviceidx="0",deviceuuid="GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313",migname="3g.20gb-0",nodeid="aio-node15",zone="vGPU"} 1
nodeGPUMigInstance{deviceidx="0",deviceuuid="GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313",migname="3g.20gb-1",nodeid="aio-node15",zone="vGPU"} 0
nodeGPUMigInstance{deviceidx="1",deviceuuid="GPU-30f90f49-43ab-0a78-bf5c-93ed41ef2da2",migname="3g.20gb-0",nodeid="aio-node15",zone="vGPU"} 1
nodeGPUMigInstance{deviceidx="1",deviceuuid="GPU-30f90f49-43ab-0a78-bf5c-93ed41ef2da2",migname="3g.20gb-1",nodeid="aio-node15",zone="vGPU"} 1
"""  # noqa: E501


def as_set(samples: Iterable[Sample]) -> set[tuple[frozenset[tuple[str, str]], float]]:
    return {(frozenset(labels.items()), value) for labels, value in samples}


def test_node_gpu_mig_instance_matches_the_seed_exactly() -> None:
    metrics = OperatorMetrics()
    assert metrics.update_layouts(seed_layouts()) == ()
    ours = parse(metrics.render())["nodeGPUMigInstance"]
    seed = parse(SEED_EXPOSITION)["nodeGPUMigInstance"]
    assert len(ours) == len(seed) == 4
    assert as_set(ours) == as_set(seed)
    assert family_types(metrics.render())["nodeGPUMigInstance"] == "gauge"


def test_hami_info_metric_has_one_series_per_instance_in_use() -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts(seed_layouts())
    samples = parse(metrics.render())["hami_node_gpu_mig_instance_info"]
    assert {frozenset(labels) for labels, _ in samples} == {
        frozenset(
            {
                "node",
                "device_uuid",
                "device_index",
                "mig_uuid",
                "profile",
                "gpu_instance_id",
                "compute_instance_id",
                "placement_start",
                "placement_size",
                "zone",
            }
        )
    }
    assert all(value == 1.0 for _, value in samples)
    assert labelled(samples, "device_index", "mig_uuid", "placement_start") == {
        ("0", "MIG-a", "0"): 1.0,
        ("1", "MIG-c", "0"): 1.0,
        ("1", "MIG-d", "4"): 1.0,
    }
    (first,) = (labels for labels, _ in samples if labels["mig_uuid"] == "MIG-a")
    assert first == {
        "node": "aio-node15",
        "device_uuid": SEED_GPU0,
        "device_index": "0",
        "mig_uuid": "MIG-a",
        "profile": "3g.20gb",
        "gpu_instance_id": "1",
        "compute_instance_id": "0",
        "placement_start": "0",
        "placement_size": "4",
        "zone": "vGPU",
    }


def test_instance_in_use_without_ids_yet_is_still_shown() -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts([layout("n", 0, "GPU-n", [instance("1g.5gb", 0, 1, in_use=True)])])
    ((labels, value),) = parse(metrics.render())["hami_node_gpu_mig_instance_info"]
    assert value == 1.0
    # An empty label value is no label at all for Prometheus.
    assert labels.get("mig_uuid", "") == ""
    assert labels["profile"] == "1g.5gb"


# -------------------------------------------------------------------- series disappear


def test_series_of_gpus_and_instances_that_disappeared_disappear() -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts(seed_layouts())
    metrics.update_allocated([("aio-node15", "mig", 61440)])
    assert len(parse(metrics.render())["nodeGPUMigInstance"]) == 4

    gpu0_only_one_left = seed_layouts()[:1]
    gpu0_only_one_left[0]["status"]["instances"] = gpu0_only_one_left[0]["status"]["instances"][:1]
    metrics.update_layouts(gpu0_only_one_left)
    metrics.update_allocated([])
    samples = parse(metrics.render())
    assert labelled(samples["nodeGPUMigInstance"], "deviceidx", "migname") == {
        ("0", "3g.20gb-0"): 1.0
    }
    assert labelled(samples["hami_node_gpu_mig_instance_info"], "mig_uuid") == {("MIG-a",): 1.0}
    assert labelled(samples["migweaver_gpu_memory_mib"], "node", "mode", "state") == {
        ("aio-node15", "mig", "total"): 40960.0
    }

    metrics.update_layouts([])
    samples = parse(metrics.render())
    for name in (
        "nodeGPUMigInstance",
        "hami_node_gpu_mig_instance_info",
        "migweaver_gpu_memory_mib",
    ):
        assert name not in samples


def test_instance_that_became_free_leaves_the_info_metric() -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts(seed_layouts())
    freed = seed_layouts()
    for entry in freed[1]["status"]["instances"]:
        entry["inUse"] = False
    metrics.update_layouts(freed)
    samples = parse(metrics.render())
    assert labelled(samples["hami_node_gpu_mig_instance_info"], "mig_uuid") == {("MIG-a",): 1.0}
    assert labelled(samples["nodeGPUMigInstance"], "deviceidx", "migname") == {
        ("0", "3g.20gb-0"): 1.0,
        ("0", "3g.20gb-1"): 0.0,
        ("1", "3g.20gb-0"): 0.0,
        ("1", "3g.20gb-1"): 0.0,
    }


def test_invalid_layouts_are_returned_and_the_others_still_shown() -> None:
    metrics = OperatorMetrics()
    broken = {"metadata": {"name": "broken"}, "spec": {"nodeName": "x"}}
    invalid = metrics.update_layouts([*seed_layouts(), broken])
    assert [problem.name for problem in invalid] == ["broken"]
    assert len(parse(metrics.render())["nodeGPUMigInstance"]) == 4


# ------------------------------------------------------------------------------ memory


def test_gpu_memory_total_and_allocated_by_node_and_mode() -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts(
        [
            *seed_layouts(),
            layout("core-node", 0, "GPU-c0", [], memory=81920, mode="hami-core"),
        ]
    )
    metrics.update_allocated(
        [
            ("aio-node15", "mig", 20480),
            ("aio-node15", "mig", 40960),
            ("core-node", "hami-core", 1000),
        ]
    )
    samples = parse(metrics.render())["migweaver_gpu_memory_mib"]
    assert labelled(samples, "node", "mode", "state") == {
        ("aio-node15", "mig", "total"): 81920.0,
        ("aio-node15", "mig", "allocated"): 61440.0,
        ("core-node", "hami-core", "total"): 81920.0,
        ("core-node", "hami-core", "allocated"): 1000.0,
    }

    metrics.update_allocated([("core-node", "hami-core", 2000)])
    samples = parse(metrics.render())["migweaver_gpu_memory_mib"]
    allocated = {k: v for k, v in labelled(samples, "node", "state").items() if k[1] == "allocated"}
    assert allocated == {("core-node", "allocated"): 2000.0}


# -------------------------------------------------------------------------- escaping

ODD_VALUES = [
    pytest.param('node "quoted"', id="quotes"),
    pytest.param("node\nnewline", id="newline"),
    pytest.param("back\\slash\\", id="backslash"),
    pytest.param("nœud-ГПУ-節点-🚀", id="unicode"),
    pytest.param('} 1\nfake_metric{a="b"} 2', id="injection-attempt"),
]


@pytest.mark.parametrize("odd", ODD_VALUES)
def test_odd_label_values_round_trip_escaped(odd: str) -> None:
    metrics = OperatorMetrics()
    metrics.update_layouts(
        [layout(odd, 0, f"GPU-{odd}", [instance(f"1g.5gb{odd}", 0, 1, in_use=True, uuid=odd)])]
    )
    metrics.update_allocated([(odd, "mig", 5)])
    samples = parse(metrics.render())
    assert "fake_metric" not in samples
    ((legacy, _),) = samples["nodeGPUMigInstance"]
    assert legacy["nodeid"] == odd
    assert legacy["deviceuuid"] == f"GPU-{odd}"
    assert legacy["migname"] == f"1g.5gb{odd}-0"
    ((info, _),) = samples["hami_node_gpu_mig_instance_info"]
    assert (info["node"], info["mig_uuid"], info["profile"]) == (odd, odd, f"1g.5gb{odd}")
    assert {labels["node"] for labels, _ in samples["migweaver_gpu_memory_mib"]} == {odd}


# ------------------------------------------------------------------- event metrics


def test_event_metrics_count_and_observe() -> None:
    metrics = OperatorMetrics()
    metrics.set_pending(7)
    metrics.set_pending(3)
    metrics.observe_plan(0.004)
    metrics.observe_plan(12.0)
    metrics.pods_placed()
    metrics.pods_placed(4)
    metrics.reconfiguration("applied")
    metrics.reconfiguration("applied")
    metrics.reconfiguration("conflict")
    metrics.observe_pod_wait(45.0)
    metrics.config_reload_failed()
    samples = parse(metrics.render())
    assert samples["migweaver_pending_pods"] == [({}, 3.0)]
    assert samples["migweaver_plan_duration_seconds_count"] == [({}, 2.0)]
    assert samples["migweaver_plan_duration_seconds_sum"] == [({}, 12.004)]
    buckets = labelled(samples["migweaver_plan_duration_seconds_bucket"], "le")
    assert buckets[("0.005",)] == 1.0
    assert buckets[("10.0",)] == 1.0
    assert buckets[("30.0",)] == 2.0
    assert samples["migweaver_pods_placed_total"] == [({}, 5.0)]
    assert labelled(samples["migweaver_reconfigurations_total"], "result") == {
        ("applied",): 2.0,
        ("failed",): 0.0,
        ("conflict",): 1.0,
        ("other",): 0.0,
    }
    wait = labelled(samples["migweaver_pod_wait_seconds_bucket"], "le")
    assert (wait[("30.0",)], wait[("60.0",)]) == (0.0, 1.0)
    assert samples["migweaver_config_reload_failures_total"] == [({}, 1.0)]
    types = family_types(metrics.render())
    assert types["migweaver_plan_duration_seconds"] == "histogram"
    assert types["migweaver_pod_wait_seconds"] == "histogram"
    assert types["migweaver_pods_placed"] == "counter"


def test_odd_event_values_never_raise() -> None:
    metrics = OperatorMetrics()
    metrics.reconfiguration("exploded")
    metrics.reconfiguration("")
    metrics.pods_placed(0)
    metrics.pods_placed(-2)
    metrics.set_pending(-1)
    metrics.observe_plan(-0.5)  # clock skew: counted as 0
    metrics.observe_plan(math.nan)
    metrics.observe_pod_wait(math.inf)
    metrics.observe_pod_wait(-3.0)
    samples = parse(metrics.render())
    assert labelled(samples["migweaver_reconfigurations_total"], "result")[("other",)] == 2.0
    assert samples["migweaver_pods_placed_total"] == [({}, 0.0)]
    assert samples["migweaver_pending_pods"] == [({}, 0.0)]
    assert samples["migweaver_plan_duration_seconds_count"] == [({}, 1.0)]
    assert samples["migweaver_plan_duration_seconds_sum"] == [({}, 0.0)]
    assert samples["migweaver_pod_wait_seconds_count"] == [({}, 1.0)]


def test_buckets_span_the_quantities() -> None:
    assert PLAN_DURATION_BUCKETS[0] <= 0.001
    assert PLAN_DURATION_BUCKETS[-1] >= 30
    assert POD_WAIT_BUCKETS[0] == 1
    assert POD_WAIT_BUCKETS[-1] == 30 * 60
    for buckets in (PLAN_DURATION_BUCKETS, POD_WAIT_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


# ------------------------------------------------------------------------- registries


def test_instances_do_not_collide_and_accept_a_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.pods_placed(2)
    assert parse(second.render())["migweaver_pods_placed_total"] == [({}, 0.0)]

    registry = CollectorRegistry()
    third = OperatorMetrics(registry)
    third.update_layouts(seed_layouts())
    assert third.registry is registry
    assert (
        registry.get_sample_value(
            "nodeGPUMigInstance",
            {
                "deviceidx": "0",
                "deviceuuid": SEED_GPU0,
                "migname": "3g.20gb-1",
                "nodeid": "aio-node15",
                "zone": "vGPU",
            },
        )
        == 0.0
    )
    with pytest.raises(ValueError, match="Duplicated"):
        OperatorMetrics(registry)


# ------------------------------------------------------------------------------- HTTP


async def test_serves_metrics_over_http_until_the_block_ends() -> None:
    assert DEFAULT_PORT == 31993
    metrics = OperatorMetrics()
    metrics.update_layouts(seed_layouts())
    async with metrics.serve("127.0.0.1", 0) as port:
        assert port > 0
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                body = await response.text()
            assert len(parse(body)["nodeGPUMigInstance"]) == 4

            metrics.pods_placed()  # a scrape sees the state at the time of the scrape
            accept = "application/openmetrics-text; version=1.0.0"
            async with session.get(url, headers={"Accept": accept}) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("application/openmetrics-text")
                text = await response.text()
            assert "migweaver_pods_placed_total 1.0" in text

            async with session.get(f"http://127.0.0.1:{port}/other") as response:
                assert response.status == 404

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(url):
                pass
