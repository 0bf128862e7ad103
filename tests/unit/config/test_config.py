"""The geometry configuration: HAMi's `nvidia:` block loaded, checked against the catalog,
and resolved for the planner (docs/design.md, "Resources")."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from migweaver.core.config import (
    CONFIG_KEY,
    CONFIGMAP_NAME,
    ConfigIssue,
    ConfigResult,
    DeviceConfig,
    Geometry,
    load_device_config,
    summarize,
)
from migweaver.core.mig.catalog import CATALOG, get_model, match_model
from migweaver.core.mig.geometry import fit_profiles
from migweaver.core.resources.requests import RequestDefaults

DATA = Path(__file__).parents[1] / "data"
ROOT = Path(__file__).parents[3]
MANIFEST = ROOT / "manifests" / "device-config.yaml"

# NVML device names of every catalog model, as a driver reports them.
NVML_NAMES = {
    "A30-24GB": "NVIDIA A30",
    "A100-SXM4-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-PCIE-40GB": "NVIDIA A100-PCIE-40GB",
    "A100-SXM4-80GB": "NVIDIA A100-SXM4-80GB",
    "A100-PCIE-80GB": "NVIDIA A100 80GB PCIe",
    "H100-SXM5-80GB": "NVIDIA H100 80GB HBM3",
    "H100-PCIE-80GB": "NVIDIA H100 PCIe",
    "H100-NVL-94GB": "NVIDIA H100 NVL",
    "GH200-96GB": "NVIDIA GH200 480GB",
    "H200-141GB": "NVIDIA H200",
    "H200-NVL-141GB": "NVIDIA H200 NVL",
    "B200-180GB": "NVIDIA B200",
}


def load(name: str) -> ConfigResult:
    path = DATA / name
    return load_device_config(path.read_text(encoding="utf-8"), str(path))


def valid(text: str) -> DeviceConfig:
    result = load_device_config(textwrap.dedent(text))
    assert result.errors == [], [str(e) for e in result.errors]
    assert result.config is not None
    return result.config


def a100_40(geometries: str) -> str:
    """A config with one A100-SXM4-40GB entry whose allowedGeometries is `geometries`."""
    return (
        "nvidia:\n  knownMigGeometries:\n  - models: [A100-SXM4-40GB]\n    allowedGeometries:\n"
        + (textwrap.indent(textwrap.dedent(geometries).strip("\n"), "    ") + "\n")
    )


def configmap(config_yaml: str, name: str = CONFIGMAP_NAME) -> str:
    body = textwrap.indent(textwrap.dedent(config_yaml).strip("\n"), "    ")
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: {name}\n  namespace: migweaver-system\n"
        f"data:\n  {CONFIG_KEY}: |\n{body}\n"
    )


# --------------------------------------------------------------------------- the seeds


SEED_000_GEOMETRIES = {
    "A30-24GB": [
        (("1g.6gb", 4),),
        (("2g.12gb", 2),),
        (("4g.24gb", 1),),
    ],
    "A100-SXM4-40GB": [
        (("1g.5gb", 7),),
        (("2g.10gb", 3), ("1g.5gb", 1)),
        (("3g.20gb", 2),),
        (("7g.40gb", 1),),
    ],
    "A100-SXM4-80GB": [
        (("1g.10gb", 7),),
        (("2g.20gb", 3), ("1g.10gb", 1)),
        (("3g.40gb", 2),),
        (("7g.79gb", 1),),
    ],
}


@pytest.mark.parametrize(
    ("name", "flat_warnings"),
    [("seed_000_config.yaml", 0), ("seed_001_config.yaml", 3)],
    ids=["seed-000-nested", "seed-001-flat"],
)
def test_seed_configs_load(name: str, flat_warnings: int) -> None:
    result = load(name)
    assert result.ok
    assert result.errors == []
    assert len(result.warnings) == flat_warnings
    assert all("flat list" in w.message for w in result.warnings)


@pytest.mark.parametrize("key", [m.key for m in CATALOG], ids=[m.key for m in CATALOG])
def test_both_seeds_yield_identical_geometries(key: str) -> None:
    nested, flat = load("seed_000_config.yaml").config, load("seed_001_config.yaml").config
    assert nested is not None
    assert flat is not None
    model = get_model(key)
    assert model is not None
    name = NVML_NAMES[key]
    assert nested.geometries_for(name, model) == flat.geometries_for(name, model)


@pytest.mark.parametrize("key", list(SEED_000_GEOMETRIES), ids=list(SEED_000_GEOMETRIES))
def test_seed_geometries_are_the_documented_ones(key: str) -> None:
    for name in ("seed_000_config.yaml", "seed_001_config.yaml"):
        config = load(name).config
        assert config is not None
        geometries = config.geometries_for(key, get_model(key))
        assert geometries is not None
        assert [g.profiles for g in geometries] == SEED_000_GEOMETRIES[key]


def test_flat_list_warning_explains_the_grouping() -> None:
    warnings = load("seed_001_config.yaml").warnings
    a100 = warnings[1]
    assert a100.path == "nvidia.knownMigGeometries[1].allowedGeometries"
    assert "read as 4 geometries" in a100.message
    assert "[2g.10gb x3, 1g.5gb x1]" in a100.message
    assert "A100-SXM4-40GB" in a100.message


def test_flat_list_of_an_unknown_model_is_one_geometry_per_entry() -> None:
    result = load_device_config(
        textwrap.dedent(
            """
            nvidia:
              knownMigGeometries:
              - models: [X9000]
                allowedGeometries:
                - {name: 1g.5gb, memory: 5120, count: 2}
                - {name: 1g.5gb, memory: 5120, count: 3}
            """
        )
    )
    assert result.config is not None
    geometries = result.config.geometries_for("NVIDIA X9000", None)
    assert geometries == [
        Geometry((("1g.5gb", 2),), (5120,)),
        Geometry((("1g.5gb", 3),), (5120,)),
    ]
    assert any("each entry is read as a geometry of its own" in w.message for w in result.warnings)
    assert any("not in the catalog" in w.message for w in result.warnings)


def test_flat_list_errors_point_into_the_users_list() -> None:
    result = load_device_config(
        a100_40(
            """
            - {name: 1g.5gb, memory: 5120, count: 7}
            - {name: 2g.10gb, memory: 10240, count: 3}
            - {name: 1g.5gb, memory: 5120, count: 1}
            - {name: 3g.21gb, memory: 20480, count: 2}
            """
        )
    )
    assert [e.path for e in result.errors] == [
        "nvidia.knownMigGeometries[0].allowedGeometries[3].name"
    ]
    assert "geometry 2 of A100-SXM4-40GB" in result.errors[0].message


# --------------------------------------------------------------------------- the manifest


def shipped() -> ConfigResult:
    return load_device_config(MANIFEST.read_text(encoding="utf-8"), str(MANIFEST))


def test_shipped_manifest_is_valid_without_warnings() -> None:
    result = shipped()
    assert result.errors == []
    assert result.warnings == []
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["metadata"] == {
        "name": CONFIGMAP_NAME,
        "namespace": "migweaver-system",
        "labels": manifest["metadata"]["labels"],
    }


@pytest.mark.parametrize("key", [m.key for m in CATALOG], ids=[m.key for m in CATALOG])
def test_shipped_manifest_covers_every_catalog_model(key: str) -> None:
    config = shipped().config
    assert config is not None
    model = get_model(key)
    assert model is not None
    nvml_name = NVML_NAMES[key]
    assert match_model(nvml_name) is model
    for gpu_model in (model, None):
        geometries = config.geometries_for(nvml_name, gpu_model)
        assert geometries, f"{nvml_name} (model {gpu_model and gpu_model.key}) not configured"
        for geometry in geometries:
            counts: dict[str, int] = {}
            for name, count in geometry.profiles:
                profile = model.table.get(name)
                assert profile is not None, f"{key}: {name}"
                counts[profile.name] = counts.get(profile.name, 0) + count
            assert fit_profiles(model.table, counts) is not None, f"{key}: {geometry}"


def test_shipped_manifest_keeps_the_seed_geometries() -> None:
    config, seed = shipped().config, load("seed_000_config.yaml").config
    assert config is not None
    assert seed is not None
    for key in ("A30-24GB", "A100-SXM4-40GB", "A100-PCIE-40GB", "A100-SXM4-80GB", "A100-PCIE-80GB"):
        model = get_model(key)
        assert config.geometries_for(NVML_NAMES[key], model) == seed.geometries_for(
            NVML_NAMES[key], model
        )
    request = config.request_defaults()
    assert request == RequestDefaults()
    assert config.nvidia.device_split_count == 10
    assert config.nvidia.device_memory_scaling == 1.0
    assert config.nvidia.device_core_scaling == 1.0


@pytest.mark.parametrize(
    "key",
    ["H100-SXM5-80GB", "H100-NVL-94GB", "GH200-96GB", "H200-141GB", "B200-180GB"],
)
def test_shipped_newer_models_follow_the_seed_order_plus_4g_3g(key: str) -> None:
    config = shipped().config
    assert config is not None
    model = get_model(key)
    assert model is not None
    geometries = config.geometries_for(NVML_NAMES[key], model)
    assert geometries is not None
    slices = {name: p.compute_slices for p in model.profiles for name in (p.name, *p.aliases)}
    shapes = [tuple((slices[n], c) for n, c in g.profiles) for g in geometries]
    assert shapes == [((1, 7),), ((2, 3), (1, 1)), ((3, 2),), ((4, 1), (3, 1)), ((7, 1),)]


# --------------------------------------------------------------------------- errors

ERROR_CASES = {
    "unknown-profile": (
        a100_40(
            """
            - [{name: 1g.5gb, memory: 5120, count: 7}]
            - [{name: 3g.21gb, memory: 20480, count: 2}]
            """
        ),
        "nvidia.knownMigGeometries[0].allowedGeometries[1][0].name",
        ["geometry 1 of A100-SXM4-40GB", "unknown profile '3g.21gb'", "3g.20gb"],
    ),
    "geometry-overflows-gpu": (
        a100_40(
            """
            - [{name: 1g.5gb, memory: 5120, count: 7}]
            - [{name: 2g.10gb, memory: 10240, count: 3}]
            - [{name: 3g.20gb, memory: 20480, count: 2}, {name: 1g.5gb, memory: 5120, count: 1}]
            """
        ),
        "nvidia.knownMigGeometries[0].allowedGeometries[2]",
        [
            "geometry 2 of A100-SXM4-40GB (3g.20gb x2, 1g.5gb x1) does not fit on 8 memory "
            "slots (needs 9)"
        ],
    ),
    "placements-conflict": (
        a100_40("- [{name: 4g.20gb, memory: 20480, count: 1}, {name: 2g.10gb, count: 2}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0]",
        ["does not fit on 8 memory slots", "no arrangement"],
    ),
    "huge-count": (
        a100_40("- [{name: 1g.5gb, memory: 5120, count: 1000000000}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0]",
        ["at most 7 x 1g.5gb"],
    ),
    "too-many-media-extensions": (
        a100_40("- [{name: 1g.5gb+me, memory: 5120, count: 2}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0]",
        ["at most 1 x 1g.5gb+me"],
    ),
    "count-zero": (
        a100_40("- [{name: 1g.5gb, memory: 5120, count: 0}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0][0].count",
        ["geometry 0 of A100-SXM4-40GB", "1g.5gb", "at least 1 (got 0)"],
    ),
    "negative-defaultMemory": (
        "nvidia:\n  defaultMemory: -1\n",
        "nvidia.defaultMemory",
        ["at least 0", "-1"],
    ),
    "negative-defaultCores": ("nvidia:\n  defaultCores: -5\n", "nvidia.defaultCores", ["-5"]),
    "defaultGPUNum-zero": ("nvidia:\n  defaultGPUNum: 0\n", "nvidia.defaultGPUNum", ["at least 1"]),
    "deviceSplitCount-zero": (
        "nvidia:\n  deviceSplitCount: 0\n",
        "nvidia.deviceSplitCount",
        ["at least 1"],
    ),
    "memory-scaling-zero": (
        "nvidia:\n  deviceMemoryScaling: 0\n",
        "nvidia.deviceMemoryScaling",
        ["greater than 0"],
    ),
    "core-scaling-negative": (
        "nvidia:\n  deviceCoreScaling: -1.5\n",
        "nvidia.deviceCoreScaling",
        ["greater than 0", "-1.5"],
    ),
    "malformed-yaml": (
        "nvidia:\n  defaultMemory: 0\n   defaultCores: 1\n",
        "config.yaml",
        ["invalid YAML at line 3, column 16"],
    ),
    "helm-template": (
        "nvidia:\n  resourceCountName: {{ .Values.resourceName }}\n",
        "config.yaml",
        ["line 2", "Helm template"],
    ),
    "configmap-without-config-yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  other.yaml: a\n  b: c\n",
        "data",
        ["no key 'config.yaml'", "'other.yaml', 'b'"],
    ),
    "configmap-without-data": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "data",
        ["has no data"],
    ),
    "configmap-config-not-a-string": (
        "kind: ConfigMap\ndata:\n  config.yaml:\n    nvidia: {}\n",
        "data['config.yaml']",
        ["must be a string", "a mapping"],
    ),
    "models-is-a-string": (
        "nvidia:\n  knownMigGeometries:\n  - models: A30\n"
        "    allowedGeometries: [[{name: 1g.6gb, memory: 6144, count: 4}]]\n",
        "nvidia.knownMigGeometries[0].models",
        ["expected a list", "'A30'"],
    ),
    "allowedGeometries-is-a-string": (
        "nvidia:\n  knownMigGeometries:\n  - models: [A30]\n    allowedGeometries: 1g.6gb\n",
        "nvidia.knownMigGeometries[0].allowedGeometries",
        ["expected a list", "'1g.6gb'"],
    ),
    "count-is-a-string": (
        a100_40("- [{name: 1g.5gb, memory: 5120, count: '7'}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0][0].count",
        ["expected an integer", "'7'"],
    ),
    "empty-geometry": (
        a100_40("- []"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0]",
        ["must not be empty"],
    ),
    "no-nvidia-block": ("cambricon:\n  resourceCountName: x\n", "nvidia", ["required"]),
    "nvidia-not-a-mapping": ("nvidia: [1, 2]\n", "nvidia", ["expected a mapping"]),
    "top-level-list": ("- nvidia\n", "config.yaml", ["expected a mapping", "a list"]),
    "empty-document": ("", "config.yaml", ["empty"]),
    "bad-timestamp": ("nvidia:\n  when: 2024-13-01\n", "config.yaml", ["invalid YAML"]),
}


@pytest.mark.parametrize(
    ("text", "path", "fragments"), list(ERROR_CASES.values()), ids=list(ERROR_CASES)
)
def test_invalid_configs_are_errors_with_paths(text: str, path: str, fragments: list[str]) -> None:
    result = load_device_config(text)
    assert result.config is None
    assert not result.ok
    assert [e.path for e in result.errors] == [path], [str(e) for e in result.errors]
    for fragment in fragments:
        assert fragment in result.errors[0].message
    assert str(result.errors[0]) == f"{path}: {result.errors[0].message}"


def test_every_error_is_listed() -> None:
    result = load_device_config(
        "nvidia:\n  defaultMemory: -1\n  defaultGPUNum: 0\n  deviceCoreScaling: 0\n"
    )
    assert [e.path for e in result.errors] == [
        "nvidia.defaultMemory",
        "nvidia.defaultGPUNum",
        "nvidia.deviceCoreScaling",
    ]


def test_unknown_profile_is_reported_once_per_distinct_table() -> None:
    result = load_device_config(
        "nvidia:\n  knownMigGeometries:\n  - models: [A100-SXM4-40GB, A100-PCIE-40GB]\n"
        "    allowedGeometries: [[{name: 1g.6gb, memory: 6144, count: 1}]]\n"
    )
    assert [e.message.split(":")[0] for e in result.errors] == [
        "geometry 0 of A100-SXM4-40GB/A100-PCIE-40GB"
    ]


def test_configmap_yaml_error_points_at_the_manifest_line() -> None:
    text = configmap("nvidia:\n  defaultMemory: 0\n   defaultCores: 1\n")
    result = load_device_config(text, "cm.yaml")
    assert [e.path for e in result.errors] == ["data['config.yaml']"]
    # The third line of the block is line 10 of the manifest, indented by 4 more columns.
    assert "line 10, column 20 of cm.yaml (line 3 of the config.yaml text)" in (
        result.errors[0].message
    )
    assert text.splitlines()[9][19] == ":"


# --------------------------------------------------------------------------- warnings

WARNING_CASES = {
    "unknown-model": (
        "nvidia:\n  knownMigGeometries:\n  - models: [X9000]\n"
        "    allowedGeometries: [[{name: 1g.5gb, memory: 5120, count: 1}]]\n",
        "nvidia.knownMigGeometries[0].models[0]",
        ["'X9000' is not in the catalog"],
    ),
    "memory-far-from-catalog": (
        a100_40("- [{name: 1g.5gb, memory: 8192, count: 7}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0][0].memory",
        ["8192 MiB", "4864 MiB", "68%"],
    ),
    "memory-missing": (
        a100_40("- [{name: 1g.5gb, count: 7}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0][0].memory",
        ["no memory for 1g.5gb"],
    ),
    "unknown-key-in-entry": (
        a100_40("- [{name: 1g.5gb, memory: 5120, count: 7, cuont: 3}]"),
        "nvidia.knownMigGeometries[0].allowedGeometries[0][0].cuont",
        ["unknown key"],
    ),
    "shadowed-entry": (
        "nvidia:\n  knownMigGeometries:\n"
        "  - models: [A100-SXM4-80GB]\n"
        "    allowedGeometries: [[{name: 7g.80gb, memory: 81920, count: 1}]]\n"
        "  - models: [A100-80GB]\n"
        "    allowedGeometries: [[{name: 4g.40gb, memory: 40960, count: 1}]]\n",
        "nvidia.knownMigGeometries[1].models[0]",
        ["A100-SXM4-80GB is already configured by knownMigGeometries[0]"],
    ),
    "configmap-name": (
        configmap("nvidia: {}", name="other"),
        "metadata.name",
        ["'other'", CONFIGMAP_NAME],
    ),
}


@pytest.mark.parametrize(
    ("text", "path", "fragments"), list(WARNING_CASES.values()), ids=list(WARNING_CASES)
)
def test_warnings_do_not_invalidate(text: str, path: str, fragments: list[str]) -> None:
    result = load_device_config(text)
    assert result.ok, [str(e) for e in result.errors]
    matching = [w for w in result.warnings if w.path == path]
    assert matching, [str(w) for w in result.warnings]
    for fragment in fragments:
        assert fragment in matching[0].message


def test_memory_within_ten_percent_is_quiet() -> None:
    # The seeds' rounded values (5120 for NVML's 4864 MiB) are 5 % off.
    assert load_device_config(a100_40("- [{name: 1g.5gb, memory: 5120, count: 7}]")).warnings == []


# --------------------------------------------------------------------------- loading


def test_aliases_count_as_profile_names() -> None:
    config = valid(
        """
        nvidia:
          knownMigGeometries:
          - models: [A100-SXM4-80GB]
            allowedGeometries: [[{name: 7g.79gb, memory: 80896, count: 1}]]
        """
    )
    assert config.geometries_for("NVIDIA A100-SXM4-80GB", None) == [
        Geometry((("7g.79gb", 1),), (80896,))
    ]


def test_unknown_nvidia_keys_are_kept_and_other_vendors_ignored() -> None:
    config = valid(
        """
        nvidia:
          gpuCorePolicy: force
          libCudaLogLevel: 1
        cambricon:
          resourceCountName: cambricon.com/vmlu
        """
    )
    assert config.nvidia.model_extra == {"gpuCorePolicy": "force", "libCudaLogLevel": 1}
    assert config.nvidia.known_mig_geometries == []
    assert not hasattr(config, "cambricon")


def test_hami_defaults_apply_when_keys_are_absent() -> None:
    config = valid("nvidia: {}")
    n = config.nvidia
    assert (n.device_split_count, n.device_memory_scaling, n.device_core_scaling) == (10, 1.0, 1.0)
    assert n.overwrite_env is False
    assert config.request_defaults() == RequestDefaults()


def test_configmap_and_bare_config_give_the_same_config() -> None:
    text = (DATA / "seed_000_config.yaml").read_text(encoding="utf-8")
    bare = load_device_config(text)
    wrapped = load_device_config(configmap(text))
    assert bare.errors == wrapped.errors == []
    assert bare.config == wrapped.config


def test_multi_document_manifest_picks_the_configmap() -> None:
    text = "kind: Namespace\nmetadata: {name: migweaver-system}\n---\n" + configmap(
        "nvidia: {defaultMemory: 1024}"
    )
    result = load_device_config(text)
    assert result.config is not None
    assert result.config.nvidia.default_memory == 1024


def test_multi_document_without_a_configmap_is_an_error() -> None:
    result = load_device_config("a: 1\n---\nb: 2\n")
    assert [e.path for e in result.errors] == ["config.yaml"]
    assert "expected exactly one" in result.errors[0].message


# --------------------------------------------------------------------------- resolution


def test_geometries_for_resolves_a100_80gb_to_its_entry() -> None:
    config = load("seed_000_config.yaml").config
    assert config is not None
    name = "NVIDIA A100-SXM4-80GB"
    for model in (match_model(name), None):
        geometries = config.geometries_for(name, model)
        assert geometries is not None
        assert [str(g) for g in geometries] == [
            "1g.10gb x7",
            "2g.20gb x3, 1g.10gb x1",
            "3g.40gb x2",
            "7g.79gb x1",
        ]
        assert geometries[1].memory == (20480, 10240)
        assert geometries[1].memory_of("1g.10gb") == 10240


@pytest.mark.parametrize(
    "name", ["NVIDIA H100 80GB HBM3", "NVIDIA B200", "NVIDIA RTX 4090"], ids=str
)
def test_geometries_for_unconfigured_model_is_none(name: str) -> None:
    config = load("seed_000_config.yaml").config
    assert config is not None
    assert config.geometries_for(name, match_model(name)) is None


def test_first_matching_entry_wins() -> None:
    config = valid(
        """
        nvidia:
          knownMigGeometries:
          - models: [A100-SXM4-80GB]
            allowedGeometries: [[{name: 7g.80gb, memory: 80896, count: 1}]]
          - models: [A100-80GB]
            allowedGeometries: [[{name: 4g.40gb, memory: 40960, count: 1}]]
        """
    )
    name = "NVIDIA A100-SXM4-80GB"
    assert config.geometries_for(name, match_model(name)) == [Geometry((("7g.80gb", 1),), (80896,))]
    other = "NVIDIA A100 80GB PCIe"
    assert config.geometries_for(other, match_model(other)) == [
        Geometry((("4g.40gb", 1),), (40960,))
    ]


def test_geometry_counts_sum_repeated_names() -> None:
    geometry = Geometry((("1g.5gb", 3), ("2g.10gb", 1), ("1g.5gb", 2)), (5120, 10240, None))
    assert geometry.counts == {"1g.5gb": 5, "2g.10gb": 1}
    assert geometry.memory_of("2g.10gb") == 10240
    assert geometry.memory_of("7g.40gb") is None
    with pytest.raises(ValueError, match="one value per profile"):
        Geometry((("1g.5gb", 1),), (1, 2))


def test_request_defaults_carry_the_configured_values() -> None:
    config = valid(
        """
        nvidia:
          resourceCountName: example.com/gpu
          resourceMemoryName: example.com/gpumem
          resourceMemoryPercentageName: example.com/gpumem-percentage
          resourceCoreName: example.com/gpucores
          resourcePriorityName: example.com/priority
          defaultMemory: 2048
          defaultCores: 30
          defaultGPUNum: 2
        """
    )
    assert config.request_defaults() == RequestDefaults(
        resource_count="example.com/gpu",
        resource_memory="example.com/gpumem",
        resource_memory_percentage="example.com/gpumem-percentage",
        resource_cores="example.com/gpucores",
        resource_priority="example.com/priority",
        default_memory=2048,
        default_cores=30,
        default_gpu_num=2,
    )


# --------------------------------------------------------------------------- summary


def test_summary_of_a_valid_config() -> None:
    text = summarize(load("seed_001_config.yaml"))
    assert "valid device configuration" in text
    assert "A100-SXM4-40GB, A100-40GB-PCIe, A100-PCIE-40GB: 4 geometries" in text
    assert "2g.10gb x3, 1g.5gb x1" in text
    assert "any valid layout (no configured geometries): H100-SXM5-80GB" in text
    assert "defaultMemory 0 MiB" in text
    assert "deviceSplitCount 10" in text
    assert "3 warnings" in text


def test_summary_of_an_invalid_config() -> None:
    result = load_device_config("nvidia: {defaultMemory: -1}", "x.yaml")
    assert summarize(result) == "x.yaml: invalid device configuration (1 error)"


def test_config_issue_str_without_path() -> None:
    assert str(ConfigIssue("", "broken")) == "broken"


# --------------------------------------------------------------------------- robustness

_scalars = st.none() | st.booleans() | st.integers(-5, 50) | st.floats(-2, 2) | st.text(max_size=8)
_keys = st.sampled_from(
    ["nvidia", "knownMigGeometries", "models", "allowedGeometries", "name", "memory", "count",
     "defaultMemory", "kind", "data", "config.yaml", "A30", "1g.6gb"]
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_any_yaml_document_gives_a_result_never_an_exception(value: object) -> None:
    result = load_device_config(yaml.safe_dump(value))
    assert (result.config is None) == bool(result.errors)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_result_never_an_exception(text: str) -> None:
    result = load_device_config(text)
    assert (result.config is None) == bool(result.errors)


def test_flat_list_with_a_malformed_entry_keeps_the_other_geometries() -> None:
    result = load_device_config(
        a100_40(
            """
            - {name: 1g.5gb, memory: 5120, count: 7}
            - {name: 2g.10gb, memory: 10240, count: 0}
            - {name: 3g.20gb, memory: 20480, count: 2}
            - {name: 7g.40gb, memory: 40960, count: 1}
            """
        )
    )
    assert [e.path for e in result.errors] == [
        "nvidia.knownMigGeometries[0].allowedGeometries[1].count"
    ]
    assert "geometry 1 of A100-SXM4-40GB" in result.errors[0].message
    assert "read as 4 geometries" in result.warnings[0].message
