"""Node constraints as kube-scheduler applies them (core/resources/node_fit.py).

One table per rule.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migweaver.core.resources.node_fit import (
    EMPTY_CONSTRAINTS,
    NodeFacts,
    Taint,
    Toleration,
    node_facts,
    node_refusal,
    pod_constraints,
)
from tests import builders

JsonDict = dict[str, Any]


def node(
    name: str = "node-a",
    labels: dict[str, str] | None = None,
    *,
    unschedulable: bool | None = None,
    ready: str | None = None,
    taints: list[JsonDict] | None = None,
) -> NodeFacts:
    spec: JsonDict = {}
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    if taints is not None:
        spec["taints"] = taints
    status: JsonDict = {}
    if ready is not None:
        status["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready},
        ]
    return node_facts(builders.node(name, labels=labels or {}, spec=spec, status=status))


def pod(
    *,
    selector: dict[str, str] | None = None,
    terms: Any = None,
    tolerations: list[JsonDict] | None = None,
) -> JsonDict:
    spec: JsonDict = {}
    if selector is not None:
        spec["nodeSelector"] = selector
    if terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}
        }
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return builders.pod("p", "default", **spec)


def refusal(pod_body: JsonDict, facts: NodeFacts) -> str | None:
    return node_refusal(pod_constraints(pod_body), facts)


def expr(key: str, operator: str, *values: Any) -> JsonDict:
    found: JsonDict = {"key": key, "operator": operator}
    if values:
        found["values"] = list(values)
    return found


def one_term(*expressions: JsonDict, fields: list[JsonDict] | None = None) -> JsonDict:
    term: JsonDict = {"matchExpressions": list(expressions)}
    if fields is not None:
        term["matchFields"] = fields
    return {"nodeSelectorTerms": [term]}


# --------------------------------------------------------------------------- node facts


def test_a_plain_node_accepts_a_pod_that_asks_nothing() -> None:
    facts = node()
    assert facts.open
    assert facts.ready
    assert not facts.unschedulable
    assert pod_constraints(pod()) is EMPTY_CONSTRAINTS
    assert refusal(pod(), facts) is None


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        pytest.param(node(unschedulable=True), "node-a is cordoned", id="cordoned"),
        pytest.param(node(unschedulable=False), None, id="unschedulable-false"),
        pytest.param(node(ready="False"), "node-a is not Ready", id="ready-false"),
        pytest.param(node(ready="Unknown"), "node-a is not Ready", id="ready-unknown"),
        pytest.param(node(ready="True"), None, id="ready-true"),
        pytest.param(node(), None, id="no-ready-condition-counts-as-ready"),
        pytest.param(
            node(unschedulable=True, ready="False"), "node-a is cordoned", id="cordon-named-first"
        ),
    ],
)
def test_node_state(facts: NodeFacts, reason: str | None) -> None:
    assert refusal(pod(), facts) == reason


def test_malformed_node_objects_give_default_facts() -> None:
    facts = node_facts({"metadata": "x", "spec": {"taints": [1, {"key": 3}]}, "status": []})
    assert facts == NodeFacts(name="", taints=(Taint("3", "", ""),))
    assert node_facts({}) == NodeFacts(name="")


# --------------------------------------------------------------------------- nodeSelector


@pytest.mark.parametrize(
    ("selector", "labels", "reason"),
    [
        pytest.param({"zone": "a"}, {"zone": "a", "x": "y"}, None, id="match"),
        pytest.param(
            {"zone": "a"},
            {"zone": "b"},
            "node-a does not match the pod's nodeSelector zone=a",
            id="other-value",
        ),
        pytest.param(
            {"zone": "a"}, {}, "node-a does not match the pod's nodeSelector zone=a", id="absent"
        ),
        pytest.param(
            {"gpu": "a100", "zone": "a"},
            {"zone": "a"},
            "node-a does not match the pod's nodeSelector gpu=a100",
            id="all-keys-anded",
        ),
        pytest.param({}, {"zone": "a"}, None, id="empty-selector"),
    ],
)
def test_node_selector(
    selector: dict[str, str], labels: dict[str, str], reason: str | None
) -> None:
    assert refusal(pod(selector=selector), node(labels=labels)) == reason


# --------------------------------------------------------------------------- affinity

LABELS = {"zone": "a", "gpus": "8", "tier": "gold"}


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        pytest.param(expr("zone", "In", "a", "b"), True, id="in-match"),
        pytest.param(expr("zone", "In", "b"), False, id="in-other"),
        pytest.param(expr("rack", "In", "r1"), False, id="in-absent"),
        pytest.param(expr("zone", "NotIn", "b"), True, id="notin-match"),
        pytest.param(expr("zone", "NotIn", "a"), False, id="notin-listed"),
        pytest.param(expr("rack", "NotIn", "r1"), True, id="notin-absent-label-matches"),
        pytest.param(expr("tier", "Exists"), True, id="exists"),
        pytest.param(expr("rack", "Exists"), False, id="exists-absent"),
        pytest.param(expr("rack", "DoesNotExist"), True, id="doesnotexist"),
        pytest.param(expr("tier", "DoesNotExist"), False, id="doesnotexist-present"),
        pytest.param(expr("gpus", "Gt", "4"), True, id="gt"),
        pytest.param(expr("gpus", "Gt", "8"), False, id="gt-equal"),
        pytest.param(expr("gpus", "Lt", "9"), True, id="lt"),
        pytest.param(expr("gpus", "Lt", "8"), False, id="lt-equal"),
        pytest.param(expr("tier", "Gt", "1"), False, id="gt-label-not-integer"),
        pytest.param(expr("rack", "Lt", "1"), False, id="lt-absent"),
    ],
)
def test_affinity_operators(expression: JsonDict, matches: bool) -> None:
    found = refusal(pod(terms=one_term(expression)), node(labels=LABELS))
    if matches:
        assert found is None
    else:
        assert found == "node-a does not match the pod's required node affinity"


@pytest.mark.parametrize(
    ("terms", "matches"),
    [
        pytest.param(
            {
                "nodeSelectorTerms": [
                    {"matchExpressions": [expr("zone", "In", "b")]},
                    {"matchExpressions": [expr("tier", "In", "gold")]},
                ]
            },
            True,
            id="terms-ored",
        ),
        pytest.param(
            one_term(expr("zone", "In", "a"), expr("tier", "In", "silver")),
            False,
            id="expressions-anded",
        ),
        pytest.param(
            one_term(fields=[expr("metadata.name", "In", "node-a")]), True, id="field-name-in"
        ),
        pytest.param(
            one_term(fields=[expr("metadata.name", "NotIn", "node-a")]),
            False,
            id="field-name-notin",
        ),
        pytest.param(
            one_term(expr("zone", "In", "a"), fields=[expr("metadata.name", "In", "node-b")]),
            False,
            id="fields-anded-with-expressions",
        ),
    ],
)
def test_affinity_terms(terms: JsonDict, matches: bool) -> None:
    found = refusal(pod(terms=terms), node(labels=LABELS))
    assert (found is None) is matches, found


@pytest.mark.parametrize(
    ("terms", "says"),
    [
        pytest.param(one_term(expr("zone", "Near", "a")), "operator 'Near'", id="bad-operator"),
        pytest.param(one_term(expr("gpus", "Gt", "four")), "one integer value", id="gt-not-int"),
        pytest.param(one_term(expr("gpus", "Gt", "1", "2")), "one integer value", id="gt-two"),
        pytest.param(one_term(expr("zone", "In")), "at least one value", id="in-no-values"),
        pytest.param(one_term(expr("zone", "Exists", "a")), "takes no values", id="exists-values"),
        pytest.param(one_term({"operator": "In", "values": ["a"]}), "has no key", id="no-key"),
        pytest.param(
            one_term(fields=[expr("metadata.uid", "In", "x")]), "only metadata.name", id="field"
        ),
        pytest.param(
            one_term(fields=[expr("metadata.name", "Exists")]), "operator 'Exists'", id="field-op"
        ),
        pytest.param({"nodeSelectorTerms": [{}]}, "term 1 is empty", id="empty-term"),
        pytest.param({"nodeSelectorTerms": []}, "missing or empty", id="no-terms"),
        pytest.param({"nodeSelectorTerms": "zone=a"}, "missing or empty", id="terms-not-list"),
        pytest.param("garbage", "missing or empty", id="required-not-mapping"),
        pytest.param({"nodeSelectorTerms": [7]}, "term 1 is not a mapping", id="term-not-map"),
        pytest.param(
            {"nodeSelectorTerms": [{"matchExpressions": {"key": "zone"}}]},
            "matchExpressions is not a list",
            id="expressions-not-list",
        ),
        pytest.param(
            {"nodeSelectorTerms": [{"matchExpressions": ["zone"]}]},
            "is not a mapping",
            id="expression-not-mapping",
        ),
        pytest.param(
            one_term(expr("zone", "In", ["a"])), "list of strings", id="values-not-strings"
        ),
    ],
)
def test_unparsable_affinity_matches_nothing_and_says_why(terms: Any, says: str) -> None:
    found = refusal(pod(terms=terms), node(labels=LABELS))
    assert found is not None
    assert found.startswith("node-a does not match the pod's required node affinity (")
    assert says in found


def test_an_unparsable_term_does_not_spoil_a_good_one() -> None:
    terms = {
        "nodeSelectorTerms": [
            {"matchExpressions": [expr("zone", "Near", "a")]},
            {"matchExpressions": [expr("zone", "In", "a")]},
        ]
    }
    assert refusal(pod(terms=terms), node(labels=LABELS)) is None


def test_malformed_pods_never_raise() -> None:
    for body in ({}, {"spec": 3}, {"spec": {"nodeSelector": [1], "tolerations": "x"}}, []):
        pod_constraints(body)  # type: ignore[arg-type]
    odd = pod_constraints({"spec": {"tolerations": [None, {"operator": "Exists"}]}})
    assert odd.tolerations == (Toleration(operator="Exists"),)


# --------------------------------------------------------------------------- taints

GPU_RESERVED = {"key": "gpu", "value": "reserved", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("taint", "tolerations", "tolerated"),
    [
        pytest.param(GPU_RESERVED, [], False, id="untolerated-noschedule"),
        pytest.param(
            {"key": "gpu", "value": "reserved", "effect": "NoExecute"},
            [],
            False,
            id="untolerated-noexecute",
        ),
        pytest.param(
            {"key": "gpu", "effect": "PreferNoSchedule"}, [], True, id="prefernoschedule-ignored"
        ),
        pytest.param(
            GPU_RESERVED,
            [{"key": "gpu", "operator": "Equal", "value": "reserved", "effect": "NoSchedule"}],
            True,
            id="equal-exact",
        ),
        pytest.param(
            GPU_RESERVED, [{"key": "gpu", "value": "reserved"}], True, id="equal-by-default"
        ),
        pytest.param(
            GPU_RESERVED,
            [{"key": "gpu", "operator": "Equal", "value": "other"}],
            False,
            id="equal-other-value",
        ),
        pytest.param(
            GPU_RESERVED, [{"key": "gpu", "operator": "Exists"}], True, id="exists-any-value"
        ),
        pytest.param(
            GPU_RESERVED, [{"key": "other", "operator": "Exists"}], False, id="exists-other-key"
        ),
        pytest.param(GPU_RESERVED, [{"operator": "Exists"}], True, id="empty-key-exists-all"),
        pytest.param(
            GPU_RESERVED,
            [{"operator": "Exists", "effect": "NoExecute"}],
            False,
            id="effect-must-match",
        ),
        pytest.param(
            GPU_RESERVED,
            [{"key": "gpu", "operator": "Exists", "effect": ""}],
            True,
            id="empty-effect-matches-all",
        ),
        pytest.param(
            {"key": "gpu", "effect": "NoSchedule"},
            [{"key": "gpu", "operator": "Equal"}],
            True,
            id="equal-empty-values",
        ),
        pytest.param(
            GPU_RESERVED,
            [{"key": "gpu", "operator": "Near", "value": "reserved"}],
            False,
            id="unknown-operator-tolerates-nothing",
        ),
    ],
)
def test_taints_and_tolerations(
    taint: JsonDict, tolerations: list[JsonDict], tolerated: bool
) -> None:
    facts = node(taints=[taint])
    found = refusal(pod(tolerations=tolerations), facts)
    if tolerated:
        assert found is None
    else:
        assert found is not None
        assert found.startswith("node-a has taint gpu")
        assert found.endswith("the pod does not tolerate")


def test_taint_reason_text() -> None:
    found = refusal(pod(), node("node-b", taints=[GPU_RESERVED]))
    assert found == "node-b has taint gpu=reserved:NoSchedule the pod does not tolerate"


def test_every_hard_taint_must_be_tolerated() -> None:
    facts = node(taints=[GPU_RESERVED, {"key": "team", "value": "ml", "effect": "NoExecute"}])
    only_gpu = [{"key": "gpu", "operator": "Exists"}]
    assert refusal(pod(tolerations=only_gpu), facts) == (
        "node-a has taint team=ml:NoExecute the pod does not tolerate"
    )
    both = [*only_gpu, {"key": "team", "value": "ml"}]
    assert refusal(pod(tolerations=both), facts) is None


def test_a_toleration_does_not_uncordon_a_node() -> None:
    facts = node(unschedulable=True)
    assert refusal(pod(tolerations=[{"operator": "Exists"}]), facts) == "node-a is cordoned"


def test_the_pods_own_constraints_are_named_before_the_nodes_state() -> None:
    facts = node(labels={"zone": "b"}, unschedulable=True)
    assert refusal(pod(selector={"zone": "a"}), facts) == (
        "node-a does not match the pod's nodeSelector zone=a"
    )


_words = st.text("abcdefgh-./", min_size=0, max_size=8)
_taints = st.lists(
    st.builds(
        Taint,
        key=_words,
        value=_words,
        effect=st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule", "", "Other"]),
    ),
    max_size=6,
)


@given(taints=_taints, labels=st.dictionaries(_words, _words, max_size=4))
def test_a_pod_tolerating_exists_tolerates_any_taint_set(
    taints: list[Taint], labels: dict[str, str]
) -> None:
    constraints = pod_constraints(pod(tolerations=[{"operator": "Exists"}]))
    facts = NodeFacts("node-x", labels, taints=tuple(taints))
    assert node_refusal(constraints, facts) is None


@given(taints=_taints)
def test_without_tolerations_exactly_the_hard_taints_refuse(taints: list[Taint]) -> None:
    facts = NodeFacts("node-x", taints=tuple(taints))
    hard = any(t.effect in ("NoSchedule", "NoExecute") for t in taints)
    assert (node_refusal(EMPTY_CONSTRAINTS, facts) is not None) is hard
