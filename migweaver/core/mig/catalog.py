"""Built-in catalog of MIG-capable NVIDIA GPUs: profiles, NVML ids, placements, memory.

The catalog is a *default*. At runtime the agent reports the profiles NVML lists for each
GPU and those win, so a model that is missing here, or a driver that sizes a profile a
little differently, still works. Values follow `docs/mig-reference.md`; profiles
marked `confirmed=False` carry estimates that real NVML data replaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable

# NVML_GPU_INSTANCE_PROFILE_* index constants (the argument of GetGpuInstanceProfileInfo).
INDEX_1_SLICE = 0
INDEX_2_SLICE = 1
INDEX_3_SLICE = 2
INDEX_4_SLICE = 3
INDEX_7_SLICE = 4
INDEX_1_SLICE_REV1 = 7
INDEX_2_SLICE_REV1 = 8
INDEX_1_SLICE_REV2 = 9


def _placements(starts: Iterable[int], size: int) -> tuple[Placement, ...]:
    return tuple(Placement(start, size) for start in starts)


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One MIG-capable GPU model and its default profile table."""

    key: str
    description: str
    memory_mib: int
    compute_slices: int
    table: ProfileTable
    pci_device_ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    """Normalized spellings of the model (NVML device names, HAMi config names)."""
    _normalized: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spellings = {normalize_model_name(self.key)}
        spellings.update(normalize_model_name(n) for n in self.names)
        object.__setattr__(self, "_normalized", frozenset(spellings))

    @property
    def memory_slots(self) -> int:
        return self.table.memory_slots

    @property
    def profiles(self) -> tuple[MigProfile, ...]:
        return self.table.profiles

    def profile(self, name: str) -> MigProfile | None:
        return self.table.get(name)

    def has_spelling(self, normalized: str) -> bool:
        return normalized in self._normalized


def normalize_model_name(name: str) -> str:
    """`NVIDIA A100 80GB PCIe` -> `A100-80GB-PCIE`: upper case, no vendor, dashes."""
    text = name.strip().upper()
    text = re.sub(r"^NVIDIA[\s-]+", "", text)
    text = re.sub(r"[\s_]+", "-", text)
    return text.strip("-")


@dataclass(frozen=True, slots=True)
class _Row:
    """One profile row of a model: name, memory MiB, SMs, and whether the values are known."""

    name: str
    memory_mib: int
    sm_count: int | None
    confirmed: bool = True
    aliases: tuple[str, ...] = ()


def _eight_slot_table(
    one: _Row, one_double: _Row, two: _Row, three: _Row, four: _Row, seven: _Row
) -> ProfileTable:
    """Profiles of the 8-memory-slot GPUs (A100, H100, H200, GH200, B200): same ids/placements."""
    return ProfileTable(
        memory_slots=8,
        profiles=(
            MigProfile(one.name, 19, INDEX_1_SLICE, 1, one.memory_mib,
                       _placements(range(7), 1), 7, one.sm_count,
                       aliases=one.aliases, confirmed=one.confirmed),
            MigProfile(f"{one.name}+me", 20, INDEX_1_SLICE_REV1, 1, one.memory_mib,
                       _placements(range(7), 1), 1, one.sm_count, media_extensions=True,
                       aliases=tuple(f"{a}+me" for a in one.aliases), confirmed=one.confirmed),
            MigProfile(one_double.name, 15, INDEX_1_SLICE_REV2, 1, one_double.memory_mib,
                       _placements((0, 2, 4, 6), 2), 4, one_double.sm_count,
                       aliases=one_double.aliases, confirmed=one_double.confirmed),
            MigProfile(two.name, 14, INDEX_2_SLICE, 2, two.memory_mib,
                       _placements((0, 2, 4), 2), 3, two.sm_count,
                       aliases=two.aliases, confirmed=two.confirmed),
            MigProfile(three.name, 9, INDEX_3_SLICE, 3, three.memory_mib,
                       _placements((0, 4), 4), 2, three.sm_count,
                       aliases=three.aliases, confirmed=three.confirmed),
            MigProfile(four.name, 5, INDEX_4_SLICE, 4, four.memory_mib,
                       _placements((0,), 4), 1, four.sm_count,
                       aliases=four.aliases, confirmed=four.confirmed),
            MigProfile(seven.name, 0, INDEX_7_SLICE, 7, seven.memory_mib,
                       _placements((0,), 8), 1, seven.sm_count,
                       aliases=seven.aliases, confirmed=seven.confirmed),
        ),
    )  # fmt: skip


