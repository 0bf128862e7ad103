"""Issue 12's acceptance: a tenant attacks migweaver's fields; none of it works.

The tenant is a ServiceAccount with the `edit` ClusterRole bound in one namespace (on a
real cluster; the emulator has no RBAC), acting with a token from the TokenRequest API.
The admission policies are the ones `kubectl apply -k manifests/` installs
(`manifests/components/`), pointed at this run's namespace. The operator and the node
agent run in-process under their own ServiceAccounts (the agent with a token bound to a
pod on its node, as its DaemonSet pod has), the agent with fake GPUs and the device
plugin's `Allocator` called as the kubelet would call `Allocate`.

Every route of docs/security.md is tried: a pod created with a forged allocation, a forged
reservation or a forged bind-time; a CPU pod squatting with an allocation; the gate
removed and a nodeSelector set by the tenant; the bind-time rewritten after the release;
`NVIDIA_VISIBLE_DEVICES=all` in the pod's own environment; MigLayouts for another node's
GPU (and a second one for its own) under the agent's identity. Each is refused with a
clear message, while an honest pod beside them is placed and gets exactly its devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.deviceplugin.allocator import Allocator
from migweaver.agent.deviceplugin.gpus import AgentGpus
from migweaver.agent.main import run_node
from migweaver.agent.node_agent import NodeAgent
from migweaver.agent.node_capacity import NodeCapacity
from migweaver.agent.pods import PodWatcher
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
    ANNOTATION_RESERVATION,
    PLACEMENT_GATE,
)
from migweaver.core.resources.models import MIGLAYOUT_PLURAL, NODECONFIG_PLURAL
from migweaver.k8s.client import ClusterObjects, CoreObjects, NodePods, connect
from migweaver.k8s.events import EventRecorder
from tests.e2e.kube_api import MIGLAYOUTS, PODS, Kube, KubeError, Ref, meta
from tests.e2e.test_operator_e2e import (
    A100,
    TIMEOUT,
    add_node,
    add_nodeconfig,
    allocation_of,
    gpu_pod,
    layout_ready,
    released,
    running_operator,
    wait_layout,
    wait_pod,
)

JsonDict = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "manifests" / "components"
POLICY_FILES = [
    COMPONENTS / "admission-policies" / "pod-fields.yaml",
    COMPONENTS / "admission-policies" / "operator-writes.yaml",
    COMPONENTS / "admission-policies" / "agent-layouts.yaml",
    COMPONENTS / "agent-pod-policy" / "policy.yaml",
]
ACCOUNTS = Ref("v1", "serviceaccounts", True, "ServiceAccount")
POLICIES = Ref(
    "admissionregistration.k8s.io/v1",
    "validatingadmissionpolicies",
    False,
    "ValidatingAdmissionPolicy",
)
BINDINGS = Ref(
    "admissionregistration.k8s.io/v1",
    "validatingadmissionpolicybindings",
    False,
    "ValidatingAdmissionPolicyBinding",
)
ROLE_BINDINGS = Ref("rbac.authorization.k8s.io/v1", "rolebindings", True, "RoleBinding")
ROLES = Ref("rbac.authorization.k8s.io/v1", "roles", True, "Role")
CLUSTER_ROLES = Ref("rbac.authorization.k8s.io/v1", "clusterroles", False, "ClusterRole")
CLUSTER_BINDINGS = Ref(
    "rbac.authorization.k8s.io/v1", "clusterrolebindings", False, "ClusterRoleBinding"
)


# --------------------------------------------------------------------------- identities


async def install_policies(kube: Kube) -> None:
    """The shipped policies, for migweaver's ServiceAccounts in this run's namespace."""
    for path in POLICY_FILES:
        text = path.read_text().replace(
            "system:serviceaccount:migweaver-system:", f"system:serviceaccount:{kube.namespace}:"
        )
        for doc in yaml.safe_load_all(text):
            doc["metadata"]["name"] = kube.name(doc["metadata"]["name"])
            if doc["kind"] == "ValidatingAdmissionPolicy":
                await kube.create(POLICIES, doc)
            else:
                doc["spec"]["policyName"] = kube.name(doc["spec"]["policyName"])
                await kube.create(BINDINGS, doc)
    if not kube.is_emulator:
        # The apiserver applies a new policy once its informer has seen it.
        await asyncio.sleep(2)


async def grant_rbac(kube: Kube) -> None:
    """On a real cluster: the tenant's `edit` in its namespace, migweaver's own roles."""
    if kube.is_emulator:
        return  # the emulator has no RBAC: only the identities and the policies matter
    ns = kube.namespace
    await kube.create(
        ROLE_BINDINGS,
        {
            "metadata": {"name": "tenant-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}],
        },
    )
    for path in (ROOT / "manifests" / "rbac-operator.yaml", ROOT / "manifests" / "rbac-agent.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            kind = doc["kind"]
            if kind == "ServiceAccount":
                continue
            body = copy.deepcopy(doc)
            body["metadata"].pop("namespace", None)
            for subject in body.get("subjects") or []:
                subject["namespace"] = ns
            if kind in {"ClusterRole", "ClusterRoleBinding"}:
                body["metadata"]["name"] = kube.name(body["metadata"]["name"])
            if kind == "ClusterRoleBinding":
                body["roleRef"]["name"] = kube.name(body["roleRef"]["name"])
            ref = {
                "ClusterRole": CLUSTER_ROLES,
                "ClusterRoleBinding": CLUSTER_BINDINGS,
                "Role": ROLES,
                "RoleBinding": ROLE_BINDINGS,
            }[kind]
            await kube.create(ref, body)


async def token(kube: Kube, account: str, pod: JsonDict | None = None) -> str:
    spec: JsonDict = {"expirationSeconds": 3600}
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta(pod)["name"],
            "uid": meta(pod)["uid"],
        }
    answer = await kube.request(
        "POST",
        ACCOUNTS.path(kube.namespace, account, "token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    return str(answer["status"]["token"])


def kubeconfig_with(kube: Kube, bearer: str, path: Path) -> Path:
    """The cluster of `kube.kubeconfig`, as the user of this token."""
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config.get("current-context"))[
        "context"
    ]
    config["users"] = [{"name": context["user"], "user": {"token": bearer}}]
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Cluster:
    """The cluster under test with the policies, and a kubeconfig per identity."""

    kube: Kube
    tenant: Kube
    operator: Path
    accounts: Path

    async def agent_kubeconfig(self, node: str) -> Path:
        """The agent's credentials: a token bound to a pod on `node` (its DaemonSet pod)."""
        holder = await self.kube.create(
            PODS,
            {
                "metadata": {"name": f"agent-{node}"},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": "migweaver-agent",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.9"}],
                },
            },
        )
        bearer = await token(self.kube, "migweaver-agent", holder)
        return kubeconfig_with(self.kube, bearer, self.accounts / f"agent-{node}")


