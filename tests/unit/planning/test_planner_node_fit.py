"""The planner places a pod only on a node kube-scheduler would accept for it
(docs/planner.md, "Node constraints")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.plan import Assignment, Plan, PlannerOptions, Unplaceable
from migweaver.core.planning.planner import plan
from migweaver.core.planning.snapshot import Snapshot
from migweaver.core.resources.node_fit import node_refusal
from migweaver.core.resources.requests import InvalidRequest, PodDemand, parse_pod
from tests import builders
from tests.unit.planner_helpers import check_plan, cluster

A100 = "A100-SXM4-80GB"


def gpu_pod(
    name: str,
    *,
    mem: int = 8000,
    gpu: int = 1,
    selector: dict[str, str] | None = None,
    affinity: list[dict[str, Any]] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    created: str | None = None,
) -> PodDemand:
    spec: dict[str, Any] = {}
    if selector is not None:
        spec["nodeSelector"] = selector
    if affinity is not None:
        spec["affinity"] = builders.required_node_affinity(affinity)
    if tolerations is not None:
        spec["tolerations"] = tolerations
    body = builders.gpu_pod(name, "default", gpu=gpu, mem=mem, created=created, **spec)
    demand = parse_pod(body)
    assert not isinstance(demand, InvalidRequest), demand
    return demand


def nodes(*entries: str) -> Snapshot:
    """Nodes of one empty A100 each; every entry is extra YAML for its node mapping."""
    lines = ["nodes:"]
    for i, extra in enumerate(entries):
        lines.append(f"- {{name: node-{'abcdefgh'[i]}, mode: mig, gpus: {{model: {A100}}}{extra}}}")
    return cluster("\n".join(lines))


def run(snapshot: Snapshot, pods: list[PodDemand], **options: Any) -> Plan:
    result = plan(snapshot, pods, None, PlannerOptions(**options))
    check_plan(snapshot, pods, result)
    return result


def node_of(result: Plan, name: str) -> str | None:
    found = result.pods[f"default/{name}"]
    assert isinstance(found, Assignment), found
    return found.node


def reason_of(result: Plan, name: str) -> Unplaceable:
    found = result.pods[f"default/{name}"]
    assert isinstance(found, Unplaceable), found
    return found


# Binpacking would choose node-a (first by name, all equal) unless node-a is refused.
@pytest.mark.parametrize(
    ("snapshot", "pod", "node"),
    [
        pytest.param(nodes("", ""), gpu_pod("p"), "node-a", id="baseline-first-node"),
        pytest.param(
            nodes(", labels: {zone: a}", ", labels: {zone: b}"),
            gpu_pod("p", selector={"zone": "b"}),
            "node-b",
            id="nodeSelector-honoured",
        ),
        pytest.param(nodes(", unschedulable: true", ""), gpu_pod("p"), "node-b", id="cordoned"),
        pytest.param(nodes(", ready: false", ""), gpu_pod("p"), "node-b", id="not-ready"),
        pytest.param(
            nodes(", taints: ['gpu=reserved:NoSchedule']", ""),
            gpu_pod("p"),
            "node-b",
            id="untolerated-taint-skipped",
        ),
        pytest.param(
            nodes(", taints: [{key: gpu, value: reserved, effect: NoExecute}]", ""),
            gpu_pod("p"),
            "node-b",
            id="untolerated-noexecute-skipped",
        ),
        pytest.param(
            nodes(", taints: ['gpu=reserved:NoSchedule']", ""),
            gpu_pod("p", tolerations=[{"key": "gpu", "value": "reserved"}]),
            "node-a",
            id="tolerated-taint-used",
        ),
        pytest.param(
            nodes(", taints: ['gpu:PreferNoSchedule']", ""),
            gpu_pod("p"),
            "node-a",
            id="prefernoschedule-ignored",
        ),
        pytest.param(
            nodes(", labels: {zone: a}", ", labels: {zone: b}", ", labels: {zone: c}"),
            gpu_pod("p", affinity=[{"key": "zone", "operator": "In", "values": ["c", "b"]}]),
            "node-b",
            id="affinity-in",
        ),
        pytest.param(
            nodes(", labels: {zone: a}", ", labels: {zone: b}", ""),
            gpu_pod("p", affinity=[{"key": "zone", "operator": "NotIn", "values": ["a", "b"]}]),
            "node-c",
            id="affinity-notin-label-absent",
        ),
    ],
)
def test_the_pod_goes_to_a_node_that_accepts_it(
    snapshot: Snapshot, pod: PodDemand, node: str
) -> None:
    assert node_of(run(snapshot, [pod]), "p") == node


def test_pods_with_different_constraints_do_not_share_memoised_answers() -> None:
    snapshot = nodes(", labels: {zone: a}", ", labels: {zone: b}")
    pods = [
        gpu_pod("free-1", created="2024-05-01T00:00:00Z"),
        gpu_pod("zone-b", selector={"zone": "b"}, created="2024-05-01T00:00:01Z"),
        gpu_pod("free-2", created="2024-05-01T00:00:02Z"),
        gpu_pod("zone-a", selector={"zone": "a"}, created="2024-05-01T00:00:03Z"),
    ]
    result = run(snapshot, pods)
    assert node_of(result, "zone-b") == "node-b"
    assert node_of(result, "zone-a") == "node-a"
    assert node_of(result, "free-1") == node_of(result, "free-2") == "node-a"


def test_reason_when_every_node_refuses_the_pod() -> None:
    snapshot = nodes(
        ", labels: {zone: a}, unschedulable: true",
        ", labels: {zone: a}, ready: false",
        ", labels: {zone: a}, taints: ['gpu=reserved:NoSchedule']",
        ", labels: {zone: b}",
    )
    tolerations = [{"key": "other", "operator": "Exists"}]
    result = run(snapshot, [gpu_pod("p", selector={"zone": "a"}, tolerations=tolerations)])
    found = reason_of(result, "p")
    assert found.code == "Filtered"
    assert found.holds == ()
    assert found.reason.startswith("no node can take the pod: ")
    parts = found.reason.removeprefix("no node can take the pod: ").split("; ")
    assert sorted(parts) == [
        "node-a is cordoned",
        "node-b is not Ready",
        "node-c has taint gpu=reserved:NoSchedule the pod does not tolerate",
        "node-d does not match the pod's nodeSelector zone=a",
    ]


def test_reason_when_no_node_matches_the_selector_is_grouped_on_a_large_cluster() -> None:
    lines = ["nodes:"]
    lines += [
        f"- {{name: node-{i:04d}, mode: mig, labels: {{zone: b}}, gpus: {{model: {A100}}}}}"
        for i in range(1000)
    ]
    lines.append(f"- {{name: node-x, mode: mig, unschedulable: true, gpus: {{model: {A100}}}}}")
    result = run(cluster("\n".join(lines)), [gpu_pod("p", selector={"zone": "a"})])
    found = reason_of(result, "p")
    assert found.code == "Filtered"
    assert found.reason == (
        "no node can take the pod: 1001 nodes (node-0000, node-0001, node-0002, ...) do not "
        "match the pod's nodeSelector zone=a"
    )


def test_some_nodes_refused_the_others_full_names_both() -> None:
    snapshot = nodes(", unschedulable: true", "")
    result = run(snapshot, [gpu_pod("big", mem=80000, gpu=2)])
    found = reason_of(result, "big")
    assert found.code == "NotOnOneNode"
    assert "the best node (node-b) can offer 1" in found.reason
    assert found.reason.endswith("; other nodes excluded: node-a is cordoned")


def test_a_starving_pod_holds_gpus_only_on_nodes_that_accept_it() -> None:
    snapshot = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  unschedulable: true
  gpus:
  - model: {A100}
    instances: [{{profile: 3g.40gb, placement: 0, inUse: true}}]
- name: node-b
  mode: mig
  gpus:
  - model: {A100}
    instances: [{{profile: 3g.40gb, placement: 4, inUse: true}}]
""",
        now=10_000.0,
    )
    waiting = gpu_pod("big", mem=80000, created="1970-01-01T00:00:00Z")
    result = run(snapshot, [waiting], starvation_after=60)
    found = reason_of(result, "big")
    assert found.code == "NoRoom"
    assert [key for key, _ in result.held.items()] == [("node-b", 0)]


