"""Layout validity, free placements, fitting and enumeration (docs/mig-reference.md section 2)."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import (
    PlacedInstance,
    ProblemKind,
    can_add,
    fit_profiles,
    free_placements,
    is_valid_layout,
    layout_problems,
    maximal_combinations,
    maximal_layouts,
)
from migweaver.core.mig.profiles import Placement, ProfileTable


def table(key: str) -> ProfileTable:
    model = get_model(key)
    assert model is not None
    return model.table


def layout(key: str, *items: str) -> list[PlacedInstance]:
    """`"3g.40gb@0"` -> that profile of the model at the placement starting at slot 0."""
    result = []
    for item in items:
        name, start = item.split("@")
        profile = table(key).get(name)
        size = profile.memory_slices if profile is not None else 1
        result.append(PlacedInstance(name, Placement(int(start), size)))
    return result


# ---------------------------------------------------------------- validity (table tests)

VALIDITY_CASES = [
    ("A100-SXM4-40GB", ["3g.20gb@0", "3g.20gb@4"], True),
    ("A100-SXM4-40GB", ["4g.20gb@0", "3g.20gb@4"], True),
    ("A100-SXM4-40GB", ["7g.40gb@0"], True),
    ("A100-SXM4-40GB", ["2g.10gb@0", "2g.10gb@2", "2g.10gb@4", "1g.5gb@6"], True),
    ("A100-SXM4-40GB", ["3g.20gb@0", "2g.10gb@4", "1g.5gb@6"], True),
    ("A100-SXM4-80GB", ["1g.20gb@0", "1g.20gb@2", "1g.20gb@4", "1g.20gb@6"], True),
    ("A100-SXM4-80GB", ["1g.10gb@0", "1g.10gb+me@1", "3g.40gb@4"], True),
    ("H100-SXM5-80GB", ["4g.40gb@0", "2g.20gb@4", "1g.10gb@6"], True),
    ("A30-24GB", ["2g.12gb@0", "1g.6gb@2", "1g.6gb@3"], True),
    ("A30-24GB", ["1g.6gb@0", "1g.6gb@1", "1g.6gb@2", "1g.6gb@3"], True),
    ("A30-24GB", ["2g.12gb+me@0", "2g.12gb@2"], True),
]
INVALID_CASES = [
    ("A100-SXM4-40GB", ["3g.20gb@0", "3g.20gb@4", "1g.5gb@6"], ProblemKind.OVERLAP),
    ("A100-SXM4-40GB", ["3g.20gb@0", "4g.20gb@0"], ProblemKind.OVERLAP),
    ("A100-SXM4-40GB", ["7g.40gb@0", "1g.5gb@0"], ProblemKind.OVERLAP),
    ("A100-SXM4-80GB", ["4g.40gb@4"], ProblemKind.DISALLOWED_PLACEMENT),
    ("A100-SXM4-80GB", ["1g.10gb@7"], ProblemKind.DISALLOWED_PLACEMENT),
    ("A100-SXM4-80GB", ["2g.20gb@6"], ProblemKind.DISALLOWED_PLACEMENT),
    ("A100-SXM4-80GB", ["1g.10gb+me@0", "1g.10gb+me@1"], ProblemKind.TOO_MANY),
    ("A100-SXM4-80GB", ["9g.99gb@0"], ProblemKind.UNKNOWN_PROFILE),
    ("H100-SXM5-80GB", ["3g.40gb@2"], ProblemKind.DISALLOWED_PLACEMENT),
    ("A30-24GB", ["1g.6gb+me@0", "2g.12gb+me@2"], ProblemKind.MEDIA_EXTENSIONS),
    ("A30-24GB", ["4g.24gb@0", "1g.6gb@3"], ProblemKind.OVERLAP),
]


@pytest.mark.parametrize(
    ("key", "items", "valid"),
    VALIDITY_CASES,
    ids=[f"{k}:{'+'.join(i)}" for k, i, _ in VALIDITY_CASES],
)
def test_valid_layouts_are_accepted(key: str, items: list[str], valid: bool) -> None:
    assert is_valid_layout(table(key), layout(key, *items)) is valid
    assert layout_problems(table(key), layout(key, *items)) == []


@pytest.mark.parametrize(
    ("key", "items", "kind"),
    INVALID_CASES,
    ids=[f"{k}:{'+'.join(i)}" for k, i, _ in INVALID_CASES],
)
def test_invalid_layouts_name_the_problem(key: str, items: list[str], kind: ProblemKind) -> None:
    problems = layout_problems(table(key), layout(key, *items))
    assert not is_valid_layout(table(key), layout(key, *items))
    assert kind in {p.kind for p in problems}
    assert all(p.message for p in problems)


def test_three_3g_never_fit_whatever_the_third_start() -> None:
    a100 = table("A100-SXM4-40GB")
    base = layout("A100-SXM4-40GB", "3g.20gb@0", "3g.20gb@4")
    for start in range(7):
        assert not is_valid_layout(a100, [*base, PlacedInstance("1g.5gb", Placement(start, 1))])


def test_an_unknown_profile_message_lists_the_known_ones() -> None:
    (problem,) = layout_problems(table("A30-24GB"), [PlacedInstance("3g.20gb", Placement(0, 4))])
    assert "3g.20gb" in problem.message
    assert "2g.12gb" in problem.message


# ---------------------------------------------------------------- free placements

FREE_CASES = [
    # An in-use 3g on the low half of an 80GB A100 leaves only the high half.
    ("A100-SXM4-80GB", ["3g.40gb@0"], "1g.10gb", [4, 5, 6]),
    ("A100-SXM4-80GB", ["3g.40gb@0"], "1g.20gb", [4, 6]),
    ("A100-SXM4-80GB", ["3g.40gb@0"], "2g.20gb", [4]),
    ("A100-SXM4-80GB", ["3g.40gb@0"], "3g.40gb", [4]),
    ("A100-SXM4-80GB", ["3g.40gb@0"], "4g.40gb", []),
    ("A100-SXM4-80GB", ["3g.40gb@0"], "7g.80gb", []),
    ("A100-SXM4-80GB", [], "7g.80gb", [0]),
    ("A100-SXM4-80GB", [], "1g.10gb", [0, 1, 2, 3, 4, 5, 6]),
    ("A100-SXM4-40GB", ["3g.20gb@4"], "4g.20gb", [0]),
    ("A100-SXM4-40GB", ["3g.20gb@4"], "3g.20gb", [0]),
    ("A100-SXM4-40GB", ["2g.10gb@0", "2g.10gb@2", "2g.10gb@4"], "2g.10gb", []),
    ("A100-SXM4-40GB", ["2g.10gb@0", "2g.10gb@2", "2g.10gb@4"], "1g.10gb", [6]),
    ("A100-SXM4-40GB", [f"1g.5gb@{s}" for s in range(7)], "1g.5gb", []),
    # A 1g at slot 6 blocks the high 3g and the 7g, nothing in the low half.
    ("H100-SXM5-80GB", ["1g.10gb@6"], "3g.40gb", [0]),
    ("H100-SXM5-80GB", ["1g.10gb@6"], "4g.40gb", [0]),
    ("H100-SXM5-80GB", ["1g.10gb@6"], "7g.80gb", []),
    ("H100-SXM5-80GB", ["1g.10gb@6"], "1g.20gb", [0, 2, 4]),
    ("H100-SXM5-80GB", ["1g.10gb@6"], "2g.20gb", [0, 2, 4]),
    ("H100-SXM5-80GB", ["1g.10gb+me@0"], "1g.10gb+me", []),
    ("H100-SXM5-80GB", ["1g.10gb+me@0"], "1g.10gb", [1, 2, 3, 4, 5, 6]),
    ("A30-24GB", ["2g.12gb@0"], "1g.6gb", [2, 3]),
    ("A30-24GB", ["2g.12gb@0"], "2g.12gb", [2]),
    ("A30-24GB", ["2g.12gb@0"], "4g.24gb", []),
    ("A30-24GB", ["1g.6gb+me@1"], "2g.12gb+me", []),
    ("A30-24GB", ["1g.6gb+me@1"], "2g.12gb", [2]),
    ("A30-24GB", [], "no-such-profile", []),
]


@pytest.mark.parametrize(
    ("key", "items", "profile", "starts"),
    FREE_CASES,
    ids=[f"{k}:{'+'.join(i) or 'empty'}:{p}" for k, i, p, _ in FREE_CASES],
)
def test_free_placements_given_a_partial_layout(
    key: str, items: list[str], profile: str, starts: list[int]
) -> None:
    t = table(key)
    free = free_placements(t, layout(key, *items), profile)
    assert [p.start for p in free] == starts
    for placement in free:
        assert can_add(t, layout(key, *items), profile, placement)
        assert is_valid_layout(t, [*layout(key, *items), PlacedInstance(profile, placement)])


# ---------------------------------------------------------------- fitting and enumeration

FIT_CASES = [
    ("A100-SXM4-40GB", {"3g.20gb": 2}, [], True),
    ("A100-SXM4-40GB", {"3g.20gb": 2, "1g.5gb": 1}, [], False),
    ("A100-SXM4-40GB", {"4g.20gb": 1, "3g.20gb": 1}, [], True),
    ("A100-SXM4-40GB", {"2g.10gb": 3, "1g.5gb": 1}, [], True),
    ("A100-SXM4-40GB", {"1g.5gb": 7}, [], True),
    ("A100-SXM4-40GB", {"1g.5gb": 8}, [], False),
    # Beside a 3g at slot 0 the free half has 3 compute slices and no 1g start at slot 7;
    # beside a 3g at slot 4 it has 4.
    ("A100-SXM4-80GB", {"2g.20gb": 1, "1g.10gb": 1}, ["3g.40gb@0"], True),
    ("A100-SXM4-80GB", {"2g.20gb": 1, "1g.10gb": 2}, ["3g.40gb@0"], False),
    ("A100-SXM4-80GB", {"2g.20gb": 1, "1g.10gb": 2}, ["3g.40gb@4"], True),
    ("A100-SXM4-80GB", {"4g.40gb": 1}, ["3g.40gb@0"], False),
    ("A100-SXM4-80GB", {"3g.40gb": 1, "1g.10gb": 1}, ["1g.10gb@6"], True),
    ("H100-SXM5-80GB", {"7g.80gb": 1}, [], True),
    ("A30-24GB", {"2g.12gb": 1, "1g.6gb": 2}, [], True),
    ("A30-24GB", {"2g.12gb": 2, "1g.6gb": 1}, [], False),
    ("A30-24GB", {"unknown": 1}, [], False),
]


@pytest.mark.parametrize(
    ("key", "counts", "fixed", "fits"),
    FIT_CASES,
    ids=[f"{k}:{c}:{'+'.join(f) or 'empty'}" for k, c, f, _ in FIT_CASES],
)
def test_fit_profiles_places_a_multiset_around_fixed_instances(
    key: str, counts: dict[str, int], fixed: list[str], fits: bool
) -> None:
    t = table(key)
    result = fit_profiles(t, counts, layout(key, *fixed))
    assert (result is not None) is fits
    if result is not None:
        assert Counter(i.profile for i in result) == Counter(counts)
        assert is_valid_layout(t, [*layout(key, *fixed), *result])


def test_a100_40gb_has_the_38_maximal_configurations_nvidia_lists() -> None:
    combos = maximal_combinations(table("A100-SXM4-40GB"))
    t = table("A100-SXM4-40GB")

    def compute(combo: tuple[tuple[str, int], ...]) -> int:
        total = 0
        for name, count in combo:
            profile = t.get(name)
            assert profile is not None
            total += profile.compute_slices * count
        return total

    assert len(combos) == 38
    assert sum(1 for c in combos if compute(c) == 7) == 17


@pytest.mark.parametrize("key", ["A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB"])
def test_maximal_layouts_are_valid_and_cannot_grow(key: str) -> None:
    t = table(key)
    layouts = maximal_layouts(t)
    assert layouts
    for candidate in layouts:
        assert is_valid_layout(t, candidate)
        for profile in t.profiles:
            if not profile.media_extensions:
                assert free_placements(t, candidate, profile.name) == []


# ---------------------------------------------------------------- properties vs an oracle
# The oracle restates docs/mig-reference.md section 2 on a slot array, independently of geometry.py:
# profile id -> allowed starts, size, max count; one +me instance at most.

ORACLE_8 = {
    19: ((0, 1, 2, 3, 4, 5, 6), 1, 7),
    20: ((0, 1, 2, 3, 4, 5, 6), 1, 1),
    15: ((0, 2, 4, 6), 2, 4),
    14: ((0, 2, 4), 2, 3),
    9: ((0, 4), 4, 2),
    5: ((0,), 4, 1),
    0: ((0,), 8, 1),
}
ORACLE_A30 = {
    14: ((0, 1, 2, 3), 1, 4),
    21: ((0, 1, 2, 3), 1, 1),
    5: ((0, 2), 2, 2),
    6: ((0, 2), 2, 1),
    0: ((0,), 4, 1),
}
MEDIA_IDS = {20, 21, 6}


def oracle_accepts(key: str, instances: list[PlacedInstance]) -> bool:
    t = table(key)
    rules = ORACLE_A30 if key.startswith("A30") else ORACLE_8
    slots: list[int | None] = [None] * t.memory_slots
    counts: Counter[int] = Counter()
    for k, inst in enumerate(instances):
        profile = t.get(inst.profile)
        if profile is None:
            return False
        starts, size, max_count = rules[profile.profile_id]
        if inst.placement.start not in starts or inst.placement.size != size:
            return False
        for slot in range(inst.placement.start, inst.placement.start + size):
            if slots[slot] is not None:
                return False
            slots[slot] = k
        counts[profile.profile_id] += 1
        if counts[profile.profile_id] > max_count:
            return False
    return sum(counts[m] for m in MEDIA_IDS) <= 1


MODELS = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H200-141GB", "A30-24GB"]


@st.composite
def model_and_instances(draw: st.DrawFn) -> tuple[str, list[PlacedInstance]]:
    key = draw(st.sampled_from(MODELS))
    t = table(key)
    candidates = [
        PlacedInstance(p.name, Placement(start, size))
        for p in t.profiles
        for start in range(t.memory_slots)
        for size in {p.memory_slices, 1, 2}
        if start + size <= t.memory_slots
    ]
    return key, draw(st.lists(st.sampled_from(candidates), max_size=8))


@given(model_and_instances())
@settings(max_examples=400)
def test_validity_agrees_with_the_nvml_rules(case: tuple[str, list[PlacedInstance]]) -> None:
    key, instances = case
    assert is_valid_layout(table(key), instances) == oracle_accepts(key, instances)


@given(model_and_instances(), st.data())
@settings(max_examples=300)
def test_free_placements_are_exactly_the_ones_nvml_would_accept(
    case: tuple[str, list[PlacedInstance]], data: st.DataObject
) -> None:
    key, instances = case
    t = table(key)
    if not oracle_accepts(key, instances):
        return
    profile = data.draw(st.sampled_from(t.profiles))
    expected = [
        p
        for p in profile.placements
        if oracle_accepts(key, [*instances, PlacedInstance(profile.name, p)])
    ]
    assert free_placements(t, instances, profile.name) == expected


@given(
    st.sampled_from(["A100-SXM4-40GB", "H100-SXM5-80GB", "A30-24GB"]),
    st.dictionaries(st.integers(0, 5), st.integers(1, 3), max_size=3),
)
@settings(max_examples=150)
def test_fit_profiles_finds_an_arrangement_whenever_one_exists(
    key: str, wanted_by_index: dict[int, int]
) -> None:
    t = table(key)
    plain = [p for p in t.profiles if not p.media_extensions]
    counts = {plain[i % len(plain)].name: n for i, n in wanted_by_index.items()}
    result = fit_profiles(t, counts)
    wanted = [name for name, n in counts.items() for _ in range(n)]
    # Brute force: try every order with lowest-free-start greedy and every maximal layout.
    exists = any(
        Counter(i.profile for i in candidate) >= Counter(wanted) for candidate in maximal_layouts(t)
    ) or _greedy_any_order(t, wanted)
    assert (result is not None) == exists
    if result is not None:
        assert oracle_accepts(key, list(result))
        assert Counter(i.profile for i in result) == Counter(wanted)


def _greedy_any_order(t: ProfileTable, wanted: list[str]) -> bool:
    for order in set(permutations(wanted)):
        placed: list[PlacedInstance] = []
        for name in order:
            free = free_placements(t, placed, name)
            if not free:
                break
            placed.append(PlacedInstance(name, free[0]))
        else:
            return True
    return False