@contextlib.asynccontextmanager
async def attacked_cluster(kube: Kube, tmp_path: Path) -> AsyncIterator[Cluster]:
    for account in ("tenant", "migweaver-operator", "migweaver-agent"):
        await kube.create(ACCOUNTS, {"metadata": {"name": account}})
    await grant_rbac(kube)
    await install_policies(kube)
    tenant_config = kubeconfig_with(kube, await token(kube, "tenant"), tmp_path / "tenant")
    operator = kubeconfig_with(kube, await token(kube, "migweaver-operator"), tmp_path / "op")
    tenant = await Kube.connect(tenant_config, kube.namespace, kube.prefix, kube.emulator)
    try:
        yield Cluster(kube, tenant, operator, tmp_path)
    finally:
        await tenant.close()


async def refused(call: Any, status: int, message: str) -> None:
    """`call` (a coroutine) is refused with this HTTP status and a message matching."""
    with pytest.raises(KubeError) as caught:
        await call
    error = caught.value
    text = str((error.body or {}).get("message") or error.body)
    assert error.status == status, text
    assert re.search(message, text), text


def tenant_pod(name: str, **annotations: str) -> JsonDict:
    body = gpu_pod(name, 1, 8000, "mig")
    body["metadata"]["annotations"].update(annotations)
    return body


# --------------------------------------------------------------------------- agent


@dataclass
class RunningAgent:
    allocator: Allocator


@contextlib.asynccontextmanager
async def running_agent(kubeconfig: Path, node: str) -> AsyncIterator[RunningAgent]:
    """The node agent's parts, with fake GPUs, under the agent's own credentials; its
    device plugin's `Allocator` is called directly, as the kubelet calls `Allocate`."""
    api = await connect(str(kubeconfig))
    async with api:
        core = CoreObjects(api)
        events = EventRecorder(core, "migweaver-agent")
        pods = NodePods(api, node)
        agent: NodeAgent

        async def refresh(gpu_uuids: frozenset[str]) -> None:
            await agent.refresh(gpu_uuids)

        watcher = PodWatcher(node, pods, on_change=refresh, resync_s=2)
        agent = NodeAgent(
            node,
            FakeBackend.from_spec(f"{A100}:1", seed=node),
            ClusterObjects(api, MIGLAYOUT_PLURAL),
            ClusterObjects(api, NODECONFIG_PLURAL),
            core,
            events,
            held_by_pods=lambda: watcher.held,
            resync_s=2,
        )
        allocator = Allocator(node, pods, AgentGpus(agent), events)
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_node(agent, watcher, NodeCapacity(node, core), None, stop, resync_s=2)
        )
        try:
            await asyncio.wait_for(agent.ready.wait(), TIMEOUT)
            yield RunningAgent(allocator)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


