"""`migweaver release-gates`: lets every pod that waits for migweaver go to the scheduler.

Run after `helm uninstall` or `kubectl delete -k manifests/` (the chart also runs it as a
post-delete hook): without the operator nothing removes the `migweaver.io/placement`
scheduling gate, and a pod created while migweaver was installed would wait forever. Only
pods are patched: MIG instances, MigLayouts and running pods are left alone.

Each patch is conditional on the pod's resourceVersion; a pod that changed meanwhile is
read again and retried, a pod that is gone is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from kubernetes_asyncio import client

from migweaver.core.operator.release import leave_patch
from migweaver.core.operator.state import has_placement_gate
from migweaver.core.resources.api import metadata_of
from migweaver.core.resources.bodies import PodBody
from migweaver.k8s.client import ApiError, Conflict, NotFound
from migweaver.k8s.cluster import Pods

__all__ = ["GateRelease", "release_gates"]

# A pod that keeps changing between our read and our patch is left for a second run.
ATTEMPTS = 5


@dataclass(slots=True)
class GateRelease:
    """What a run did: pods released (namespace/name), and those it could not release."""

    released: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _name(pod: PodBody) -> str:
    meta = metadata_of(pod)
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


async def _release(pods: Pods, pod: PodBody) -> str | None:
    """Release one pod; None when done (or gone), else why not."""
    meta = metadata_of(pod)
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    for _ in range(ATTEMPTS):
        if not has_placement_gate(pod):
            return None
        try:
            await pods.patch(namespace, name, leave_patch(pod))
            return None
        except NotFound:
            return None
        except Conflict:
            try:
                pod = cast(PodBody, await pods.get(namespace, name))
            except NotFound:
                return None
            except ApiError as exc:
                return str(exc)
        except ApiError as exc:
            return str(exc)
    return f"the pod changed {ATTEMPTS} times while it was being released; run again"


async def release_gates(api: client.ApiClient, *, dry_run: bool = False) -> GateRelease:
    """Remove the placement gate from every pod in the cluster that carries it."""
    pods = Pods(api)
    result = GateRelease()
    for pod in cast("list[PodBody]", (await pods.list()).items):
        if not has_placement_gate(pod):
            continue
        why = None if dry_run else await _release(pods, pod)
        if why is None:
            result.released.append(_name(pod))
        else:
            result.failed.append(f"{_name(pod)}: {why}")
    return result