def test_a_cordoned_node_keeps_its_reservations_and_busy_instances() -> None:
    snapshot = cluster(
        f"""
nodes:
- name: node-a
  mode: mig
  unschedulable: true
  ready: false
  gpus:
  - model: {A100}
    instances:
    - {{profile: 3g.40gb, placement: 0, pod: default/reserved}}
    - {{profile: 3g.40gb, placement: 4, inUse: true}}
- name: node-b
  mode: mig
  gpus: {{model: {A100}}}
"""
    )
    pods = [gpu_pod("reserved", mem=40000), gpu_pod("new", mem=40000)]
    result = run(snapshot, pods)
    kept = result.pods["default/reserved"]
    assert isinstance(kept, Assignment)
    assert kept.reused
    assert kept.node == "node-a"
    assert kept.devices[0].placement == Placement(0, 4)
    assert node_of(result, "new") == "node-b"
    assert ("node-a", 0) not in result.layouts


def test_cluster_file_node_fields_are_checked() -> None:
    from migweaver.core.planning.cluster_file import InputError, load_cluster

    text = f"""
nodes:
- name: node-a
  unschedulable: "yes"
  ready: 1
  taints: [gpu, {{key: gpu, effect: Sometimes}}, {{key: gpu, effect: NoSchedule, extra: 1}}, 3]
  gpus: {{model: {A100}}}
"""
    with pytest.raises(InputError) as raised:
        load_cluster(text, "c.yaml")
    errors = raised.value.errors
    assert "c.yaml: nodes[0].unschedulable: expected true or false, got 'yes'" in errors
    assert "c.yaml: nodes[0].ready: expected true or false, got 1" in errors
    assert (
        "c.yaml: nodes[0].taints[0]: expected key=value:Effect or key:Effect, got 'gpu'" in errors
    )
    assert any(e.startswith("c.yaml: nodes[0].taints[1].effect: expected one of") for e in errors)
    assert any(e.startswith("c.yaml: nodes[0].taints[2].extra: unknown key") for e in errors)
    assert any(e.startswith("c.yaml: nodes[0].taints[3]: expected a taint mapping") for e in errors)


