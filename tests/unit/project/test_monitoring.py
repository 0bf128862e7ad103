"""The shipped Grafana dashboard and PrometheusRule: valid, and about series migweaver exports.

`tests/e2e/test_prometheus_e2e.py` evaluates every query on a real Prometheus; these
checks need nothing but the files (and `promtool`, where installed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from migweaver.agent.metrics import AgentMetrics
from migweaver.operator.metrics import OperatorMetrics

MONITORING = Path(__file__).resolve().parents[3] / "manifests" / "components" / "monitoring"
DASHBOARD = MONITORING / "migweaver-dashboard.json"
RULES = MONITORING / "prometheusrule.yaml"
# Series from Prometheus itself that queries may use.
PROMETHEUS_SERIES = {"up"}
# A word in a query that names a series: ours (migweaver_*), HAMi's names we keep.
SERIES = re.compile(r"\b(migweaver_[a-z0-9_]+|nodeGPUMigInstance|hami_[a-z0-9_]+|GPUDevice\w+)\b")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def rules() -> list[dict[str, Any]]:
    (doc,) = yaml.safe_load_all(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def exported() -> set[str]:
    """Every series name the operator's and an agent's registries can export."""
    names: set[str] = set()
    for registry in (OperatorMetrics().registry, AgentMetrics("n1").registry):
        for family in registry.collect():
            names.add(family.name)
            kind = family.type
            if kind == "counter":
                names.add(f"{family.name}_total")
            if kind == "histogram":
                names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
    return names


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    (doc,) = yaml.safe_load_all(RULES.read_text(encoding="utf-8"))
    plain = tmp_path / "rules.yaml"
    plain.write_text(yaml.safe_dump(doc["spec"]), encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "rules", str(plain)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@pytest.mark.parametrize(
    "alert",
    [
        "MigweaverGpuPodWaiting",
        "MigweaverLayoutFailed",
        "MigweaverLayoutNotConverged",
        "MigweaverAgentDown",
        "MigweaverAgentNotReporting",
        "MigweaverNvmlErrorsRising",
        "MigweaverCatalogMismatch",
        "MigweaverOperatorWithoutLeader",
    ],
)
def test_the_alerts_a_gpu_platform_team_needs_exist(alert: str) -> None:
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]


def test_every_panel_has_a_query_and_a_place() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def queries() -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
    return found + [(r["alert"], str(r["expr"])) for r in rules()]


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[w for w, _ in queries()])
def test_queries_name_only_series_migweaver_exports(where: str, expr: str) -> None:
    unknown = set(SERIES.findall(expr)) - exported() - PROMETHEUS_SERIES
    assert not unknown, f"{where}: {sorted(unknown)} are not exported"


def test_hami_series_keep_hamis_names() -> None:
    used = {name for _, expr in queries() for name in SERIES.findall(expr)}
    assert {"nodeGPUMigInstance", "GPUDeviceSharedNum", "GPUDeviceMemoryAllocated"} <= used
