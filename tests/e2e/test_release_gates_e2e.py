"""`migweaver release-gates` against the API: after an uninstall no pod keeps waiting.

Pods gated by migweaver (one also with another controller's gate, one with an unreleased
reservation) lose the `migweaver.io/placement` gate; the other gate, a pod that was never
gated and a released pod's allocation stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_RESERVATION,
    PLACEMENT_GATE,
)
from migweaver.operator.release_gates import release_gates
from tests.e2e.kube_api import PODS, Kube, meta

OTHER_GATE = "example.com/quota"


def pod_body(name: str, gates: list[str], annotations: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "schedulingGates": [{"name": g} for g in gates],
            "containers": [
                {
                    "name": "main",
                    "image": "local/busybox:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


async def make_pods(kube: Kube) -> dict[str, dict]:
    reservation = json.dumps({"node": "gone-node", "containers": []})
    bodies = {
        "waiting": pod_body("waiting", [PLACEMENT_GATE]),
        "two-gates": pod_body("two-gates", [OTHER_GATE, PLACEMENT_GATE]),
        "reserved": pod_body("reserved", [PLACEMENT_GATE], {ANNOTATION_RESERVATION: reservation}),
        "released": pod_body("released", [OTHER_GATE], {ANNOTATION_ALLOCATION: '{"node": "n"}'}),
    }
    for body in bodies.values():
        await kube.create(PODS, body)
    return bodies


def gates(pod: dict) -> list[str]:
    return [g["name"] for g in pod["spec"].get("schedulingGates") or []]


async def test_release_gates_frees_every_waiting_pod(kube: Kube) -> None:
    await make_pods(kube)
    dry = await release_gates(kube.api, dry_run=True)
    mine = {p for p in dry.released if p.startswith(f"{kube.namespace}/")}
    assert mine == {f"{kube.namespace}/{n}" for n in ("waiting", "two-gates", "reserved")}
    # A dry run changes nothing.
    assert gates(await kube.get(PODS, "waiting")) == [PLACEMENT_GATE]

    result = await release_gates(kube.api)
    assert result.failed == []
    after = {meta(p)["name"]: p for p in await kube.list(PODS)}
    assert all(PLACEMENT_GATE not in gates(p) for p in after.values())
    assert gates(after["two-gates"]) == [OTHER_GATE]
    assert gates(after["released"]) == [OTHER_GATE]
    assert ANNOTATION_RESERVATION not in (meta(after["reserved"]).get("annotations") or {})
    assert meta(after["released"])["annotations"][ANNOTATION_ALLOCATION] == '{"node": "n"}'
    # Nothing is left for a second run.
    again = await release_gates(kube.api, dry_run=True)
    assert [p for p in again.released if p.startswith(f"{kube.namespace}/")] == []


async def test_release_gates_command(kube: Kube) -> None:
    await make_pods(kube)
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "migweaver",
            "release-gates",
            "--kubeconfig",
            str(kube.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"released {kube.namespace}/waiting" in done.stdout
    assert "0 failed" in done.stdout
    for pod in await kube.list(PODS):
        assert PLACEMENT_GATE not in gates(pod), meta(pod)["name"]


async def test_release_gates_without_a_cluster_says_why(tmp_path: object) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "migweaver", "release-gates", "--kubeconfig", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "error: cannot connect to the cluster" in done.stderr
    assert "Traceback" not in done.stderr
