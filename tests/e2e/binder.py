"""A stand-in for kube-scheduler's last step, for the emulator (which has no scheduler).

It binds a pod to the node its `nodeSelector` names under `kubernetes.io/hostname` once
the pod has no scheduling gates left, through the `pods/<name>/binding` subresource, as
kube-scheduler does. It does not check capacity, taints or affinity: migweaver's
operator has already chosen the node and pinned the pod to it. On a real cluster the
real scheduler does this, so the `binder` fixture does nothing there.
"""

from __future__ import annotations

import logging
from typing import Any

from tests.e2e.kube_api import PODS, Kube, KubeError, meta

log = logging.getLogger("e2e.binder")

HOSTNAME = "kubernetes.io/hostname"


def wants_binding(pod: dict[str, Any]) -> str | None:
    """The node to bind `pod` to now, or None."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName") or spec.get("schedulingGates") or meta(pod).get("deletionTimestamp"):
        return None
    node = (spec.get("nodeSelector") or {}).get(HOSTNAME)
    return str(node) if node else None


async def bind(kube: Kube, pod: dict[str, Any], node: str) -> None:
    name, namespace = meta(pod)["name"], meta(pod)["namespace"]
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    try:
        await kube.request("POST", PODS.path(namespace, name, "binding"), body)
        log.info("bound pod %s/%s to %s", namespace, name, node)
    except KubeError as exc:
        # 409: bound meanwhile, or gated again; 404: deleted. The next event decides.
        if exc.status not in (404, 409):
            raise


async def run_binder(kube: Kube) -> None:
    """Bind pods in every namespace until cancelled (list, then watch, then re-list)."""
    while True:
        pods, rv = await kube.list_with_version(PODS)
        for pod in pods:
            if node := wants_binding(pod):
                await bind(kube, pod, node)
        async for kind, pod in kube.watch(PODS, rv, timeout_s=300):
            if kind in ("ADDED", "MODIFIED") and (node := wants_binding(pod)):
                await bind(kube, pod, node)
            elif kind == "ERROR":
                break  # 410: re-list
