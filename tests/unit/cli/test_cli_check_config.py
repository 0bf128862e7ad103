"""`migweaver check-config FILE`: exit 0 with a summary, or 1 with every error listed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from migweaver.cli import main

ROOT = Path(__file__).parents[3]
DATA = Path(__file__).parents[1] / "data"
MANIFEST = ROOT / "manifests" / "device-config.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check-config", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize(
    "path",
    [MANIFEST, DATA / "seed_000_config.yaml", DATA / "seed_001_config.yaml"],
    ids=["shipped-manifest", "seed-000", "seed-001"],
)
def test_valid_config_exits_0_with_a_summary(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    code, out, err = run(capsys, str(path))
    assert code == 0
    assert f"{path}: valid device configuration" in out
    assert "1g.5gb x7" in out
    assert "defaultGPUNum 1" in out
    assert "error:" not in err


def test_warnings_are_printed_with_their_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(DATA / "seed_001_config.yaml"))
    assert code == 0
    assert "warning: nvidia.knownMigGeometries[1].allowedGeometries: " in err
    assert "flat list" in err


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(MANIFEST.read_text(encoding="utf-8")))
    code, out, _ = run(capsys, "-")
    assert code == 0
    assert "<stdin>: valid device configuration" in out


def test_stdin_that_is_not_utf8_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"nvidia: {}\n\xff\xfe\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    code, out, err = run(capsys, "-")
    assert code == 1
    assert out == ""
    assert err.startswith("error: cannot read -: 'utf-8' codec can't decode"), err


INVALID = {
    "unknown-profile": (
        "nvidia:\n  knownMigGeometries:\n  - models: [A100-SXM4-40GB]\n"
        "    allowedGeometries: [[{name: 3g.21gb, memory: 20480, count: 2}]]\n",
        "error: nvidia.knownMigGeometries[0].allowedGeometries[0][0].name: geometry 0 of "
        "A100-SXM4-40GB: unknown profile '3g.21gb'",
    ),
    "overflow": (
        "nvidia:\n  knownMigGeometries:\n  - models: [A100-SXM4-40GB]\n"
        "    allowedGeometries:\n"
        "    - [{name: 3g.20gb, memory: 20480, count: 2},\n"
        "       {name: 1g.5gb, memory: 5120, count: 1}]\n",
        "geometry 0 of A100-SXM4-40GB (3g.20gb x2, 1g.5gb x1) does not fit on 8 memory slots",
    ),
    "count-zero": (
        "nvidia:\n  knownMigGeometries:\n  - models: [A30]\n"
        "    allowedGeometries: [[{name: 1g.6gb, memory: 6144, count: 0}]]\n",
        "error: nvidia.knownMigGeometries[0].allowedGeometries[0][0].count:",
    ),
    "negative-defaultMemory": (
        "nvidia:\n  defaultMemory: -1\n",
        "error: nvidia.defaultMemory: must be at least 0 (got -1)",
    ),
    "malformed-yaml": (
        "nvidia:\n  defaultMemory: 0\n   defaultCores: 1\n",
        "invalid YAML at line 3",
    ),
    "helm-template": (
        "nvidia:\n  resourceCountName: {{ .Values.resourceName }}\n",
        "Helm template",
    ),
    "configmap-without-config-yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migweaver-device-config}\n"
        "data:\n  other.yaml: x\n",
        "error: data: ConfigMap 'migweaver-device-config' has no key 'config.yaml' (nor HAMi's "
        "'device-config.yaml') in data "
        "(its keys: 'other.yaml')",
    ),
    "wrong-type": (
        "nvidia:\n  knownMigGeometries:\n  - models: A30\n"
        "    allowedGeometries: [[{name: 1g.6gb, memory: 6144, count: 4}]]\n",
        "error: nvidia.knownMigGeometries[0].models: expected a list (got 'A30')",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_config_exits_1_with_the_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, str(path))
    assert code == 1
    assert expected in err
    assert "invalid device configuration" in err
    assert out == ""


def test_every_error_is_printed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("nvidia:\n  defaultMemory: -1\n  deviceSplitCount: 0\n", encoding="utf-8")
    code, _, err = run(capsys, str(path))
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: nvidia.defaultMemory: must be at least 0 (got -1)",
        "error: nvidia.deviceSplitCount: must be at least 1 (got 0)",
    ]
    assert "(2 errors)" in err


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_unreadable_file_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    if kind == "missing":
        path = tmp_path / "nope.yaml"
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "binary.yaml"
        path.write_bytes(b"nvidia: \xff\xfe\n")
    code, out, err = run(capsys, str(path))
    assert code == 1
    assert err.startswith(f"error: cannot read {path}: ")
    assert out == ""