# --------------------------------------------------------------------------- attacks


async def test_a_tenant_cannot_create_a_pod_with_migweavers_fields(
    kube: Kube, tmp_path: Path
) -> None:
    async with attacked_cluster(kube, tmp_path) as cluster:
        tenant = cluster.tenant
        forged_allocation = '{"node":"n1","containers":[]}'
        await refused(
            tenant.create(
                PODS, tenant_pod("forged-allocation", **{ANNOTATION_ALLOCATION: forged_allocation})
            ),
            403,
            "a pod may not be created with migweaver.io/allocation: only migweaver writes it",
        )
        await refused(
            tenant.create(
                PODS, tenant_pod("forged-reservation", **{ANNOTATION_RESERVATION: '{"node":"n1"}'})
            ),
            403,
            "a pod may not be created with migweaver.io/reservation",
        )
        await refused(
            tenant.create(PODS, tenant_pod("forged-bind-time", **{ANNOTATION_BIND_TIME: "0"})),
            403,
            "a pod may not be created with migweaver.io/bind-time",
        )
        # Squatting: a CPU pod naming an instance, to pin it.
        squatter = {
            "metadata": {
                "name": "squatter",
                "annotations": {
                    ANNOTATION_ALLOCATION: forged_allocation,
                    ANNOTATION_BIND_PHASE: "success",
                },
            },
            "spec": {"containers": [{"name": "cpu", "image": "registry.k8s.io/pause:3.9"}]},
        }
        await refused(
            tenant.create(PODS, squatter),
            403,
            "a pod may not be created with migweaver.io/allocation",
        )
        # Nothing was created.
        names = {meta(p)["name"] for p in await kube.list(PODS)}
        assert not names & {
            "forged-allocation",
            "forged-reservation",
            "forged-bind-time",
            "squatter",
        }


async def test_a_tenant_cannot_release_its_own_gated_pod(kube: Kube, tmp_path: Path) -> None:
    async with attacked_cluster(kube, tmp_path) as cluster:
        tenant = cluster.tenant
        created = await tenant.create(PODS, tenant_pod("eager"))
        kube.track(PODS, "eager")
        assert meta(created)["name"] == "eager"
        await refused(
            tenant.request(
                "PATCH",
                PODS.path(kube.namespace, "eager"),
                [{"op": "remove", "path": "/spec/schedulingGates"}],
                content_type="application/json-patch+json",
            ),
            403,
            "only the migweaver operator may remove the scheduling gate migweaver.io/placement",
        )
        await refused(
            tenant.patch(
                PODS, "eager", {"spec": {"nodeSelector": {"kubernetes.io/hostname": "gpu-9"}}}
            ),
            403,
            "only the migweaver operator may set the nodeSelector or affinity of a pod waiting",
        )
        await refused(
            tenant.patch(
                PODS, "eager", {"metadata": {"annotations": {ANNOTATION_RESERVATION: "{}"}}}
            ),
            403,
            "only the migweaver operator may set or change migweaver.io/reservation, not "
            f"system:serviceaccount:{kube.namespace}:tenant",
        )
        await refused(
            tenant.patch(
                PODS, "eager", {"metadata": {"annotations": {ANNOTATION_ALLOCATION: "{}"}}}
            ),
            403,
            "only the migweaver operator may set or change migweaver.io/allocation",
        )
        # Everything else stays the tenant's: its own annotations and labels.
        patched = await tenant.patch(
            PODS, "eager", {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}}
        )
        assert meta(patched)["labels"] == {"team": "a"}
        pod = await kube.get(PODS, "eager")
        assert pod["spec"]["schedulingGates"] == [{"name": PLACEMENT_GATE}]
        assert not pod["spec"].get("nodeSelector")


