"""What the agent's metrics decide: instance states and mode switches."""

from __future__ import annotations

import pytest

from migweaver.core.agent.diff import ActualInstance, CreateGpuInstance, SetMigMode
from migweaver.core.agent.metric_rows import (
    StateCount,
    instance_state,
    instance_states,
    mode_switches,
)
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import Placement

A100 = get_model("A100-SXM4-80GB")
assert A100 is not None


def inst(
    profile: str, start: int, *, pids: tuple[int, ...] = (), pod: str | None = None
) -> ActualInstance:
    return ActualInstance(
        profile, Placement(start, 1), gi_id=start + 1, ci_ids=(0,), pids=pids, pod=pod
    )


@pytest.mark.parametrize(
    ("instance", "state"),
    [
        pytest.param(inst("1g.10gb", 0), "free", id="nothing-holds-it"),
        pytest.param(inst("1g.10gb", 0, pod="ns/a"), "reserved", id="a-pod-holds-it-no-process"),
        pytest.param(inst("1g.10gb", 0, pids=(42,)), "in_use", id="a-process-runs"),
        pytest.param(inst("1g.10gb", 0, pids=(42,), pod="ns/a"), "in_use", id="pod-and-process"),
    ],
)
def test_instance_state(instance: ActualInstance, state: str) -> None:
    assert instance_state(instance) == state


def test_every_state_of_every_profile_is_listed_with_zeros() -> None:
    rows = instance_states(
        [inst("1g.10gb", 0), inst("1g.10gb", 1, pod="ns/a"), inst("2g.20gb", 2, pids=(7,))]
    )
    assert rows == (
        StateCount("1g.10gb", "free", 1),
        StateCount("1g.10gb", "reserved", 1),
        StateCount("1g.10gb", "in_use", 0),
        StateCount("2g.20gb", "free", 0),
        StateCount("2g.20gb", "reserved", 0),
        StateCount("2g.20gb", "in_use", 1),
    )


def test_a_gpu_without_instances_has_no_rows() -> None:
    assert instance_states([]) == ()


def test_mode_switches_are_the_set_mig_mode_steps() -> None:
    steps = [
        SetMigMode(enabled=True),
        CreateGpuInstance(19, PlacedInstance("1g.10gb", Placement(0, 1))),
    ]
    assert mode_switches(steps) == (True,)
    assert mode_switches([]) == ()
