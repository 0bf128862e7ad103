"""The CDI spec of the devices an agent serves: pure, from what it observed and the MIG minors.

A CDI (Container Device Interface) spec names devices (`<kind>=<name>`) and the edits a
container runtime makes to give a container one of them. The agent writes one spec of
kind `nvidia.com/gpu` whose device names are the UUIDs `Allocate` hands out (`GPU-...`
for a whole GPU, `MIG-...` for a MIG instance), so a new instance is usable the moment it
exists, without anyone running `nvidia-ctk cdi generate`.

Device nodes, as NVIDIA's container toolkit finds them:

- a GPU: `/dev/nvidia<minor>` (its device minor, not always its NVML index);
- a MIG instance: its parent GPU's node, plus two capability nodes
  `/dev/nvidia-caps/nvidia-cap<m>` whose minors `m` the driver lists in
  `/proc/driver/nvidia-caps/mig-minors` as `gpu<minor>/gi<GI id>/access <m>` and
  `gpu<minor>/gi<GI id>/ci<CI id>/access <m>`;
- every device: the control nodes `/dev/nvidiactl`, `/dev/nvidia-uvm`,
  `/dev/nvidia-uvm-tools` (the spec's common edits).

The driver libraries are not in this spec: the NVIDIA container runtime (or a spec of
its own, with other device names) provides them (docs/agent.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CDI_VERSION",
    "CONTROL_NODES",
    "KIND",
    "CdiGpu",
    "CdiInstance",
    "CdiPlan",
    "cdi_spec",
    "parse_mig_minors",
]

KIND: Final = "nvidia.com/gpu"
CDI_VERSION: Final = "0.5.0"
"""Device nodes by path alone need nothing newer; containerd >= 1.7 and CRI-O read it."""
CONTROL_NODES: Final = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")

_CAP_LINE: Final = re.compile(r"^(config|monitor|gpu\d+/gi\d+/access|gpu\d+/gi\d+/ci\d+/access)$")


@dataclass(frozen=True, slots=True)
class CdiInstance:
    """A MIG instance with a compute instance: its UUID and GI / CI ids."""

    uuid: str
    gi_id: int
    ci_id: int


@dataclass(frozen=True, slots=True)
class CdiGpu:
    """A GPU the agent serves: UUID, device minor, and its MIG instances (if any)."""

    uuid: str
    minor: int
    instances: tuple[CdiInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class CdiPlan:
    """The spec to write and what could not go into it (one line each, for the log)."""

    spec: dict[str, Any]
    problems: tuple[str, ...] = ()

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(str(d["name"]) for d in self.spec["devices"])


def parse_mig_minors(text: str) -> dict[str, int]:
    """`/proc/driver/nvidia-caps/mig-minors` as {capability: minor}; bad lines are skipped.

    Each line is `<capability> <minor>`, e.g. `gpu0/gi3/ci0/access 28`.
    """
    minors: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not _CAP_LINE.match(parts[0]) or not parts[1].isdigit():
            continue
        minors[parts[0]] = int(parts[1])
    return minors


def _cap_node(minor: int) -> dict[str, Any]:
    return {"path": f"/dev/nvidia-caps/nvidia-cap{minor}"}


def cdi_spec(
    gpus: Sequence[CdiGpu],
    minors: Mapping[str, int],
    *,
    present: frozenset[str] | None = None,
) -> CdiPlan:
    """The spec for these GPUs and their instances.

    `present` is the set of device node paths that exist (None: assume all do). A MIG
    instance whose capability minors are not listed, or any device whose nodes are
    missing, is left out with a problem line: a spec naming a node that does not exist
    would make the runtime fail every container that asks for the device.
    """
    problems: list[str] = []
    devices: list[dict[str, Any]] = []

    def exists(path: str) -> bool:
        return present is None or path in present

    for gpu in sorted(gpus, key=lambda g: g.minor):
        gpu_node = f"/dev/nvidia{gpu.minor}"
        if not exists(gpu_node):
            problems.append(
                f"{gpu.uuid}: {gpu_node} does not exist; GPU and its instances left out"
            )
            continue
        devices.append({"name": gpu.uuid, "containerEdits": {"deviceNodes": [{"path": gpu_node}]}})
        for instance in sorted(gpu.instances, key=lambda i: (i.gi_id, i.ci_id)):
            gi_cap = f"gpu{gpu.minor}/gi{instance.gi_id}/access"
            ci_cap = f"gpu{gpu.minor}/gi{instance.gi_id}/ci{instance.ci_id}/access"
            missing = [cap for cap in (gi_cap, ci_cap) if cap not in minors]
            if missing:
                problems.append(f"{instance.uuid}: no MIG minor for {', '.join(missing)}; left out")
                continue
            nodes = [{"path": gpu_node}, _cap_node(minors[gi_cap]), _cap_node(minors[ci_cap])]
            absent = [n["path"] for n in nodes if not exists(str(n["path"]))]
            if absent:
                problems.append(f"{instance.uuid}: {', '.join(absent)} missing; left out")
                continue
            devices.append({"name": instance.uuid, "containerEdits": {"deviceNodes": nodes}})
    control = [{"path": path} for path in CONTROL_NODES if exists(path)]
    problems.extend(f"{path} does not exist" for path in CONTROL_NODES if not exists(path))
    spec: dict[str, Any] = {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices}
    if control:
        spec["containerEdits"] = {"deviceNodes": control}
    return CdiPlan(spec, tuple(problems))
