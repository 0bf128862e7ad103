"""What one simulation run produced: per pod, over time, and the NVML work done."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DeviceUse", "PodOutcome", "Sample", "SimResult"]


@dataclass(frozen=True, slots=True)
class DeviceUse:
    """One device a pod ran on: a MIG instance (profile, placement) or a hami-core share."""

    gpu: str
    """`node/gpuN`."""
    mode: str
    profile: str | None
    start_slot: int | None
    slots: int | None
    memory_mib: int
    """What the pod got: the instance's MiB, or the share."""
    requested_mib: int
    compute: float
    """Fraction of the GPU's compute: the instance's slices of the GPU's, or cores / 100."""


@dataclass(slots=True)
class PodOutcome:
    """One pod's life in the simulation (times in seconds from t=0)."""

    key: str
    arrival: float
    duration: float
    started: float | None = None
    ended: float | None = None
    node: str | None = None
    devices: tuple[DeviceUse, ...] = ()
    code: str | None = None
    """Why it still waits (the last plan's `Unplaceable.code`), None once placed."""
    reason: str | None = None

    @property
    def placed(self) -> bool:
        return self.started is not None

    @property
    def waited(self) -> float | None:
        """Seconds from arrival to start (None when never started)."""
        return None if self.started is None else self.started - self.arrival


@dataclass(frozen=True, slots=True)
class Sample:
    """The fleet at one instant (after everything that happened at that time)."""

    time: float
    running: int
    pending: int
    memory_allocated: float
    """Fraction of all GPU memory held by running pods' devices (instances or shares)."""
    memory_requested: float
    """Fraction of all GPU memory the running pods asked for."""
    compute: float
    """Fraction of all GPU compute held by running pods."""


@dataclass(slots=True)
class SimResult:
    """The outcome of `run_simulation`."""

    scenario: str
    policy: str
    horizon: float
    """The simulated time span (seconds)."""
    gpus: tuple[str, ...]
    """`node/gpuN` of every GPU, in node and index order."""
    gpu_memory: dict[str, int]
    """Whole-GPU MiB by `node/gpuN`."""
    pods: list[PodOutcome]
    samples: list[Sample]
    plans: int = 0
    reconfigurations: int = 0
    instances_created: int = 0
    instances_destroyed: int = 0
    mode_switches: int = 0
    failures: list[str] = field(default_factory=list)
    start_failures: int = 0
    """Pods placed by a plan whose devices did not exist after the agent's pass."""
