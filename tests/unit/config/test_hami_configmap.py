"""HAMi's own ConfigMap as it is, and keys nobody reads.

HAMi's scheduler reads ConfigMap `hami-scheduler-device`, key `device-config.yaml`: the
`nvidia:` block (with settings only HAMi uses) beside other vendors' blocks. Both seed
documents' `nvidia:` blocks, put there, load as they load bare. A key migweaver does not
read is a warning naming it and the nearest known key, never silently dropped.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from migweaver.cli import main
from migweaver.core.config import load_device_config
from migweaver.core.config.reload import ConfigInForce, reload
from migweaver.core.config.unknown_keys import HAMI_NVIDIA_KEYS, nearest_key

DATA = Path(__file__).parents[1] / "data"
SEEDS = ["seed_000_config.yaml", "seed_001_config.yaml"]

# What HAMi's chart puts beside and into the `nvidia:` block (its scheduler's settings,
# other vendors' devices); values as HAMi's chart renders them by default.
HAMI_NVIDIA_EXTRAS = {
    "preConfiguredDeviceMemory": 0,
    "memoryFactor": 1,
    "enableNumaTopology": False,
    "gpuCorePolicy": "default",
    "libCudaLogLevel": 1,
    "runtimeClassName": "",
}
HAMI_VENDORS = {
    "cambricon": {"resourceCountName": "cambricon.com/vmlu"},
    "hygon": {"resourceCountName": "hygon.com/dcunum", "memoryFactor": 1},
    "mthreads": {"resourceCountName": "mthreads.com/vgpu", "memoryPerCard": [96]},
    "iluvatars": [{"chipName": "MR-V100", "resourceCountName": "iluvatar.ai/MR-V100-vgpu"}],
    "vnpus": {"hamiVnpuCore": False, "configs": []},
}


def hami_configmap(seed: str, *, extras: bool = True) -> str:
    """HAMi's `hami-scheduler-device` ConfigMap holding a seed's `nvidia:` block."""
    document = yaml.safe_load((DATA / seed).read_text(encoding="utf-8"))
    if extras:
        document["nvidia"].update(HAMI_NVIDIA_EXTRAS)
        document.update(HAMI_VENDORS)
    block = textwrap.indent(yaml.safe_dump(document, sort_keys=False), "    ")
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hami-scheduler-device\n"
        "  namespace: kube-system\n  labels:\n    app.kubernetes.io/component: hami-scheduler\n"
        f"data:\n  device-config.yaml: |-\n{block}"
    )


@pytest.mark.parametrize("seed", SEEDS, ids=["seed-000", "seed-001"])
def test_hami_configmap_loads_as_the_bare_block_does(seed: str) -> None:
    bare = load_device_config((DATA / seed).read_text(encoding="utf-8"), seed)
    hami = load_device_config(hami_configmap(seed), "hami-scheduler-device.yaml")
    assert hami.ok, [str(e) for e in hami.errors]
    assert bare.config is not None
    assert hami.config is not None
    for model in ("A30", "A100-SXM4-40GB", "A100-SXM4-80GB"):
        assert hami.config.geometries_for(model, None) == bare.config.geometries_for(model, None)
    # Each HAMi setting migweaver does not use is named once; other vendors' blocks are not.
    named = {w.path: w.message for w in hami.warnings if w.path.startswith("nvidia.")}
    for key in HAMI_NVIDIA_EXTRAS:
        assert named[f"nvidia.{key}"] == "a HAMi setting migweaver does not use: ignored"
    assert not [w for w in hami.warnings if w.path.split(".")[0] in HAMI_VENDORS]


@pytest.mark.parametrize("seed", SEEDS, ids=["seed-000", "seed-001"])
def test_check_config_accepts_hami_configmap(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, seed: str
) -> None:
    path = tmp_path / "hami-scheduler-device.yaml"
    path.write_text(hami_configmap(seed), encoding="utf-8")
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "valid device configuration" in out
    assert "warning: nvidia.gpuCorePolicy: a HAMi setting migweaver does not use" in err
    # Named after the ConfigMap the operator reads, so a copy can be made under it.
    assert "the operator reads 'migweaver-device-config'" in err


@pytest.mark.parametrize(
    ("config", "path", "nearest"),
    [
        pytest.param(
            "nvidia:\n  knownMigGeomtries: []\n",
            "nvidia.knownMigGeomtries",
            "knownMigGeometries",
            id="nvidia-key",
        ),
        pytest.param(
            "nvidia:\n  deviceSplitcount: 4\n",
            "nvidia.deviceSplitcount",
            "deviceSplitCount",
            id="nvidia-key-case",
        ),
        pytest.param(
            "nvidia:\n  knownMigGeometries:\n  - models: [A30]\n    allowedGeometries:\n"
            "    - - {name: 1g.6gb, memory: 6144, count: 4}\n    modles: [A30]\n",
            "nvidia.knownMigGeometries[0].modles",
            "models",
            id="entry-key",
        ),
        pytest.param(
            "nvidia:\n  knownMigGeometries:\n  - models: [A30]\n    allowedGeometries:\n"
            "    - - {name: 1g.6gb, memroy: 6144, count: 4}\n",
            "nvidia.knownMigGeometries[0].allowedGeometries[0][0].memroy",
            "memory",
            id="geometry-item-key",
        ),
        pytest.param(
            "nvidia:\n  knownMigGeometries:\n  - models: [A30]\n    allowedGeometries:\n"
            "    - {name: 1g.6gb, memory: 6144, count: 4, cuont: 1}\n",
            "nvidia.knownMigGeometries[0].allowedGeometries[0].cuont",
            "count",
            id="flat-list-item-key",
        ),
        pytest.param("nvidia: {}\nnvidai: {}\n", "nvidai", "nvidia", id="top-level-key"),
    ],
)
def test_unknown_key_is_a_warning_with_the_nearest_known_key(
    config: str, path: str, nearest: str
) -> None:
    result = load_device_config(config, "config.yaml")
    assert result.ok, [str(e) for e in result.errors]
    (warning,) = [w for w in result.warnings if w.path == path]
    key = path.rsplit(".", 1)[-1]
    assert warning.message == (
        f"unknown key {key!r}, ignored; the nearest known key is {nearest!r}"
    )


def test_misspelled_key_is_printed_by_check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("nvidia:\n  knownMigGeomtries: []\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: nvidia.knownMigGeomtries: unknown key 'knownMigGeomtries', ignored; "
        "the nearest known key is 'knownMigGeometries'"
    ) in err


def test_shipped_configs_have_no_unknown_key() -> None:
    root = Path(__file__).parents[3]
    for path in (root / "manifests" / "device-config.yaml", *(DATA / s for s in SEEDS)):
        result = load_device_config(path.read_text(encoding="utf-8"), str(path))
        assert not [w for w in result.warnings if "unknown key" in w.message], path


def test_a_configmap_with_both_keys_is_refused() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migweaver-device-config}\n"
        "data:\n  config.yaml: 'nvidia: {}'\n  device-config.yaml: 'nvidia: {}'\n"
    )
    result = load_device_config(text, "cm.yaml")
    assert not result.ok
    assert "has both keys 'config.yaml' and 'device-config.yaml'; keep one" in str(result.errors[0])


def test_yaml_error_inside_device_config_yaml_points_at_the_file_line() -> None:
    text = hami_configmap(SEEDS[0], extras=False).replace("defaultCores: 0", "defaultCores: [")
    result = load_device_config(text, "hami.yaml")
    (error,) = result.errors
    assert error.path == "data['device-config.yaml']"
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "defaultCores: [" in t)
    assert f"line {line + 1}" in error.message or f"line {line}" in error.message


def configmap(data: dict[str, str], version: str) -> dict[str, object]:
    return {
        "metadata": {"name": "migweaver-device-config", "resourceVersion": version},
        "data": data,
    }


def test_operator_reload_takes_hami_key_and_carries_warnings() -> None:
    hami = yaml.safe_load(hami_configmap(SEEDS[0]))["data"]
    state, outcome = reload(ConfigInForce(), configmap(hami, "1"))
    assert outcome.outcome == "loaded"
    assert state.config.geometries_for("A30", None) is not None
    assert any("nvidia.gpuCorePolicy" in w for w in outcome.warnings)

    typo = {"device-config.yaml": "nvidia:\n  knownMigGeomtries: []\n"}
    _, outcome = reload(state, configmap(typo, "2"))
    assert outcome.outcome == "loaded"
    assert any("'knownMigGeomtries'" in w and "'knownMigGeometries'" in w for w in outcome.warnings)

    both = {"config.yaml": "nvidia: {}", "device-config.yaml": "nvidia: {}"}
    kept, outcome = reload(state, configmap(both, "3"))
    assert outcome.outcome == "invalid"
    assert kept.config == state.config  # the last valid configuration stays in force
    assert "keep one" in outcome.errors[0]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("knownMigGeomtries", "knownMigGeometries", id="transposed"),
        pytest.param("resourcecountname", "resourceCountName", id="case"),
        pytest.param("zzz", "", id="nothing-near-still-names-one"),
    ],
)
def test_nearest_key(key: str, expected: str) -> None:
    known = ["knownMigGeometries", "resourceCountName", "deviceSplitCount"]
    got = nearest_key(key, known)
    assert got == expected or (expected == "" and got in known)


def test_hami_settings_are_not_migweaver_fields() -> None:
    # A HAMi setting that migweaver starts to read must leave the "not used" list.
    from migweaver.core.config.unknown_keys import NVIDIA_KEYS

    assert set(NVIDIA_KEYS).isdisjoint(HAMI_NVIDIA_KEYS)
