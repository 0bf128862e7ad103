"""The built-in GPU catalog against the tables of docs/mig-reference.md sections 2 and 3."""

from __future__ import annotations

import pytest

from migweaver.core.mig.catalog import CATALOG, get_model, match_model, models_matching
from migweaver.core.mig.profiles import Placement

# model -> profile names by NVML profile id (19: 1g, 15: 1g double memory, 14: 2g, 9: 3g,
# 5: 4g, 0: 7g), copied from docs/mig-reference.md section 3.
EIGHT_SLOT_NAMES = {
    "A100-SXM4-40GB": ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-PCIE-40GB": ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-SXM4-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "A100-PCIE-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-SXM5-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-PCIE-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-NVL-94GB": ("1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "GH200-96GB": ("1g.12gb", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"),
    "H200-141GB": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "H200-NVL-141GB": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "B200-180GB": ("1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
}
EIGHT_SLOT_IDS = (19, 15, 14, 9, 5, 0)
# profile id -> (allowed starts, size, max count), docs/mig-reference.md section 2.
EIGHT_SLOT_RULES = {
    19: ((0, 1, 2, 3, 4, 5, 6), 1, 7),
    20: ((0, 1, 2, 3, 4, 5, 6), 1, 1),
    15: ((0, 2, 4, 6), 2, 4),
    14: ((0, 2, 4), 2, 3),
    9: ((0, 4), 4, 2),
    5: ((0,), 4, 1),
    0: ((0,), 8, 1),
}


@pytest.mark.parametrize("key", list(EIGHT_SLOT_NAMES), ids=list(EIGHT_SLOT_NAMES))
def test_eight_slot_models_have_the_documented_profiles(key: str) -> None:
    model = get_model(key)
    assert model is not None
    assert model.memory_slots == 8
    assert model.compute_slices == 7
    for profile_id, name in zip(EIGHT_SLOT_IDS, EIGHT_SLOT_NAMES[key], strict=True):
        profile = model.profile(name)
        assert profile is not None, name
        assert profile.profile_id == profile_id
        starts, size, max_count = EIGHT_SLOT_RULES[profile_id]
        assert profile.placements == tuple(Placement(s, size) for s in starts)
        assert profile.max_count == max_count
    media = model.profile(f"{EIGHT_SLOT_NAMES[key][0]}+me")
    assert media is not None
    assert media.media_extensions
    assert media.profile_id == 20
    starts, size, max_count = EIGHT_SLOT_RULES[20]
    assert media.placements == tuple(Placement(s, size) for s in starts)
    assert media.max_count == max_count


@pytest.mark.parametrize(
    ("key", "name", "memory_mib", "sm_count"),
    [
        ("A100-SXM4-40GB", "1g.5gb", 4864, 14),
        ("A100-SXM4-40GB", "7g.40gb", 40192, 98),
        ("A100-SXM4-80GB", "3g.40gb", 40192, 42),
        ("H100-SXM5-80GB", "1g.20gb", 20096, 26),
        ("H100-PCIE-80GB", "7g.80gb", 81152, 114),
        ("H100-NVL-94GB", "3g.47gb", 47488, 60),
        ("GH200-96GB", "7g.96gb", 95232, 132),
        ("H200-141GB", "1g.18gb", 16384, 16),
        ("B200-180GB", "2g.45gb", 45312, 36),
        ("A30-24GB", "2g.12gb", 11968, 28),
    ],
    ids=str,
)
def test_profile_memory_and_sms_follow_nvml(
    key: str, name: str, memory_mib: int, sm_count: int
) -> None:
    model = get_model(key)
    assert model is not None
    profile = model.profile(name)
    assert profile is not None
    assert (profile.memory_mib, profile.sm_count) == (memory_mib, sm_count)


def test_a30_has_four_slots_and_two_media_extension_profiles() -> None:
    model = get_model("A30-24GB")
    assert model is not None
    assert (model.memory_slots, model.compute_slices) == (4, 4)
    expected = {
        "1g.6gb": (14, (0, 1, 2, 3), 1, 4, False),
        "1g.6gb+me": (21, (0, 1, 2, 3), 1, 1, True),
        "2g.12gb": (5, (0, 2), 2, 2, False),
        "2g.12gb+me": (6, (0, 2), 2, 1, True),
        "4g.24gb": (0, (0,), 4, 1, False),
    }
    assert {p.name for p in model.profiles} == set(expected)
    for name, (pid, starts, size, max_count, media) in expected.items():
        profile = model.profile(name)
        assert profile is not None
        assert profile.profile_id == pid
        assert profile.placements == tuple(Placement(s, size) for s in starts)
        assert (profile.max_count, profile.media_extensions) == (max_count, media)


@pytest.mark.parametrize(
    ("key", "alias", "canonical"),
    [
        ("A100-SXM4-80GB", "7g.79gb", "7g.80gb"),
        ("A100-SXM4-80GB", "3g.39gb", "3g.40gb"),
        ("H100-SXM5-80GB", "3g.39gb", "3g.40gb"),
        ("H100-SXM5-80GB", "MIG 3g.40gb", "3g.40gb"),
        ("A100-SXM4-40GB", "1G.5GB", "1g.5gb"),
    ],
    ids=str,
)
def test_older_driver_names_resolve_to_the_profile(key: str, alias: str, canonical: str) -> None:
    model = get_model(key)
    assert model is not None
    profile = model.profile(alias)
    assert profile is not None
    assert profile.name == canonical


@pytest.mark.parametrize(
    ("nvml_name", "pci_device_id", "expected"),
    [
        ("NVIDIA A100-SXM4-40GB", None, "A100-SXM4-40GB"),
        ("NVIDIA A100-PCIE-40GB", None, "A100-PCIE-40GB"),
        ("NVIDIA A100-SXM4-80GB", None, "A100-SXM4-80GB"),
        ("NVIDIA A100 80GB PCIe", None, "A100-PCIE-80GB"),
        ("NVIDIA H100 80GB HBM3", None, "H100-SXM5-80GB"),
        ("NVIDIA H100 PCIe", None, "H100-PCIE-80GB"),
        ("NVIDIA H100 NVL", None, "H100-NVL-94GB"),
        ("NVIDIA GH200 480GB", None, "GH200-96GB"),
        ("NVIDIA H200", None, "H200-141GB"),
        ("NVIDIA H200 NVL", None, "H200-NVL-141GB"),
        ("NVIDIA B200", None, "B200-180GB"),
        ("NVIDIA A30", None, "A30-24GB"),
        ("something new", 0x233010DE, "H100-SXM5-80GB"),
        (None, 0x20B5, "A100-PCIE-80GB"),
        ("NVIDIA H100 80GB HBM3 SXM5 engineering sample", None, "H100-SXM5-80GB"),
    ],
    ids=str,
)
def test_match_model_from_nvml_name_or_pci_id(
    nvml_name: str | None, pci_device_id: int | None, expected: str
) -> None:
    model = match_model(nvml_name, pci_device_id)
    assert model is not None
    assert model.key == expected


@pytest.mark.parametrize("name", ["Tesla V100-SXM2-16GB", "NVIDIA L4", "", "NVIDIA A10"])
def test_models_without_mig_are_not_matched(name: str) -> None:
    assert match_model(name) is None


@pytest.mark.parametrize(
    ("config_name", "expected"),
    [
        ("A30", {"A30-24GB"}),
        ("A100-SXM4-40GB", {"A100-SXM4-40GB"}),
        ("A100-40GB-PCIe", {"A100-PCIE-40GB"}),
        ("A100-PCIE-80GB", {"A100-PCIE-80GB"}),
        ("H200", {"H200-141GB", "H200-NVL-141GB"}),
        ("H100", {"H100-SXM5-80GB", "H100-PCIE-80GB", "H100-NVL-94GB"}),
        ("RTX-4090", set()),
    ],
    ids=str,
)
def test_config_model_names_resolve_like_hami(config_name: str, expected: set[str]) -> None:
    assert {m.key for m in models_matching(config_name)} == expected


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.key)
def test_every_model_is_internally_consistent(model: object) -> None:
    from migweaver.core.mig.catalog import GpuModel

    assert isinstance(model, GpuModel)
    ids = [p.profile_id for p in model.profiles]
    names = [p.name for p in model.profiles]
    assert len(ids) == len(set(ids))
    assert len(names) == len(set(names))
    largest = max(model.profiles, key=lambda p: p.memory_mib)
    assert largest.compute_slices == model.compute_slices
    assert largest.memory_slices == model.memory_slots
    assert largest.memory_mib <= model.memory_mib
    for profile in model.profiles:
        assert profile.name.startswith(f"{profile.compute_slices}g.")
        assert all(pl.end <= model.memory_slots for pl in profile.placements)


@pytest.mark.parametrize(
    ("config_name", "gpu_name", "expected"),
    [
        ("H200", "NVIDIA H200 NVL", True),
        ("H200", "NVIDIA GH200 480GB", False),
        ("B200", "NVIDIA GB200", False),
        ("A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", True),
        ("A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", False),
        ("X9000", "NVIDIA X9000 Next", True),
    ],
    ids=str,
)
def test_config_names_apply_to_gpus_on_name_boundaries(
    config_name: str, gpu_name: str, expected: bool
) -> None:
    from migweaver.core.mig.catalog import gpu_name_matches

    assert gpu_name_matches(config_name, gpu_name, match_model(gpu_name)) is expected