_ZONES = st.sampled_from(["a", "b", "c"])
_node_specs = st.lists(
    st.tuples(
        _ZONES,
        st.booleans(),  # cordoned
        st.booleans(),  # ready
        st.sampled_from(["", "gpu=reserved:NoSchedule", "gpu:NoExecute", "gpu:PreferNoSchedule"]),
    ),
    min_size=1,
    max_size=5,
)
_pod_specs = st.lists(
    st.tuples(
        st.none() | _ZONES,  # nodeSelector zone
        st.none() | st.lists(_ZONES, min_size=1, max_size=2),  # affinity zone NotIn
        st.sampled_from([None, {"key": "gpu", "operator": "Exists"}, {"operator": "Exists"}]),
        st.sampled_from([8000, 20000, 40000]),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(node_specs=_node_specs, pod_specs=_pod_specs)
def test_no_pod_is_ever_placed_on_a_node_that_refuses_it(
    node_specs: list[tuple[str, bool, bool, str]],
    pod_specs: list[tuple[str | None, list[str] | None, dict[str, str] | None, int]],
) -> None:
    lines = ["nodes:"]
    for i, (zone, cordoned, ready, taint) in enumerate(node_specs):
        taints = f"['{taint}']" if taint else "[]"
        lines.append(
            f"- {{name: node-{i}, mode: mig, labels: {{zone: {zone}}}, unschedulable: "
            f"{str(cordoned).lower()}, ready: {str(ready).lower()}, taints: {taints}, "
            f"gpus: {{model: {A100}}}}}"
        )
    snapshot = cluster("\n".join(lines))
    pods = [
        gpu_pod(
            f"p{i}",
            mem=mem,
            selector={"zone": zone} if zone else None,
            affinity=[{"key": "zone", "operator": "NotIn", "values": away}] if away else None,
            tolerations=[toleration] if toleration else None,
        )
        for i, (zone, away, toleration, mem) in enumerate(pod_specs)
    ]
    result = run(snapshot, pods)
    facts = {n.name: n.facts for n in snapshot.nodes}
    by_key = {p.key: p for p in pods}
    for key, assignment in result.assignments.items():
        assert assignment.node is not None
        refusal = node_refusal(by_key[key].constraints, facts[assignment.node])
        assert refusal is None, (key, refusal)
    for key, found in result.pods.items():
        if isinstance(found, Unplaceable) and all(
            node_refusal(by_key[key].constraints, f) is not None for f in facts.values()
        ):
            assert found.code == "Filtered"
            assert found.reason.startswith("no node can take the pod: ")
