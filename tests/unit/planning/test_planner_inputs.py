"""The planner's inputs: CLUSTER.yaml and PODS.yaml parsing, and snapshots from MigLayouts."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.cluster_file import InputError, load_cluster, load_pods
from migweaver.core.planning.snapshot import Share, fake_gpu_uuid, snapshot_from_layouts
from migweaver.core.resources.api import parse_timestamp
from migweaver.core.resources.models import MigLayout
from tests import builders


def test_gpu_entries_expand_with_counts_and_indices() -> None:
    snapshot = load_cluster(
        """
now: 2024-05-01T12:00:00Z
nodes:
- name: a
  mode: mig
  labels: {zone: x}
  gpus:
  - {model: A100-SXM4-80GB, count: 2}
  - {model: NVIDIA H100 80GB HBM3, index: 5, uuid: GPU-h, policy: static, migEnabled: false}
  - {model: A30}
"""
    )
    assert snapshot.now == 1714564800.0
    (node,) = snapshot.nodes
    assert node.labels == {"zone": "x"}
    assert [(g.index, g.model) for g in node.gpus] == [
        (0, "A100-SXM4-80GB"),
        (1, "A100-SXM4-80GB"),
        (5, "H100-SXM5-80GB"),
        (6, "A30-24GB"),
    ]
    h100 = node.gpus[2]
    assert (h100.uuid, h100.policy, h100.mig_enabled, h100.name) == (
        "GPU-h",
        "static",
        False,
        "NVIDIA H100-SXM5-80GB",
    )
    assert node.gpus[0].uuid == fake_gpu_uuid("a", 0)
    assert node.gpus[0].memory_mib == 81920


def test_instances_shares_and_defaults() -> None:
    snapshot = load_cluster(
        """
nodes:
- name: h
  gpus:
  - model: A100-SXM4-40GB
    shares: [{pod: web/x, memoryMiB: 1000, cores: 10}]
- name: m
  mode: mig
  gpus:
  - model: A100-SXM4-80GB
    instances:
    - {profile: 3g.39gb, placement: 0, inUse: true, uuid: MIG-1}
    - {profile: 1g.10gb, placement: {start: 6, size: 1}, pod: ml/p}
"""
    )
    hami, mig = snapshot.nodes
    assert (hami.mode, hami.gpus[0].mode, hami.gpus[0].mig_enabled) == (
        "hami-core",
        "hami-core",
        False,
    )
    assert hami.gpus[0].shares == (Share("web/x", 1000, 10),)
    first, second = mig.gpus[0].instances
    assert (first.profile, first.placement, first.in_use, first.uuid) == (
        "3g.39gb",
        Placement(0, 4),
        True,
        "MIG-1",
    )
    assert second.reserved_by == "ml/p"
    assert second.busy
    assert not second.in_use


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InputError) as caught:
        load_cluster(
            "nodes:\n- {name: a, mode: x, gpus: [{model: A200}, {model: A30, count: 0}]}\n- 7\n",
            "c.yaml",
        )
    assert caught.value.errors == [
        "c.yaml: nodes[0].mode: expected mig or hami-core, got 'x'",
        "c.yaml: nodes[0].gpus[0].model: unknown model 'A200' (known: "
        + ", ".join(m for m in _keys())
        + ")",
        "c.yaml: nodes[0].gpus[1].count: expected a whole number from 1 to 64, got 0",
        "c.yaml: nodes[1]: expected a node mapping, got int 7",
    ]


def _keys() -> list[str]:
    from migweaver.core.mig.catalog import model_keys

    return list(model_keys())


def test_pods_file_defaults_namespace_and_sorts_out_invalid_and_cpu_pods() -> None:
    pods = load_pods(
        """
