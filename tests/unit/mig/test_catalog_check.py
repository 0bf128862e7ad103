"""Differences between NVML's profile table and the catalog's, as the agent reports them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from migweaver.core.mig.catalog import CATALOG, get_model
from migweaver.core.mig.catalog_check import (
    CatalogMismatch,
    catalog_mismatches,
    describe_mismatches,
)
from migweaver.core.mig.profiles import Placement, ProfileTable


def h200() -> ProfileTable:
    model = get_model("H200-141GB")
    assert model is not None
    return model.table


def changed(table: ProfileTable, profile_id: int, **fields: object) -> ProfileTable:
    profiles = tuple(
        replace(p, **fields) if p.profile_id == profile_id else p  # type: ignore[arg-type]
        for p in table.profiles
    )
    return ProfileTable(table.memory_slots, profiles)


def without(table: ProfileTable, profile_id: int) -> ProfileTable:
    return ProfileTable(
        table.memory_slots, tuple(p for p in table.profiles if p.profile_id != profile_id)
    )


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.key)
def test_every_catalog_table_agrees_with_itself(model: object) -> None:
    table = model.table  # type: ignore[attr-defined]
    assert catalog_mismatches(table, table) == ()


@pytest.mark.parametrize(
    ("nvml", "expected"),
    [
        pytest.param(
            changed(h200(), 14, memory_mib=33024),
            [CatalogMismatch(14, "memory MiB", "33024", "33280", "2g.35gb")],
            id="memory",
        ),
        pytest.param(
            changed(h200(), 9, max_count=1),
            [CatalogMismatch(9, "max count", "1", "2", "3g.71gb")],
            id="max-count",
        ),
        pytest.param(
            changed(h200(), 5, placements=(Placement(4, 4),)),
            [CatalogMismatch(5, "placements", "4:4", "0:4", "4g.71gb")],
            id="placements",
        ),
        pytest.param(
            changed(h200(), 0, sm_count=130),
            [CatalogMismatch(0, "SMs", "130", "132", "7g.141gb")],
            id="sm-count",
        ),
        pytest.param(
            changed(h200(), 19, name="1g.16gb"),
            [CatalogMismatch(19, "name", "1g.16gb", "1g.18gb")],
            id="name",
        ),
        pytest.param(
            without(h200(), 20),
            [CatalogMismatch(20, "profile", "absent", "present", "1g.18gb+me")],
            id="profile-missing-in-nvml",
        ),
    ],
)
def test_each_kind_of_difference_is_listed(
    nvml: ProfileTable, expected: list[CatalogMismatch]
) -> None:
    assert list(catalog_mismatches(nvml, h200())) == expected


def test_a_profile_the_catalog_lacks_is_listed() -> None:
    found = catalog_mismatches(h200(), without(h200(), 15))
    assert found == (CatalogMismatch(15, "profile", "present", "absent", "1g.35gb"),)


def test_an_alias_name_and_an_unknown_sm_count_are_not_differences() -> None:
    a100 = get_model("A100-SXM4-80GB")
    assert a100 is not None
    nvml = changed(changed(a100.table, 9, name="3g.39gb"), 0, sm_count=0)
    assert catalog_mismatches(nvml, a100.table) == ()


def test_the_description_is_bounded() -> None:
    many = [CatalogMismatch(i, "memory MiB", "1", "2", f"p{i}") for i in range(12)]
    text = describe_mismatches(many, limit=3)
    assert text.count("memory MiB") == 3
    assert text.endswith("and 9 more")
