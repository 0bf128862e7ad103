"""The admission policies of manifests/components/admission-policies/, evaluated with
cel-python as the apiserver evaluates them (docs/security.md): who may write migweaver's
pod fields, what the operator may write, which MigLayouts an agent may touch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
    ANNOTATION_RESERVATION,
    PLACEMENT_CONDITION,
    PLACEMENT_GATE,
)
from tests.unit.project.test_manifests import NAMESPACE, NODE_KEY, Policy, find, merge_patch

JsonDict = dict[str, Any]
OPERATOR = f"system:serviceaccount:{NAMESPACE}:migweaver-operator"
AGENT = f"system:serviceaccount:{NAMESPACE}:migweaver-agent"
TENANT = "system:serviceaccount:team-a:builder"
# A tenant may create a ServiceAccount of that name in its own namespace.
LOOKALIKE = "system:serviceaccount:team-a:migweaver-operator"


def policy(name: str) -> Policy:
    return Policy(find("ValidatingAdmissionPolicy", name)["spec"])


def gated_pod(**annotations: str) -> JsonDict:
    return {
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "annotations": {"team": "a", **annotations},
        },
        "spec": {
            "schedulingGates": [{"name": PLACEMENT_GATE}],
            "containers": [
                {"name": "main", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ],
        },
        "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]},
    }


def request(
    user: str, operation: str = "UPDATE", sub: str = "", resource: str = "pods", node: str = ""
) -> JsonDict:
    return {
        "operation": operation,
        "resource": {"group": "", "version": "v1", "resource": resource},
        # The apiserver leaves subResource out for the object itself.
        **({"subResource": sub} if sub else {}),
        "name": "p",
        "namespace": "team-a",
        "userInfo": {"username": user, "groups": [], "extra": {NODE_KEY: [node]} if node else {}},
    }


RELEASE = {
    "metadata": {
        "annotations": {
            ANNOTATION_ALLOCATION: '{"node":"n1","podUID":"u"}',
            ANNOTATION_BIND_PHASE: "allocating",
            ANNOTATION_BIND_TIME: "1",
            ANNOTATION_RESERVATION: None,
        }
    },
    "spec": {"nodeSelector": {"kubernetes.io/hostname": "n1"}, "schedulingGates": None},
}


# --- migweaver-pod-fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        pytest.param(
            ANNOTATION_ALLOCATION,
            "a pod may not be created with migweaver.io/allocation",
            id="forged-allocation",
        ),
        pytest.param(
            ANNOTATION_RESERVATION,
            "a pod may not be created with migweaver.io/reservation",
            id="forged-reservation",
        ),
        pytest.param(
            ANNOTATION_BIND_TIME,
            "a pod may not be created with migweaver.io/bind-time",
            id="forged-bind-time",
        ),
    ],
)
def test_no_pod_is_created_with_migweavers_fields(annotation: str, message: str) -> None:
    for user in (TENANT, OPERATOR):
        allowed, why = policy("migweaver-pod-fields").admit(
            request(user, "CREATE"), gated_pod(**{annotation: "{}"}), None
        )
        assert not allowed
        assert why.startswith(message)
    assert policy("migweaver-pod-fields").admit(request(TENANT, "CREATE"), gated_pod(), None)[0]


Change = Callable[[JsonDict], None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda p: p["metadata"]["annotations"].update({ANNOTATION_ALLOCATION: "{}"}),
            "only the migweaver operator may set or change migweaver.io/allocation",
            id="allocation",
        ),
        pytest.param(
            lambda p: p["metadata"]["annotations"].update({ANNOTATION_RESERVATION: "{}"}),
            "only the migweaver operator may set or change migweaver.io/reservation",
            id="reservation",
        ),
        pytest.param(
            lambda p: p["metadata"]["annotations"].update({ANNOTATION_BIND_TIME: "0"}),
            "only migweaver (its operator, or the agent of the node of the pod) may set or "
            "change migweaver.io/bind-time",
            id="bind-time",
        ),
        pytest.param(
            lambda p: p["spec"].update(schedulingGates=[]),
            "only the migweaver operator may remove the scheduling gate",
            id="gate-removal",
        ),
        pytest.param(
            lambda p: p["spec"].update(nodeSelector={"kubernetes.io/hostname": "gpu-9"}),
            "only the migweaver operator may set the nodeSelector or affinity",
            id="node-selector-on-gated-pod",
        ),
    ],
)
@pytest.mark.parametrize("user", [TENANT, LOOKALIKE])
def test_tenants_may_not_write_migweavers_pod_fields(
    change: Change, message: str, user: str
) -> None:
    old = gated_pod()
    new = copy.deepcopy(old)
    change(new)
    allowed, why = policy("migweaver-pod-fields").admit(request(user), new, old)
    assert not allowed
    assert why.startswith(message)


def test_tenants_keep_every_other_pod_write() -> None:
    old = gated_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["team"] = "b"
    new["metadata"]["labels"] = {"x": "y"}
    assert policy("migweaver-pod-fields").admit(request(TENANT), new, old) == (True, "allowed")
    # A pod that is no longer gated may get a nodeSelector change refused by Kubernetes
    # itself, not by migweaver; and a pod without migweaver fields is untouched.
    ungated = copy.deepcopy(old)
    ungated["spec"]["schedulingGates"] = []
    assert policy("migweaver-pod-fields").admit(request(TENANT), ungated, ungated)[0]


def test_the_operators_release_and_the_agents_bind_patch_pass() -> None:
    old = gated_pod(**{ANNOTATION_RESERVATION: "{}"})
    released = merge_patch(old, RELEASE)
    assert policy("migweaver-pod-fields").admit(request(OPERATOR), released, old)[0]
    assert policy("migweaver-operator").admit(request(OPERATOR), released, old) == (
        True,
        "allowed",
    )
    bound = merge_patch(released, {"metadata": {"annotations": {ANNOTATION_BIND_PHASE: "success"}}})
    assert policy("migweaver-pod-fields").admit(request(AGENT, node="n1"), bound, released)[0]


# --- migweaver-operator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "change", "message"),
    [
        pytest.param(
            "",
            lambda p: p["metadata"]["annotations"].update(team="b"),
            "the migweaver operator may change only the migweaver.io/allocation",
            id="other-annotation",
        ),
        pytest.param(
            "",
            lambda p: p["metadata"].update(labels={"x": "y"}),
            "the migweaver operator may not change the labels",
            id="labels",
        ),
        pytest.param(
            "",
            lambda p: p["spec"]["containers"][0].update(image="evil"),
            "the migweaver operator may not change the images",
            id="image",
        ),
        pytest.param(
            "",
            lambda p: p["spec"].update(schedulingGates=[{"name": "x.io/y"}]),
            "the migweaver operator may only remove its own scheduling gate",
            id="foreign-gate",
        ),
        pytest.param(
            "status",
            lambda p: p["status"]["conditions"][0].update(status="True"),
            "the migweaver operator may change only the condition migweaver.io/Placement",
            id="scheduler-condition",
        ),
    ],
)
def test_the_operators_pod_writes_are_limited_to_its_fields(
    sub: str, change: Change, message: str
) -> None:
    old = gated_pod()
    new = copy.deepcopy(old)
    change(new)
    allowed, why = policy("migweaver-operator").admit(request(OPERATOR, sub=sub), new, old)
    assert not allowed
    assert why.startswith(message)


def test_the_operators_condition_passes_and_other_verbs_are_refused() -> None:
    old = gated_pod()
    new = copy.deepcopy(old)
    new["status"]["conditions"].append({"type": PLACEMENT_CONDITION, "status": "False"})
    assert policy("migweaver-operator").admit(request(OPERATOR, sub="status"), new, old)[0]
    allowed, why = policy("migweaver-operator").admit(request(OPERATOR, "DELETE"), None, old)
    assert not allowed
    assert why == (
        "the migweaver operator may only patch pods and their status and evict pods, "
        "not DELETE pods"
    )
    # Creating a pod stays refused; creating a pod's eviction is what the operator does to
    # a pod released to a Node deleted before the pod was bound.
    refused, why = policy("migweaver-operator").admit(request(OPERATOR, "CREATE"), new, None)
    assert not refused
    assert why.endswith("not CREATE pods")
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    evict = request(OPERATOR, "CREATE", sub="eviction")
    assert policy("migweaver-operator").admit(evict, eviction, None)[0]
    # A lookalike account is not the operator: the policy leaves it to migweaver-pod-fields.
    assert policy("migweaver-operator").admit(request(LOOKALIKE), new, old) == (
        True,
        "not matched",
    )


# --- migweaver-agent-layouts ---------------------------------------------------------------


def layout(name: str, node: str, index: int) -> JsonDict:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node, "gpuIndex": index, "gpuUUID": "GPU-1", "policy": "dynamic"},
    }


def layout_request(operation: str, sub: str = "", node: str = "n1") -> JsonDict:
    return request(AGENT, operation, sub, resource="miglayouts", node=node) | {"namespace": ""}


@pytest.mark.parametrize(
    ("operation", "sub", "obj", "allowed", "message"),
    [
        pytest.param("CREATE", "", layout("n1-gpu0", "n1", 0), True, "allowed", id="own-gpu"),
        pytest.param(
            "CREATE",
            "",
            layout("n2-gpu0", "n2", 0),
            False,
            "the migweaver agent of node n1 may create only the MigLayouts n1-gpu<index> of its "
            "own GPUs, not n2-gpu0",
            id="another-nodes-gpu",
        ),
        pytest.param(
            "CREATE",
            "",
            layout("n1-extra", "n1", 0),
            False,
            "the migweaver agent of node n1 may create only the MigLayouts n1-gpu<index> of its "
            "own GPUs, not n1-extra",
            id="second-layout-for-own-gpu",
        ),
        pytest.param(
            "UPDATE", "status", layout("n1-gpu0", "n1", 0), True, "allowed", id="own-status"
        ),
        pytest.param(
            "UPDATE",
            "status",
            layout("rogue", "n1", 0),
            True,
            "allowed",
            id="conflict-report-on-own-node",
        ),
        pytest.param(
            "UPDATE",
            "status",
            layout("n2-gpu0", "n2", 0),
            False,
            "the migweaver agent of node n1 may write the status only of its own MigLayouts, "
            "not of n2-gpu0",
            id="another-nodes-status",
        ),
        pytest.param(
            "UPDATE",
            "",
            layout("n1-gpu0", "n1", 0),
            False,
            "the migweaver agent may only create MigLayouts and write their status, not UPDATE "
            "miglayouts",
            id="spec-write",
        ),
    ],
)
def test_agents_touch_only_their_own_nodes_layouts(
    operation: str, sub: str, obj: JsonDict, allowed: bool, message: str
) -> None:
    old = obj if operation == "UPDATE" else None
    assert policy("migweaver-agent-layouts").admit(layout_request(operation, sub), obj, old) == (
        allowed,
        message,
    )