kind: Pod
metadata: {name: a}
spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpumem: 8000}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ml}
spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpu: x}}}]}
---
kind: Pod
metadata: {name: c}
spec: {containers: [{name: c}]}
"""
    )
    assert [d.key for d in pods.demands] == ["default/a"]
    assert [i.pod for i in pods.invalid] == ["ml/b"]
    assert pods.no_gpu == ("default/c",)


def layout(spec: dict[str, object], status: dict[str, object] | None = None) -> MigLayout:
    fields: dict[str, Any] = dict(spec)
    instances = fields.pop("instances", None)
    body = builders.layout(
        "node-a", 0, uuid="GPU-a", name="x", instances=instances, status=status, **fields
    )
    return MigLayout.from_api(body)


def test_snapshot_from_layouts_merges_spec_and_status() -> None:
    status = {
        "gpu": {"model": "NVIDIA A100-SXM4-80GB", "memoryMiB": 81920, "migCapable": True},
        "migMode": {"current": "Enabled"},
        "instances": [
            {"profile": "3g.40gb", "placement": {"start": 0, "size": 4}, "uuid": "MIG-a",
             "inUse": True, "pod": "ml/train"},
            {"profile": "1g.10gb", "placement": {"start": 4, "size": 1}, "uuid": "MIG-b"},
            {"profile": "1g.10gb", "placement": {"start": 5, "size": 1}, "inUse": True},
        ],
    }  # fmt: skip
    spec = {
        "instances": [
            {"profile": "3g.40gb", "placement": {"start": 0, "size": 4}},
            {"profile": "1g.10gb", "placement": {"start": 6, "size": 1}},
        ]
    }
    reservations = {("node-a", 0): {PlacedInstance("1g.10gb", Placement(6, 1)): "ml/next"}}
    snapshot = snapshot_from_layouts(
        [layout(spec, status)], {"node-a": "mig"}, reservations=reservations, now=5.0
    )
    (gpu,) = snapshot.gpus()
    assert (gpu.model, gpu.mode, gpu.mig_enabled, gpu.memory_mib) == (
        "A100-SXM4-80GB",
        "mig",
        True,
        81920,
    )
    found = {(i.profile, i.placement.start): i for i in gpu.instances}
    # Spec and status agree: the status details win.
    assert found[("3g.40gb", 0)].uuid == "MIG-a"
    assert found[("3g.40gb", 0)].reserved_by == "ml/train"
    # Only in the spec: still to be created, reserved for the pod it was planned for.
    assert found[("1g.10gb", 6)].reserved_by == "ml/next"
    assert found[("1g.10gb", 6)].uuid is None
    # Only in the status: about to go unless in use.
    assert ("1g.10gb", 4) not in found
    assert found[("1g.10gb", 5)].in_use
    assert snapshot.now == 5.0
    assert gpu.table == get_model("A100-SXM4-80GB").table  # type: ignore[union-attr]


def test_snapshot_from_layouts_uses_nvml_profiles_and_skips_undescribed_gpus() -> None:
    status = {
        "gpu": {"model": "NVIDIA Future GPU", "memoryMiB": 100000, "migCapable": True},
        "profiles": [
            {"name": "1g.12gb", "id": 19, "memoryMiB": 12000, "slices": 1,
             "placements": [{"start": s, "size": 1} for s in range(4)], "maxCount": 4},
            {"name": "4g.48gb", "id": 5, "memoryMiB": 48000, "slices": 4,
             "placements": [{"start": 0, "size": 4}]},
        ],
    }  # fmt: skip
    snapshot = snapshot_from_layouts(
        [layout({"migEnabled": False}, status), layout({"gpuIndex": 1})], {}
    )
    (gpu,) = snapshot.gpus()
    assert gpu.model is None
    assert gpu.mode == "hami-core"
    assert not gpu.mig_enabled
    assert gpu.table.memory_slots == 4
    assert [p.name for p in gpu.table.profiles] == ["1g.12gb", "4g.48gb"]
    assert gpu.table.get("4g.48gb").max_count == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00", "2024-05-01T14:00:00+02:00",
     "2024-05-01T12:00:00"],
    ids=["z", "utc-offset", "other-offset", "no-offset-is-utc"],
)  # fmt: skip
def test_timestamps_are_utc_unless_they_say_otherwise(text: str) -> None:
    assert parse_timestamp(text) == 1714564800.0


def test_unquoted_times_in_the_files_are_times() -> None:
    snapshot = load_cluster("now: 2024-05-01T12:00:00Z\nnodes: []\n")
    assert snapshot.now == 1714564800.0
    pods = load_pods(
        "kind: Pod\nmetadata: {name: p, creationTimestamp: 2024-05-01T11:00:00Z}\n"
        "spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpu: 1}}}]}\n"
    )
    (demand,) = pods.demands
    assert parse_timestamp(demand.created) == 1714564800.0 - 3600
