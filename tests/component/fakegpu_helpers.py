"""Helpers shared by the fake-GPU component tests: readable layouts, specs, a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from migweaver.agent.backends.fake import FakeBackend
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement, ProfileTable
from migweaver.core.resources.models import MigLayoutSpec


def placed(table: ProfileTable, *items: str) -> tuple[PlacedInstance, ...]:
    """`"3g.40gb@4"` -> that profile at the placement starting at slot 4 (sorted)."""
    result = []
    for item in items:
        name, start = item.split("@")
        profile = table.get(name)
        size = profile.memory_slices if profile is not None else 1
        result.append(PlacedInstance(name, Placement(int(start), size)))
    return tuple(sorted(result))


def spec_for(
    backend: FakeBackend, gpu: int, *items: str, mig_enabled: bool = True
) -> MigLayoutSpec:
    """A MigLayout spec for a fake GPU with these instances (`"2g.20gb@0"`, ...)."""
    return spec_of(backend, gpu, placed(backend.table(gpu), *items), mig_enabled=mig_enabled)


def spec_of(
    backend: FakeBackend,
    gpu: int,
    instances: tuple[PlacedInstance, ...] | list[PlacedInstance],
    *,
    mig_enabled: bool = True,
) -> MigLayoutSpec:
    return MigLayoutSpec.model_validate(
        {
            "nodeName": "node-a",
            "gpuIndex": gpu,
            "gpuUUID": backend.uuid(gpu),
            "migEnabled": mig_enabled,
            "instances": [
                {
                    "profile": i.profile,
                    "placement": {"start": i.placement.start, "size": i.placement.size},
                }
                for i in instances
            ],
        }
    )


def build(backend: FakeBackend, gpu: int, *items: str, compute: bool = True) -> dict[str, int]:
    """Create instances directly on the fake (test set-up); returns `item -> GI id`.

    The call log is cleared afterwards, so tests see only the calls of the code under test.
    """
    table = backend.table(gpu)
    ids: dict[str, int] = {}
    for item in items:
        (inst,) = placed(table, item)
        profile = table.get(inst.profile)
        assert profile is not None
        gi_id = backend.create_gpu_instance(gpu, profile.profile_id, inst.placement)
        if compute:
            backend.create_compute_instance(gpu, gi_id)
        ids[item] = gi_id
    backend.calls.clear()
    return ids


def uuid_at(backend: FakeBackend, gpu: int, start: int, size: int) -> str:
    return backend.mig_uuids(gpu)[Placement(start, size)]


@dataclass
class FakeClock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
