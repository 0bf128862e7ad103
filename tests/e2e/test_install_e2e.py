"""Installing and uninstalling on a real cluster (MIGWEAVER_E2E_KUBECONFIG only).

- `helm install` of charts/migweaver (Helm's engine, server-side apply) creates every object
  the chart renders; `helm uninstall` removes them; `migweaver release-gates` (what the
  chart's post-delete hook runs) then leaves no pod with the `migweaver.io/placement` gate;
- every object of `kubectl kustomize manifests/` is created by a server-side apply (not a
  dry run), and after deleting them and running `migweaver release-gates` no pod is gated.

The emulator implements neither Deployments, RBAC nor webhooks: skipped there. Both tests
use the fixed names of the install (migweaver-system, the ClusterRoles, the webhook), so
they run against a cluster where migweaver is not installed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from migweaver.core.resources.api import PLACEMENT_GATE
from tests.e2e.kube_api import NAMESPACES, PODS, Kube, KubeError, meta
from tests.helm_chart import CHART, MANIFESTS, NAMESPACE, RELEASE, key, render
from tests.kustomize import kustomize

APPLY_PATCH = "application/apply-patch+yaml"
# The install's CRDs stay after an uninstall (Helm never deletes crds/), as the e2e
# fixture's do.
KEPT = {"CustomResourceDefinition"}


@pytest_asyncio.fixture(loop_scope="session")
async def real(kube: Kube) -> AsyncIterator[Kube]:
    """The real cluster, with the install's namespace gone before and after the test."""
    if kube.is_emulator:
        pytest.skip("needs a real apiserver (MIGWEAVER_E2E_KUBECONFIG)")
    await kube.wait_gone(NAMESPACES, NAMESPACE, timeout_s=120)
    yield kube
    with contextlib.suppress(KubeError):
        await kube.request("DELETE", NAMESPACES.path(name=NAMESPACE))
    await kube.wait_gone(NAMESPACES, NAMESPACE, timeout_s=120)


async def exists(kube: Kube, obj: dict[str, Any]) -> bool:
    ref = await kube.ref_for(obj)
    namespace = meta(obj).get("namespace") if ref.namespaced else None
    return await kube.get_or_none(ref, meta(obj)["name"], namespace) is not None


async def gated_pods(kube: Kube) -> list[str]:
    return [
        f"{meta(p)['namespace']}/{meta(p)['name']}"
        for p in await kube.list(PODS)
        if PLACEMENT_GATE in [g["name"] for g in p["spec"].get("schedulingGates") or []]
    ]


async def wait_a_gated_pod(kube: Kube) -> None:
    """A pod gated by migweaver that waits (no operator runs here). Made before the
    install: once installed, the webhook refuses GPU pods while no operator answers, and
    the admission policies let no one else write the gate."""
    await kube.create(
        PODS,
        {
            "metadata": {"name": "waits"},
            "spec": {
                "schedulingGates": [{"name": PLACEMENT_GATE}],
                "containers": [
                    {
                        "name": "main",
                        "image": "local/busybox:1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ],
            },
        },
    )
    assert await gated_pods(kube) == [f"{kube.namespace}/waits"]


async def release_gates(kube: Kube) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "migweaver", "release-gates", "--kubeconfig", str(kube.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_helm_install_creates_every_object_and_uninstall_leaves_no_gate(
    real: Kube,
) -> None:
    import helm_python as helm

    # The hook Job needs a kubelet to run; the test runs its command itself.
    values = {"uninstall": {"releaseGates": False}, "namespace": {"create": False}}
    wanted = render(values)
    await wait_a_gated_pod(real)
    with helm.Config(kubeconfig_path=real.kubeconfig, namespace=NAMESPACE) as config:
        await asyncio.to_thread(
            config.install, CHART, RELEASE, values, namespace=NAMESPACE, create_namespace=True
        )
        try:
            missing = [key(o) for o in wanted if not await exists(real, o)]
            assert missing == []
        finally:
            await asyncio.to_thread(config.uninstall, RELEASE, ignore_not_found=True)
    left = [key(o) for o in wanted if o["kind"] not in KEPT and await exists(real, o)]
    assert left == []
    await release_gates(real)
    assert await gated_pods(real) == []


async def test_manifests_server_side_apply_creates_every_object(real: Kube) -> None:
    objects = kustomize(MANIFESTS)
    applied: list[dict[str, Any]] = []
    await wait_a_gated_pod(real)
    try:
        for obj in objects:
            ref = await real.ref_for(obj)
            namespace = meta(obj).get("namespace") if ref.namespaced else None
            await real.request(
                "PATCH",
                ref.path(namespace, meta(obj)["name"]),
                obj,
                query={"fieldManager": "migweaver-e2e", "force": "true"},
                content_type=APPLY_PATCH,
            )
            applied.append(obj)
        assert [key(o) for o in objects if not await exists(real, o)] == []
    finally:
        # `kubectl delete -k manifests/`, CRDs kept (the e2e fixture owns them).
        for obj in reversed(applied):
            if obj["kind"] in KEPT:
                continue
            ref = await real.ref_for(obj)
            namespace = meta(obj).get("namespace") if ref.namespaced else None
            with contextlib.suppress(KubeError):
                await real.request("DELETE", ref.path(namespace, meta(obj)["name"]))
    await release_gates(real)
    assert await gated_pods(real) == []
