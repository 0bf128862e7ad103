"""`migweaver plan`: the documented output on examples/, JSON, and bad inputs (exit 1)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from migweaver.cli import main

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "planner.md"
CLUSTER = "examples/cluster.yaml"
PODS = "examples/pods.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def documented() -> list[tuple[list[str], str]]:
    """Every `<!-- plan-output: COMMAND -->` block of docs/planner.md and its text."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- plan-output: (.+?) -->\n```text\n(.*?)\n```", text, re.S)
    return [(shlex.split(command)[2:], output) for command, output in blocks]


def test_docs_show_two_plan_outputs() -> None:
    assert len(documented()) == 2


@pytest.mark.parametrize("index", [0, 1], ids=["no-config", "shipped-geometries"])
def test_plan_on_the_examples_gives_the_documented_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    monkeypatch.chdir(ROOT)
    argv, expected = documented()[index]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.rstrip("\n") == expected


def test_plan_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(capsys, "--cluster", CLUSTER, "--pods", PODS, "--json")
    assert code == 0
    data = json.loads(out)
    seed = data["pods"]["default/gpu-pod"]
    devices = seed["containers"][0]["devices"]
    assert seed["node"] == "mig-node-a"
    assert len(devices) == 2
    assert all(d["memoryMiB"] >= 8000 and d["mode"] == "mig" for d in devices)
    assert data["pods"]["ml/too-big"]["placed"] is False
    assert "web/typo" in data["invalid"]
    gpu0 = next(g for g in data["layouts"] if (g["node"], g["gpuIndex"]) == ("mig-node-a", 0))
    assert gpu0["before"] == [{"profile": "3g.40gb", "placement": {"start": 0, "size": 4}}]
    assert gpu0["instances"][0] == gpu0["before"][0]
    h100 = next(g for g in data["layouts"] if g["node"] == "h100-node")
    assert h100["migEnabled"] is True


BAD_CLUSTERS = {
    "malformed-yaml": ("nodes: [\n", "cluster.yaml:2:1: invalid YAML"),
    "not-a-mapping": ("- a\n", "cluster.yaml: expected one mapping with a `nodes:` list"),
    "unknown-model": (
        "nodes: [{name: a, mode: mig, gpus: [{model: A200}]}]",
        "cluster.yaml: nodes[0].gpus[0].model: unknown model 'A200' (known: A30-24GB,",
    ),
    "bad-mode": (
        "nodes: [{name: a, mode: MIG}]",
        "cluster.yaml: nodes[0].mode: expected mig or hami-core, got 'MIG'",
    ),
    "unknown-key": (
        "nodes: [{name: a, gpus: [{model: A30, cout: 2}]}]",
        "cluster.yaml: nodes[0].gpus[0].cout: unknown key",
    ),
    "unknown-top-level-key": (
        "nodes: []\nnode: []",
        "cluster.yaml: node: unknown key (expected: nodes, now)",
    ),
    "unknown-instance-key": (
        "nodes: [{name: a, gpus: [{model: A30, instances: [{profile: 1g.6gb, placement: 0, "
        "inuse: true}]}]}]",
        "cluster.yaml: nodes[0].gpus[0].instances[0].inuse: unknown key (expected: profile, "
        "placement, inUse, pod, uuid)",
    ),
    "huge-count": (
        "nodes: [{name: a, gpus: [{model: A30, count: 1000000000}]}]",
        "cluster.yaml: nodes[0].gpus[0].count: expected a whole number from 1 to 64, "
        "got 1000000000",
    ),
    "bad-profile": (
        "nodes: [{name: a, gpus: [{model: A30, instances: [{profile: 3g.40gb, placement: 0}]}]}]",
        "cluster.yaml: nodes[0].gpus[0].instances[0].profile: '3g.40gb' is not a profile of "
        "A30-24GB",
    ),
    "overlap": (
        "nodes: [{name: a, gpus: [{model: A100-SXM4-80GB, instances: "
        "[{profile: 3g.40gb, placement: 0}, {profile: 1g.10gb, placement: 2}]}]}]",
        "cluster.yaml: nodes[0].gpus[0].instances: instance 1 (1g.10gb@2:1) overlaps",
    ),
    "bad-share": (
        "nodes: [{name: a, gpus: [{model: A30, shares: [{pod: x/y, cores: 200}]}]}]",
        "cluster.yaml: nodes[0].gpus[0].shares[0].cores: expected 0 to 100, got 200",
    ),
    "duplicate-node": (
        "nodes: [{name: a}, {name: a}]",
        "cluster.yaml: nodes[1].name: duplicate node name 'a'",
    ),
    "bad-now": ("now: yesterday\nnodes: []", "cluster.yaml: now: expected an RFC 3339 time"),
    "impossible-date": (
        "now: 2024-13-01\nnodes: []",
        "cluster.yaml: invalid YAML: month must be in 1..12",
    ),
    "nested-too-deeply": (
        "nodes: " + "[" * 5000 + "]" * 5000,
        "cluster.yaml: invalid YAML: nested too deeply",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CLUSTERS), ids=list(BAD_CLUSTERS))