def _a30_table() -> ProfileTable:
    return ProfileTable(
        memory_slots=4,
        profiles=(
            MigProfile("1g.6gb", 14, INDEX_1_SLICE, 1, 5952, _placements(range(4), 1), 4, 14),
            MigProfile("1g.6gb+me", 21, INDEX_1_SLICE_REV1, 1, 5952,
                       _placements(range(4), 1), 1, 14, media_extensions=True),
            MigProfile("2g.12gb", 5, INDEX_2_SLICE, 2, 11968, _placements((0, 2), 2), 2, 28),
            MigProfile("2g.12gb+me", 6, INDEX_2_SLICE_REV1, 2, 11968,
                       _placements((0, 2), 2), 1, 28, media_extensions=True),
            MigProfile("4g.24gb", 0, INDEX_4_SLICE, 4, 24000, _placements((0,), 4), 1, 56,
                       confirmed=False),
        ),
    )  # fmt: skip


_A100_40 = _eight_slot_table(
    _Row("1g.5gb", 4864, 14),
    _Row("1g.10gb", 9856, 14),
    _Row("2g.10gb", 9856, 28),
    _Row("3g.20gb", 19968, 42),
    _Row("4g.20gb", 19968, 56),
    _Row("7g.40gb", 40192, 98),
)
_A100_80 = _eight_slot_table(
    _Row("1g.10gb", 9728, 14),
    _Row("1g.20gb", 19968, 14),
    _Row("2g.20gb", 19968, 28),
    _Row("3g.40gb", 40192, 42, aliases=("3g.39gb",)),
    _Row("4g.40gb", 40192, 56, aliases=("4g.39gb",)),
    _Row("7g.80gb", 80896, 98, aliases=("7g.79gb",)),
)


def _h100_80(sms: tuple[int, int, int, int, int, int]) -> ProfileTable:
    return _eight_slot_table(
        _Row("1g.10gb", 9984, sms[0]),
        _Row("1g.20gb", 20096, sms[1]),
        _Row("2g.20gb", 20096, sms[2]),
        _Row("3g.40gb", 40448, sms[3], aliases=("3g.39gb",)),
        _Row("4g.40gb", 40448, sms[4], aliases=("4g.39gb",)),
        _Row("7g.80gb", 81152, sms[5], aliases=("7g.79gb",)),
    )


_H200 = _eight_slot_table(
    _Row("1g.18gb", 16384, 16),
    # Read from a real H200 (driver 580.159.04, docs/agent.md): NVML reports
    # 33280 and 71424 MiB, not the 33024 / 71168 of the tables this catalog began from.
    _Row("1g.35gb", 33280, 26),
    _Row("2g.35gb", 33280, 32),
    _Row("3g.71gb", 71424, 60),
    _Row("4g.71gb", 71424, 64),
    _Row("7g.141gb", 143360, 132),
)

CATALOG: tuple[GpuModel, ...] = (
    GpuModel(
        "A30-24GB", "NVIDIA A30 24GB", 24576, 4, _a30_table(),
        pci_device_ids=(0x20B7,), names=("A30", "A30-PCIE", "A30-24GB-PCIE"),
    ),
    GpuModel(
        "A100-SXM4-40GB", "NVIDIA A100 SXM4 40GB", 40960, 7, _A100_40,
        pci_device_ids=(0x20B0,), names=("A100-SXM4-40GB", "A100-40GB-SXM4"),
    ),
    GpuModel(
        "A100-PCIE-40GB", "NVIDIA A100 PCIe 40GB", 40960, 7, _A100_40,
        pci_device_ids=(0x20F1,), names=("A100-PCIE-40GB", "A100-40GB-PCIE"),
    ),
    GpuModel(
        "A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB", 81920, 7, _A100_80,
        pci_device_ids=(0x20B2,), names=("A100-80GB-SXM4", "A100-SXM-80GB"),
    ),
    GpuModel(
        "A100-PCIE-80GB", "NVIDIA A100 PCIe 80GB", 81920, 7, _A100_80,
        pci_device_ids=(0x20B5,), names=("A100-80GB-PCIE",),
    ),
    GpuModel(
        "H100-SXM5-80GB", "NVIDIA H100 SXM5 80GB", 81559, 7, _h100_80((16, 26, 32, 60, 64, 132)),
        pci_device_ids=(0x2330,), names=("H100-80GB-HBM3", "H100-SXM5", "H100-SXM"),
    ),
    GpuModel(
        "H100-PCIE-80GB", "NVIDIA H100 PCIe 80GB", 81559, 7, _h100_80((14, 14, 30, 46, 62, 114)),
        pci_device_ids=(0x2331,), names=("H100-PCIE", "H100-80GB-PCIE"),
    ),
    GpuModel(
        "H100-NVL-94GB", "NVIDIA H100 NVL 94GB", 95830, 7,
        _eight_slot_table(
            _Row("1g.12gb", 11008, 16),
            _Row("1g.24gb", 22144, 26),
            _Row("2g.24gb", 22144, 32),
            _Row("3g.47gb", 47488, 60),
            _Row("4g.47gb", 47488, 64),
            _Row("7g.94gb", 95360, 132),
        ),
        pci_device_ids=(0x2321,), names=("H100-NVL",),
    ),
    GpuModel(
        "GH200-96GB", "NVIDIA GH200 Grace Hopper 96GB", 97871, 7,
        _eight_slot_table(
            _Row("1g.12gb", 11008, 16, confirmed=False),
            _Row("1g.24gb", 22144, 26, confirmed=False),
            _Row("2g.24gb", 22144, 32, confirmed=False),
            _Row("3g.48gb", 47616, 60),
            _Row("4g.48gb", 47616, 64),
            _Row("7g.96gb", 95232, 132),
        ),
        pci_device_ids=(0x2342,), names=("GH200-480GB", "GH200", "GH200-96GB-HBM3"),
    ),
    GpuModel(
        "H200-141GB", "NVIDIA H200 SXM 141GB", 143771, 7, _H200,
        pci_device_ids=(0x2335,), names=("H200", "H200-SXM", "H200-SXM-141GB"),
    ),
    GpuModel(
        "H200-NVL-141GB", "NVIDIA H200 NVL 141GB", 143771, 7, _H200,
        pci_device_ids=(0x233B,), names=("H200-NVL",),
    ),
    GpuModel(
        "B200-180GB", "NVIDIA B200 180GB", 183359, 7,
        _eight_slot_table(
            _Row("1g.23gb", 22528, 18, confirmed=False),
            _Row("1g.45gb", 45312, 30),
            _Row("2g.45gb", 45312, 36),
            _Row("3g.90gb", 90624, None, confirmed=False),
            _Row("4g.90gb", 90624, None, confirmed=False),
            _Row("7g.180gb", 181248, None, confirmed=False),
        ),
        pci_device_ids=(0x2901,), names=("B200", "B200-SXM", "B200-SXM-180GB"),
    ),
)  # fmt: skip

