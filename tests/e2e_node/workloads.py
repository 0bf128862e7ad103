"""Pods that really run on the tier's node, and what their containers see.

Every pod is `local/busybox:1` (the only image the node has; `imagePullPolicy: Never`).
Its container prints its environment once, then sleeps: `container_env` reads that
print back from the container's log through the API (the kubelet serves it), so a test
asserts what the process in the container was given, not what the API says it should be.
"""

from __future__ import annotations

import asyncio
from typing import Any

from migweaver.core.resources.allocation import Allocation, parse_allocation
from migweaver.core.resources.api import ANNOTATION_ALLOCATION, LABEL_NODE, PLACEMENT_GATE
from migweaver.core.resources.models import node_label_value
from tests.e2e.kube_api import PODS, Kube, KubeError, meta

JsonDict = dict[str, Any]

GPU_MODEL = "A30-24GB"  # four 1g instances per GPU: eight 1g pods fill the node
GPUS = 2
ONE_G_PER_GPU = 4
GPU_MEMORY_MIB = 24576
MIG_NODE_OFFERS = {
    "nvidia.com/gpu": str(GPUS * ONE_G_PER_GPU),  # in MIG mode, one device id per memory slot
    "nvidia.com/gpumem": str(GPUS * GPU_MEMORY_MIB),
    "nvidia.com/gpucores": str(GPUS * 100),
}
"""The node's GPU allocatable in MIG mode: the kubelet's count of the plugin's devices and
the agent's resources."""
IMAGE = "local/busybox:1"
FILES = "---- files ----"
ENV_END = "---- env printed ----"
HAMI_CORE_FILES = ("/etc/ld.so.preload", "/usr/local/vgpu/libvgpu.so")
HAMI_CORE_CACHE = "/usr/local/vgpu"
HAMI_CORE_STAND_IN = "migweaver e2e stand-in for HAMi-core's libvgpu.so"
# What each container runs: its environment, the first line of HAMi-core's files where
# they are mounted, whether HAMi-core's cache directory is writable; then it sleeps.
REPORT = "; ".join(
    [
        "env | sort",
        f"echo '{FILES}'",
        f"for f in {' '.join(HAMI_CORE_FILES)}; do "
        '[ -f "$f" ] && echo "$f=$(head -n 1 "$f")"; done',
        f"touch {HAMI_CORE_CACHE}/.probe 2>/dev/null && echo '{HAMI_CORE_CACHE}=writable'",
        f"echo '{ENV_END}'",
        "exec sleep 3600",
    ]
)
POD_TIMEOUT_S = 60.0


def node_selector(node: str) -> str:
    return f"{LABEL_NODE}={node_label_value(node)}"


def layouts_ready(layouts: list[JsonDict], *, mig: bool) -> bool:
    """Every MigLayout acted on its latest spec, Ready, in the given mode."""
    return bool(layouts) and all(
        (layout.get("status") or {}).get("observedGeneration") == meta(layout).get("generation")
        and (layout.get("status") or {}).get("phase") == "Ready"
        and layout["spec"].get("migEnabled", True) is mig
        for layout in layouts
    )


def busybox_pod(
    name: str,
    limits: dict[str, int],
    mode: str | None = None,
    *,
    gated: bool = True,
    container: str = "main",
) -> JsonDict:
    """A pod asking these `nvidia.com/*` limits; `gated`: as the webhook leaves it."""
    annotations = {"nvidia.com/vgpu-mode": mode} if mode else {}
    spec: JsonDict = {
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": container,
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", REPORT],
                "resources": {"limits": {k: str(v) for k, v in limits.items()}},
            }
        ],
    }
    if gated:
        spec["schedulingGates"] = [{"name": PLACEMENT_GATE}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }


def running(pod: JsonDict | None) -> bool:
    if pod is None:
        return False
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return (pod.get("status") or {}).get("phase") == "Running" and all(
        "running" in (s.get("state") or {}) for s in statuses
    )


async def wait_running(kube: Kube, name: str, timeout_s: float = POD_TIMEOUT_S) -> JsonDict:
    pod = await kube.wait_for(PODS, name, running, timeout_s=timeout_s)
    assert pod is not None
    return pod


async def container_log(kube: Kube, name: str, container: str = "main") -> str:
    path = PODS.path(kube.namespace, name, "log")
    response = await kube.api.call_api(
        path,
        "GET",
        query_params=[("container", container)],
        header_params={"Accept": "*/*"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    try:
        text = await response.text()
        if response.status != 200:
            raise KubeError(response.status, {"message": text}, f"GET {path}")
        return str(text)
    finally:
        response.close()


async def container_report(
    kube: Kube, name: str, container: str = "main"
) -> tuple[dict[str, str], dict[str, str]]:
    """What the container's process saw at start: its environment, and the HAMi-core
    files and directory it found (path -> first line, or `writable`)."""
    text = ""
    for _ in range(100):
        # The log may lag the Running status by a moment, and a kubelet that has just
        # started answers 404 for pods it has not taken up again yet.
        try:
            text = await container_log(kube, name, container)
        except KubeError as exc:
            if exc.status not in (404, 500, 502, 503):
                raise
            text = str(exc)
        if ENV_END in text:
            env_part, _, files_part = text.split(ENV_END)[0].partition(FILES)
            return _pairs(env_part), _pairs(files_part)
        await asyncio.sleep(0.2)
    raise AssertionError(f"pod {name} printed no report; its log: {text!r}")


async def container_env(kube: Kube, name: str, container: str = "main") -> dict[str, str]:
    """The environment the container's process started with (from its own print)."""
    env, _ = await container_report(kube, name, container)
    return env


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs[key] = value
    return pairs


def visible_devices(env: dict[str, str]) -> list[str]:
    return [d for d in env.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if d]


def allocation_of(pod: JsonDict) -> Allocation:
    parsed = parse_allocation(meta(pod)["annotations"][ANNOTATION_ALLOCATION])
    assert isinstance(parsed, Allocation), parsed
    return parsed


def layout_instances(layouts: list[JsonDict]) -> dict[str, JsonDict]:
    """MIG UUID -> its `status.instances[]` entry plus its GPU's `gpuIndex`."""
    return {
        i["uuid"]: {**i, "gpuIndex": layout["spec"]["gpuIndex"]}
        for layout in layouts
        for i in (layout.get("status") or {}).get("instances") or []
        if i.get("uuid")
    }
