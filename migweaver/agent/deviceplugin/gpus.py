"""What the device plugin needs of the node agent, and the adapter that provides it.

The plugin lists devices from the agent's latest observations and MigLayout phases (no
NVML call of its own), and verifies an allocation with a fresh reading through the
agent's one GPU thread, so NVML is never called from two threads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final, Protocol

from migweaver.agent.backends.protocol import BackendError, GpuDevice
from migweaver.agent.deviceplugin.devices import DEFAULT_SPLIT_COUNT, PluginGpu
from migweaver.agent.node_agent import NodeAgent
from migweaver.agent.reconciler import GpuObservation
from migweaver.core.agent.binding import ObservedGpu, ObservedInstance
from migweaver.core.mig.catalog import match_model
from migweaver.core.resources.models import layout_name

__all__ = ["AgentGpus", "GpuReadError", "GpuView", "observed_gpu"]

# A layout in these phases makes its GPU's devices Unhealthy ("Invalid" is the agent's
# own mark for a spec that does not parse; its status phase is Failed).
_UNHEALTHY_PHASES: Final = frozenset({"Failed", "Invalid"})
# The most MIG instances of every supported model but the A30 (docs/mig-reference.md section 2).
_DEFAULT_COMPUTE_SLICES: Final = 7


class GpuReadError(Exception):
    """A GPU could not be read to verify an allocation."""


class GpuView(Protocol):
    def plugin_gpus(self) -> list[PluginGpu]:
        """The managed GPUs, their mode, id count and health, from what is known now."""
        ...

    async def observe(self, gpu_uuids: Collection[str]) -> dict[str, ObservedGpu]:
        """Fresh readings of these GPUs (unmanaged ones are left out); GpuReadError."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever what `plugin_gpus` returns may have changed."""
        ...


def observed_gpu(observation: GpuObservation) -> ObservedGpu:
    """The part of an observation the Allocate decision checks."""
    return ObservedGpu(
        uuid=observation.device.uuid,
        index=observation.device.index,
        mig_enabled=observation.mig_mode.current,
        instances=tuple(
            ObservedInstance(i.uuid, i.profile, i.placement, i.pids)
            for i in observation.instances
            if i.uuid is not None
        ),
    )


class AgentGpus:
    """`GpuView` over a running `NodeAgent`."""

    def __init__(self, agent: NodeAgent, split_count: int = DEFAULT_SPLIT_COUNT) -> None:
        if split_count < 1:
            raise ValueError(f"deviceSplitCount must be at least 1, got {split_count}")
        self._agent = agent
        self._split_count = split_count

    def plugin_gpus(self) -> list[PluginGpu]:
        return [self._plugin_gpu(d) for d in self._agent.managed_devices()]

    def _plugin_gpu(self, device: GpuDevice) -> PluginGpu:
        observation = self._agent.state.observations.get(device.index)
        phase = self._agent.state.phases.get(layout_name(self._agent.node, device.index))
        mig = observation is not None and observation.mig_mode.current
        slots = _compute_slices(device, observation) if mig else self._split_count
        healthy = observation is not None and phase not in _UNHEALTHY_PHASES
        return PluginGpu(device.uuid, device.index, mig, slots, healthy)

    async def observe(self, gpu_uuids: Collection[str]) -> dict[str, ObservedGpu]:
        result: dict[str, ObservedGpu] = {}
        for device in self._agent.managed_devices():
            if device.uuid not in gpu_uuids:
                continue
            try:
                observation = await self._agent.observe(device.index)
            except BackendError as exc:
                message = f"cannot read GPU {device.index} ({device.uuid}): {exc}"
                raise GpuReadError(message) from exc
            except RuntimeError as exc:  # the GPU thread is gone: the agent is stopping
                raise GpuReadError(f"the agent is stopping: {exc}") from exc
            result[device.uuid] = observed_gpu(observation)
        return result

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._agent.listeners.append(callback)


def _compute_slices(device: GpuDevice, observation: GpuObservation | None) -> int:
    """The most MIG instances the GPU can hold: its largest profile's compute slices."""
    table = observation.table if observation is not None else None
    if table is None or not table.profiles:
        model = match_model(device.name, device.pci_device_id)
        table = model.table if model is not None else None
    if table is None or not table.profiles:
        return _DEFAULT_COMPUTE_SLICES
    return max(p.compute_slices for p in table.profiles)