_BY_KEY: dict[str, GpuModel] = {normalize_model_name(m.key): m for m in CATALOG}


def model_keys() -> tuple[str, ...]:
    return tuple(m.key for m in CATALOG)


def get_model(key: str) -> GpuModel | None:
    """The catalog model with this exact key or spelling (`A100-SXM4-80GB`, `NVIDIA A30`)."""
    normalized = normalize_model_name(key)
    if normalized in _BY_KEY:
        return _BY_KEY[normalized]
    return next((m for m in CATALOG if m.has_spelling(normalized)), None)


def _pci_device(pci_device_id: int) -> int:
    # NVML's pciDeviceId packs (device << 16) | vendor (0x10DE for NVIDIA).
    return pci_device_id >> 16 if pci_device_id > 0xFFFF else pci_device_id


def match_model(name: str | None = None, pci_device_id: int | None = None) -> GpuModel | None:
    """Find the catalog model of a GPU from NVML's device name and/or PCI device id.

    The PCI device id is the most precise; then an exact spelling of the name; then the
    longest catalog spelling contained in the name (so `NVIDIA H100 80GB HBM3 SXM` still
    resolves). None for a GPU the catalog does not know: its NVML profiles are used as is.
    """
    if pci_device_id is not None:
        device = _pci_device(pci_device_id)
        for model in CATALOG:
            if device in model.pci_device_ids:
                return model
    if not name:
        return None
    exact = get_model(name)
    if exact is not None:
        return exact
    normalized = normalize_model_name(name)
    best: tuple[int, GpuModel] | None = None
    for model in CATALOG:
        for spelling in model._normalized:
            if _contains_token_run(normalized, spelling) and (
                best is None or len(spelling) > best[0]
            ):
                best = (len(spelling), model)
    return best[1] if best else None


def _contains_token_run(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` on dash boundaries (`A100-80GB` in `A100-80GB-PCIE`)."""
    return f"-{needle}-" in f"-{haystack}-"


def models_matching(config_name: str) -> tuple[GpuModel, ...]:
    """Catalog models a HAMi config `models:` entry refers to.

    HAMi tests whether the GPU's type *contains* the configured name, so `A30` covers every
    A30 and `H200` both the SXM and the NVL H200. Here: every model one of whose spellings
    contains the configured name on dash boundaries (`H100` does not match `GH200`).
    """
    normalized = normalize_model_name(config_name)
    if not normalized:
        return ()
    return tuple(
        m for m in CATALOG if any(_contains_token_run(s, normalized) for s in m._normalized)
    )


def gpu_name_matches(config_name: str, gpu_name: str, gpu_model: GpuModel | None) -> bool:
    """Whether a configured model name applies to a GPU (by its catalog model or NVML name).

    Names compare on dash boundaries, so `H200` applies to `NVIDIA H200 NVL` but not to
    `NVIDIA GH200 480GB`, and `B200` not to a `GB200`.
    """
    if gpu_model is not None and gpu_model in models_matching(config_name):
        return True
    wanted = normalize_model_name(config_name)
    return bool(wanted) and _contains_token_run(normalize_model_name(gpu_name), wanted)