def test_bad_cluster_file_exits_1_naming_file_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    text, message = BAD_CLUSTERS[case]
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(text)
    pods = tmp_path / "pods.yaml"
    pods.write_text("")
    code, out, err = run(capsys, "--cluster", str(cluster), "--pods", str(pods))
    assert code == 1
    assert out == ""
    assert f"error: {tmp_path}/{message}" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata: [\n", "pods.yaml:3:1: invalid YAML"),
        ("kind: Deployment\n", "pods.yaml: document 1.kind: expected Pod, got 'Deployment'"),
        ("--- 3\n", "pods.yaml: document 1: expected a Pod manifest, got int 3"),
        (
            "kind: Pod\nmetadata: {name: p, creationTimestamp: 2024-02-30T00:00:00Z}\n",
            "pods.yaml: invalid YAML: day is out of range for month",
        ),
    ],
    ids=["malformed-yaml", "not-a-pod", "not-a-mapping", "impossible-date"],
)
def test_bad_pods_file_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    pods = tmp_path / "pods.yaml"
    pods.write_text(text)
    code, _, err = run(capsys, "--cluster", str(ROOT / CLUSTER), "--pods", str(pods))
    assert code == 1
    assert f"error: {tmp_path}/{message}" in err


def test_missing_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--cluster", str(tmp_path / "nope.yaml"), "--pods", str(ROOT / PODS))
    assert code == 1
    assert f"error: cannot read {tmp_path}/nope.yaml" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nvidia: {deviceSplitCount: 0}\n", "nvidia.deviceSplitCount: must be at least 1"),
        # A problem of the file as a whole: the file is still named once.
        ("nvidia: [\n", "invalid YAML at line 2, column 1: "),
    ],
    ids=["bad-value", "invalid-yaml"],
)
def test_bad_config_exits_1_naming_the_file_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    cluster, pods = str(ROOT / CLUSTER), str(ROOT / PODS)
    code, _, err = run(capsys, "--cluster", cluster, "--pods", pods, "--config", str(config))
    assert code == 1
    assert err.startswith(f"error: {config}: {message}"), err


def test_an_invalid_pod_is_reported_not_a_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pods = tmp_path / "pods.yaml"
    pods.write_text(
        "kind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n"
        "  - name: c\n    resources: {limits: {nvidia.com/gpu: -1}}\n"
        "---\nkind: Pod\nmetadata: {name: cpu-only}\nspec: {containers: [{name: c}]}\n"
    )
    code, out, _ = run(capsys, "--cluster", str(ROOT / CLUSTER), "--pods", str(pods))
    assert code == 0
    assert "INVALID: 1 pod\ndefault/bad: spec.containers[0].resources.limits" in out
    assert "SKIPPED (no GPU asked): default/cpu-only" in out
