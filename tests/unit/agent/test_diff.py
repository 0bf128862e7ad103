"""The pure layout diff: which steps take a GPU from what it has to what its spec wants."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.agent.diff import (
    ActualInstance,
    ActualState,
    BlockReason,
    CreateComputeInstance,
    CreateGpuInstance,
    DesiredLayout,
    DestroyComputeInstance,
    DestroyGpuInstance,
    LayoutDiff,
    SetMigMode,
    Step,
    diff_layout,
)
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, layout_problems, valid_layouts
from migweaver.core.mig.profiles import Placement, ProfileTable
from migweaver.core.resources.models import MigLayoutSpec

A100 = "A100-SXM4-80GB"


def table(key: str = A100) -> ProfileTable:
    model = get_model(key)
    assert model is not None
    return model.table


def inst(item: str, key: str = A100) -> PlacedInstance:
    """`"3g.40gb@4"` -> the instance of that profile at the placement starting at slot 4."""
    name, start = item.split("@")
    profile = table(key).get(name)
    size = profile.memory_slices if profile is not None else 1
    return PlacedInstance(name, Placement(int(start), size))


def want(*items: str, mig: bool = True) -> DesiredLayout:
    return DesiredLayout(mig, tuple(inst(i) for i in items))


def have(
    item: str, gi: int, *, ci: bool = True, pids: tuple[int, ...] = (), pod: str | None = None
) -> ActualInstance:
    placed = inst(item)
    uuid = f"MIG-{gi}" if ci else None
    return ActualInstance(placed.profile, placed.placement, gi, (0,) if ci else (), uuid, pids, pod)


def state(
    *instances: ActualInstance, mig: bool = True, pending: bool | None = None, **kw: Any
) -> ActualState:
    return ActualState(mig, mig if pending is None else pending, instances, **kw)


def steps(diff: LayoutDiff) -> list[str]:
    """Steps in a short, readable form: `+gi 3g.40gb@4:4`, `+ci 3g.40gb@4:4`, `-ci 2`, ..."""
    out = []
    for step in diff.steps:
        match step:
            case SetMigMode(enabled=enabled):
                out.append(f"mig {'on' if enabled else 'off'}")
            case DestroyComputeInstance(gi_id=gi):
                out.append(f"-ci {gi}")
            case DestroyGpuInstance(gi_id=gi):
                out.append(f"-gi {gi}")
            case CreateGpuInstance(instance=i):
                out.append(f"+gi {i}")
            case CreateComputeInstance(gi_id=gi, instance=i):
                out.append(f"+ci {i}" if gi is None else f"+ci {gi}")
    return out


def reasons(diff: LayoutDiff) -> list[BlockReason]:
    return [b.reason for b in diff.blocked]


# --------------------------------------------------------------------------- table tests

CASES: list[tuple[str, DesiredLayout, ActualState, list[str], list[BlockReason]]] = [
    (
        "create from empty, in placement order",
        want("3g.40gb@4", "2g.20gb@0", "1g.10gb@2"),
        state(),
        [
            "+gi 2g.20gb@0:2",
            "+ci 2g.20gb@0:2",
            "+gi 1g.10gb@2:1",
            "+ci 1g.10gb@2:1",
            "+gi 3g.40gb@4:4",
            "+ci 3g.40gb@4:4",
        ],
        [],
    ),
    (
        "matching instances are kept whatever their GI ids",
        want("3g.40gb@0", "3g.40gb@4"),
        state(have("3g.40gb@4", 1), have("3g.40gb@0", 7)),
        [],
        [],
    ),
    (
        "an older driver's profile name matches",
        DesiredLayout(True, (PlacedInstance("3g.39gb", Placement(4, 4)),)),
        state(have("3g.40gb@4", 2)),
        [],
        [],
    ),
    (
        "same placement, other profile: destroyed and re-created",
        want("4g.40gb@0"),
        state(have("3g.40gb@0", 3)),
        ["-ci 3", "-gi 3", "+gi 4g.40gb@0:4", "+ci 4g.40gb@0:4"],
        [],
    ),
    (
        "extra idle instances are destroyed, compute instance first, before creates",
        want("2g.20gb@0", "1g.10gb@2", "1g.10gb@3"),
        state(have("3g.40gb@0", 1), have("3g.40gb@4", 2)),
        [
            "-ci 1",
            "-gi 1",
            "-ci 2",
            "-gi 2",
            "+gi 2g.20gb@0:2",
            "+ci 2g.20gb@0:2",
            "+gi 1g.10gb@2:1",
            "+ci 1g.10gb@2:1",
            "+gi 1g.10gb@3:1",
            "+ci 1g.10gb@3:1",
        ],
        [],
    ),
    (
        "a busy instance the spec drops is kept (process)",
        want(),
        state(have("3g.40gb@4", 1, pids=(42,)), have("1g.10gb@0", 2)),
        ["-ci 2", "-gi 2"],
        [BlockReason.IN_USE],
    ),
    (
        "a busy instance the spec drops is kept (pod)",
        want("1g.10gb@0"),
        state(have("3g.40gb@4", 1, pod="default/train-1")),
        ["+gi 1g.10gb@0:1", "+ci 1g.10gb@0:1"],
        [BlockReason.IN_USE],
    ),
    (
        "partial repartition around a busy 3g at start 4",
        want("3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3"),
        state(have("3g.40gb@4", 1, pids=(42,)), have("3g.40gb@0", 2)),
        [
            "-ci 2",
            "-gi 2",
            "+gi 2g.20gb@0:2",
            "+ci 2g.20gb@0:2",
            "+gi 1g.10gb@2:1",
            "+ci 1g.10gb@2:1",
            "+gi 1g.10gb@3:1",
            "+ci 1g.10gb@3:1",
        ],
        [],
    ),
    (
        "an orphan GI the spec wants is completed",
        want("3g.40gb@4", "2g.20gb@0"),
        state(have("3g.40gb@4", 5, ci=False)),
        ["+gi 2g.20gb@0:2", "+ci 2g.20gb@0:2", "+ci 5"],
        [],
    ),
    (
        "an orphan GI the spec does not want is destroyed (no CI to destroy)",
        want(),
        state(have("3g.40gb@4", 5, ci=False)),
        ["-gi 5"],
        [],
    ),
    (
        "a spec instance overlapping a busy one is blocked, the rest goes ahead",
        want("3g.40gb@4", "2g.20gb@0"),
        state(have("2g.20gb@4", 3, pod="default/train-1")),
        ["+gi 2g.20gb@0:2", "+ci 2g.20gb@0:2"],
        [BlockReason.IN_USE, BlockReason.INSTANCE_BLOCKED],
    ),
    (
        "the busy +me instance uses up the GPU's only +me",
        want("1g.10gb+me@1"),
        state(have("1g.10gb+me@0", 3, pids=(7,))),
        [],
        [BlockReason.IN_USE, BlockReason.INSTANCE_BLOCKED],
    ),
    (
        "an invalid spec changes nothing, even idle extras stay",
        want("3g.40gb@0", "3g.40gb@4", "1g.10gb@6"),
        state(have("7g.80gb@0", 1)),
        [],
        [BlockReason.INVALID_SPEC],
    ),
    (
        "a disallowed placement is an invalid spec",
        want("3g.40gb@2"),
        state(),
        [],
        [BlockReason.INVALID_SPEC],
    ),
    (
        "a spec with MIG off and instances is invalid",
        DesiredLayout(False, (inst("1g.10gb@0"),)),
        state(mig=False),
        [],
        [BlockReason.INVALID_SPEC],
    ),
    (
        "enable MIG on an idle GPU, then create",
        want("7g.80gb@0"),
        state(mig=False),
        ["mig on", "+gi 7g.80gb@0:8", "+ci 7g.80gb@0:8"],
        [],
    ),
    (
        "enable MIG waits while a process runs on the GPU",
        want("7g.80gb@0"),
        state(mig=False, gpu_pids=(99,)),
        [],
        [BlockReason.MIG_MODE_PENDING],
    ),
    (
        "enable MIG waits while a pod holds the whole GPU",
        want(),
        state(mig=False, pending=True, gpu_pod="default/shared"),
        [],
        [BlockReason.MIG_MODE_PENDING],
    ),
    (
        "disable MIG on an idle GPU: instances first, then the mode",
        want(mig=False),
        state(have("3g.40gb@0", 1), have("3g.40gb@4", 2)),
        ["-ci 1", "-gi 1", "-ci 2", "-gi 2", "mig off"],
        [],
    ),
    (
        "disable MIG with a busy instance: idle ones go, the mode waits",
        want(mig=False),
        state(have("3g.40gb@0", 1, pids=(5,)), have("3g.40gb@4", 2)),
        ["-ci 2", "-gi 2"],
        [BlockReason.IN_USE, BlockReason.MIG_MODE_PENDING],
    ),
    (
        "a pending switch away from the spec is withdrawn, even on a busy GPU",
        want("3g.40gb@0"),
        state(have("3g.40gb@0", 1, pids=(5,)), pending=False),
        ["mig on"],
        [],
    ),
    (
        "MIG off as wanted: nothing to do",
        want(mig=False),
        state(mig=False, gpu_pids=(5,)),
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("desired", "actual", "expected_steps", "expected_blocked"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_diff(
    desired: DesiredLayout,
    actual: ActualState,
    expected_steps: list[str],
    expected_blocked: list[BlockReason],
) -> None:
    diff = diff_layout(desired, actual, table())
    assert steps(diff) == expected_steps
    assert reasons(diff) == expected_blocked
    assert diff.converged == (not expected_steps and not expected_blocked)


def test_enabling_mig_without_a_profile_table_asks_only_for_the_mode() -> None:
    empty = ProfileTable(memory_slots=0, profiles=())
    diff = diff_layout(want("7g.80gb@0"), state(mig=False), empty)
    assert steps(diff) == ["mig on"]


def test_blocked_messages_name_the_instances_and_who_holds_them() -> None:
    diff = diff_layout(
        want("3g.40gb@4"),
        state(have("2g.20gb@4", 3, pod="default/train-1", pids=(4242,))),
        table(),
    )
    kept, blocked = diff.blocked
    assert kept.message == (
        "2g.20gb at 4:2 is in use, held by default/train-1, used by process 4242: "
        "kept although the spec drops it"
    )
    assert kept.instance == inst("2g.20gb@4")
    assert blocked.message == (
        "cannot create 3g.40gb at 4:4: overlaps busy 2g.20gb at 4:2 "
        "held by default/train-1, used by process 4242"
    )
    assert blocked.instance == inst("3g.40gb@4")


def test_invalid_spec_messages_come_from_the_geometry() -> None:
    diff = diff_layout(want("3g.40gb@0", "2g.20gb@2"), state(), table())
    (problem,) = diff.blocked
    assert problem.instance == inst("2g.20gb@2")
    assert "overlaps" in problem.message
    assert problem.message.startswith("invalid spec: ")


def test_mode_wait_message_says_what_keeps_the_gpu_busy() -> None:
    diff = diff_layout(want(mig=False), state(have("3g.40gb@0", 1, pids=(5,))), table())
    assert diff.blocked[-1].message == (
        "MIG mode Disabled waits for the GPU to be idle (3g.40gb at 0:4 used by process 5)"
    )


def test_steps_use_nvml_profile_ids_and_names() -> None:
    diff = diff_layout(
        DesiredLayout(True, (PlacedInstance("3G.39GB", Placement(4, 4)),)), state(), table()
    )
    create = diff.steps[0]
    assert isinstance(create, CreateGpuInstance)
    assert (create.profile_id, create.instance.profile, create.placement) == (
        9,
        "3g.40gb",
        Placement(4, 4),
    )


def test_desired_layout_from_a_spec() -> None:
    spec = MigLayoutSpec.model_validate(
        {
            "nodeName": "n",
            "gpuIndex": 0,
            "gpuUUID": "GPU-1",
            "instances": [{"profile": "3g.40gb", "placement": {"start": 4, "size": 4}}],
        }
    )
    assert DesiredLayout.from_spec(spec) == want("3g.40gb@4")


def test_the_diff_does_not_depend_on_the_order_things_are_listed() -> None:
    desired = want("3g.40gb@4", "2g.20gb@0", "1g.10gb@2", "1g.10gb@3")
    actual = [have("3g.40gb@0", 1), have("1g.10gb@4", 2, pids=(1,)), have("1g.10gb@6", 3)]
    expected = diff_layout(desired, state(*actual), table())
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(actual)
        shuffled = DesiredLayout(True, tuple(rng.sample(desired.instances, 4)))
        assert diff_layout(shuffled, state(*actual), table()) == expected


# ------------------------------------------------------------------------------ property

LAYOUTS = {key: valid_layouts(table(key), True) for key in (A100, "A30-24GB")}


def _apply(step: Step, instances: list[ActualInstance], next_gi: list[int]) -> None:
    """A tiny pure executor with NVML's preconditions, to run a diff's steps."""
    match step:
        case DestroyComputeInstance(gi_id=gi):
            (target,) = [i for i in instances if i.gi_id == gi]
            assert not target.busy, f"destroys busy {target}"
            instances[instances.index(target)] = replace(target, ci_ids=(), uuid=None)
        case DestroyGpuInstance(gi_id=gi):
            (target,) = [i for i in instances if i.gi_id == gi]
            assert not target.busy, f"destroys busy {target}"
            assert not target.ci_ids, "GI destroyed before its CI"
            instances.remove(target)
        case CreateGpuInstance(instance=want_):
            instances.append(ActualInstance(want_.profile, want_.placement, next_gi[0]))
            next_gi[0] += 1
        case CreateComputeInstance(gi_id=gi):
            target = instances[-1] if gi is None else next(i for i in instances if i.gi_id == gi)
            instances[instances.index(target)] = replace(target, ci_ids=(0,))
        case SetMigMode():
            pass


@settings(max_examples=300, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(LAYOUTS)))
def test_executing_the_steps_keeps_busy_instances_and_every_layout_valid(
    data: st.DataObject, key: str
) -> None:
    gpu = table(key)
    desired = data.draw(st.sampled_from(LAYOUTS[key]), label="desired")
    current = data.draw(st.sampled_from(LAYOUTS[key]), label="actual")
    busy = data.draw(st.lists(st.booleans(), min_size=len(current), max_size=len(current)))
    actual = [
        ActualInstance(i.profile, i.placement, gi, (0,), None, (gi,) if b else ())
        for gi, (i, b) in enumerate(zip(current, busy, strict=True), start=1)
    ]
    diff = diff_layout(DesiredLayout(True, desired), state(*actual), gpu)
    instances = list(actual)
    next_gi = [100]
    for step in diff.steps:
        _apply(step, instances, next_gi)
        assert not layout_problems(gpu, [i.placed for i in instances]), step
    result = sorted(i.placed for i in instances)
    kept_busy = {i.placed for i in actual if i.busy}
    assert kept_busy <= set(result)
    blocked = {b.instance for b in diff.blocked if b.reason is BlockReason.INSTANCE_BLOCKED}
    # Everything wanted exists unless blocked; nothing unwanted exists unless busy.
    assert set(desired) - blocked <= set(result)
    assert set(result) <= set(desired) | kept_busy
    assert all(i.ci_ids for i in instances)
    if not any(busy):
        assert result == sorted(desired)
        assert not diff.blocked
        # Converged: diffing again finds nothing to do.
        again = state(*[replace(i, ci_ids=(0,)) for i in instances])
        assert diff_layout(DesiredLayout(True, desired), again, gpu).converged
