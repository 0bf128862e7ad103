"""Small simulation scenarios for the component tests (text builders)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "manifests" / "device-config.yaml"


def pod_group(
    name: str,
    memory: int,
    *,
    at: str = "0",
    every: str = "0",
    count: int = 1,
    duration: str = "1h",
    mode: str | None = None,
    gpus: int | None = None,
    cores: int | None = None,
) -> str:
    """One entry of `pods:` (YAML accepts the JSON written here)."""
    limits: dict[str, int] = {"nvidia.com/gpumem": memory}
    if gpus is not None:
        limits["nvidia.com/gpu"] = gpus
    if cores is not None:
        limits["nvidia.com/gpucores"] = cores
    metadata: dict[str, object] = {"name": name}
    if mode is not None:
        metadata["annotations"] = {"nvidia.com/vgpu-mode": mode}
    group = {
        "at": at,
        "every": every,
        "count": count,
        "duration": duration,
        "pod": {
            "metadata": metadata,
            "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
        },
    }
    return f"- {json.dumps(group)}\n"


def scenario(
    nodes: str, pods: str, *, end: str | None = None, config: bool = True, name: str = "test"
) -> str:
    lines = [f"name: {name}"]
    if config:
        lines.append(f"deviceConfig: {SHIPPED_CONFIG.as_posix()}")
    if end is not None:
        lines.append(f"end: {end}")
    lines += ["nodes:", nodes.rstrip(), "pods:", pods.rstrip()]
    return "\n".join(lines) + "\n"


def mig_node(name: str = "node", gpus: int = 2, model: str = "A100-SXM4-80GB") -> str:
    return f"- {{name: {name}, mode: mig, gpus: [{{model: {model}, count: {gpus}}}]}}\n"


def hami_node(name: str = "shared", gpus: int = 1, model: str = "A100-SXM4-80GB") -> str:
    return f"- {{name: {name}, mode: hami-core, gpus: [{{model: {model}, count: {gpus}}}]}}\n"


# HAMi gives the free half of a GPU in the 3g x2 template to the first small pod that
# comes (first free entry that serves), so the next half-GPU pods find no room; migweaver
# puts the small pods on a GPU of small instances and keeps the halves for half-GPU pods.
DIFFERENCE = scenario(
    mig_node(gpus=2),
    pod_group("half-a", 30000, duration="2h")
    + pod_group("small-a", 8000, at="1m", duration="2h")
    + pod_group("half-b", 30000, at="2m", count=2, every="1m", duration="2h")
    + pod_group("small-b", 8000, at="5m", count=3, every="1m", duration="2h"),
    end="1h",
    name="difference",
)
