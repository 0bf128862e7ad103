"""The virtual devices the plugin lists to the kubelet, and their health. Pure.

The kubelet counts `nvidia.com/gpu` in device ids and admits a pod only while enough
healthy ids are free; which ids it picks means nothing to migweaver (the pod's allocation
annotation names the real devices). So the list only has to be large enough never to be
the limit:

- a GPU in MIG mode lists one id per possible instance: its compute slice count (7 on
  A100/H100/H200/B200, 4 on A30), the most MIG instances it can hold at once;
- a hami-core GPU lists `deviceSplitCount` ids (HAMi's setting, default 10): the most
  pods that may share it.

Ids are `<GPU UUID>::<n>` (at most 44 characters; the kubelet allows 63). A GPU's ids are
`Unhealthy` while the agent cannot read it or its MigLayout is `Failed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_SPLIT_COUNT",
    "HEALTHY",
    "UNHEALTHY",
    "DeviceEntry",
    "PluginGpu",
    "device_id",
    "device_list",
    "gpu_of_device",
]

HEALTHY: Final = "Healthy"
UNHEALTHY: Final = "Unhealthy"
DEFAULT_SPLIT_COUNT: Final = 10
"""HAMi's default `deviceSplitCount`."""
_SEPARATOR: Final = "::"


@dataclass(frozen=True, slots=True)
class PluginGpu:
    """A managed GPU as the device plugin lists it."""

    uuid: str
    index: int
    mig: bool
    slots: int
    """Ids to list: compute slices (MIG) or the split count (hami-core)."""
    healthy: bool


@dataclass(frozen=True, slots=True, order=True)
class DeviceEntry:
    id: str
    health: str


def device_id(gpu_uuid: str, n: int) -> str:
    return f"{gpu_uuid}{_SEPARATOR}{n}"


def gpu_of_device(device: str) -> str | None:
    """The GPU UUID of a device id, None when it is not one of ours."""
    uuid, sep, n = device.rpartition(_SEPARATOR)
    return uuid if sep and uuid and n.isdigit() else None


def device_list(gpus: Iterable[PluginGpu]) -> tuple[DeviceEntry, ...]:
    """Every id of every GPU, by GPU index then number."""
    return tuple(
        DeviceEntry(device_id(gpu.uuid, n), HEALTHY if gpu.healthy else UNHEALTHY)
        for gpu in sorted(gpus, key=lambda g: g.index)
        for n in range(max(gpu.slots, 0))
    )