async def test_an_honest_pod_gets_exactly_its_devices_beside_the_attacks(
    kube: Kube, binder: None, tmp_path: Path
) -> None:
    node = kube.name("gpu-a")
    await add_node(kube, node)
    await add_nodeconfig(kube, node, "mig")
    async with attacked_cluster(kube, tmp_path) as cluster:
        tenant = cluster.tenant
        agent_config = await cluster.agent_kubeconfig(node)
        async with (
            running_agent(agent_config, node) as agent,
            running_operator(kube, kubeconfig=str(cluster.operator)),
        ):
            await wait_layout(kube, f"{node}-gpu0", layout_ready)
            honest = tenant_pod("honest")
            # CUDA images set NVIDIA_VISIBLE_DEVICES=all: the answer must not depend on it.
            honest["spec"]["containers"][0]["env"] = [
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}
            ]
            await tenant.create(PODS, honest)
            kube.track(PODS, "honest")

            pod = await wait_pod(kube, "honest", released)
            allocation = allocation_of(pod)
            assert allocation.pod_uid == meta(pod)["uid"]
            (device,) = allocation.devices
            assert device.mig_uuid

            # Released: the tenant may not jump the device plugin's queue or rewrite it.
            await refused(
                tenant.patch(
                    PODS, "honest", {"metadata": {"annotations": {ANNOTATION_BIND_TIME: "0"}}}
                ),
                403,
                "only migweaver \\(its operator, or the agent of the node of the pod\\) may set "
                "or change migweaver.io/bind-time",
            )
            await refused(
                tenant.patch(
                    PODS, "honest", {"metadata": {"annotations": {ANNOTATION_ALLOCATION: None}}}
                ),
                403,
                "only the migweaver operator may set or change migweaver.io/allocation",
            )

            bound = await wait_pod(kube, "honest", lambda p: bool(p and p["spec"].get("nodeName")))
            assert bound["spec"]["nodeName"] == node
            # The kubelet admits the pod: Allocate answers with exactly its instance, as a
            # CDI device, and nothing from the pod's own environment.
            (grant,) = await agent.allocator.allocate([["any-device-id"]])
            assert grant.match.pod.key == f"{kube.namespace}/honest"
            assert grant.cdi_devices == (f"nvidia.com/gpu={device.mig_uuid}",)
            assert "NVIDIA_VISIBLE_DEVICES" not in grant.envs
            # The agent recorded it under its own identity (the policies let it).
            done = await wait_pod(
                kube,
                "honest",
                lambda p: bool(
                    p and meta(p)["annotations"].get(ANNOTATION_BIND_PHASE) == "success"
                ),
            )
            assert allocation_of(done) == allocation


async def test_an_agent_cannot_touch_another_nodes_gpus(kube: Kube, tmp_path: Path) -> None:
    node, other = kube.name("gpu-a"), kube.name("gpu-b")
    await add_node(kube, node)
    await add_node(kube, other)
    async with attacked_cluster(kube, tmp_path) as cluster:
        agent_config = await cluster.agent_kubeconfig(node)
        # The other node's own agent created its MigLayout (here: the administrator).
        theirs = {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "MigLayout",
            "metadata": {"name": f"{other}-gpu0"},
            "spec": {
                "nodeName": other,
                "gpuIndex": 0,
                "gpuUUID": "GPU-theirs",
                "migEnabled": False,
            },
        }
        await kube.create(MIGLAYOUTS, theirs)
        stolen = await Kube.connect(agent_config, kube.namespace, kube.prefix, kube.emulator)
        try:
            second = copy.deepcopy(theirs)
            second["metadata"]["name"] = f"{other}-gpu1"
            second["spec"]["gpuIndex"] = 1
            await refused(
                stolen.create(MIGLAYOUTS, second),
                403,
                f"the migweaver agent of node {node} may create only the MigLayouts "
                f"{node}-gpu<index> of its own GPUs, not {other}-gpu1",
            )
            # A second MigLayout for another node's GPU, under a name of its own node.
            rogue = copy.deepcopy(theirs)
            rogue["metadata"]["name"] = f"{node}-gpu7"
            await refused(
                stolen.create(MIGLAYOUTS, rogue),
                403,
                f"may create only the MigLayouts {node}-gpu<index> of its own GPUs, "
                f"not {node}-gpu7",
            )
            await refused(
                stolen.patch(
                    MIGLAYOUTS,
                    f"{other}-gpu0",
                    {"status": {"phase": "Failed"}},
                    subresource="status",
                ),
                403,
                f"the migweaver agent of node {node} may write the status only of its own "
                f"MigLayouts, not of {other}-gpu0",
            )
            await refused(
                stolen.patch(MIGLAYOUTS, f"{other}-gpu0", {"spec": {"migEnabled": True}}),
                403,
                # RBAC refuses first on a real cluster; the policy would otherwise.
                "the migweaver agent may only create MigLayouts and write their status"
                '|cannot patch resource "miglayouts"',
            )
        finally:
            await stolen.close()
        layout = await kube.get(MIGLAYOUTS, f"{other}-gpu0")
        assert layout["spec"]["migEnabled"] is False
        assert not layout.get("status")
