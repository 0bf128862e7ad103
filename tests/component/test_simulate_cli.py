"""`migweaver simulate`: exit codes, the JSON shape, errors without tracebacks, and every
shipped scenario (its first hours: the whole days are for `make demo` and `make bench`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from migweaver.cli import main
from migweaver.sim.engine import run_simulation
from migweaver.sim.policies import POLICIES, policy_named
from migweaver.sim.scenario import load_scenario
from tests.component.sim_helpers import DIFFERENCE, ROOT

SCENARIOS = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def difference(tmp_path: Path) -> Path:
    path = tmp_path / "difference.yaml"
    path.write_text(DIFFERENCE, encoding="utf-8")
    return path


def test_text_report(capsys: pytest.CaptureFixture[str], difference: Path) -> None:
    code, out, _ = run(capsys, str(difference))
    assert code == 0
    assert out.startswith("SCENARIO     difference (policy migweaver): 1h00m simulated, ")
    assert "PODS         6 of 7 placed; 1 not placed by the end" in out
    assert "default/half-b-2: no eligible GPU has a free placement for 3g.40gb" in out


def test_json_report_shape(capsys: pytest.CaptureFixture[str], difference: Path) -> None:
    code, out, _ = run(capsys, str(difference), "--json", "--policy", "hami-legacy")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {
        "scenario", "policy", "horizonSeconds", "gpus", "pods", "pendingSeconds",
        "utilisation", "reconfigurations", "notPlaced", "placedPods",
    }  # fmt: skip
    assert (data["scenario"], data["policy"], data["gpus"]) == ("difference", "hami-legacy", 2)
    assert data["pods"] == {"total": 7, "placed": 4, "notPlaced": 3}
    assert set(data["pendingSeconds"]) == {"p50", "p95", "max", "mean"}
    assert set(data["utilisation"]) == {"memoryAllocated", "memoryRequested", "compute",
                                        "timeline"}  # fmt: skip
    assert {n["code"] for n in data["notPlaced"]} == {"NoRoom"}
    device = data["placedPods"][0]["devices"][0]
    assert set(device) == {"gpu", "mode", "profile", "placement", "memoryMiB", "requestedMiB"}


def test_compare_prints_both_policies_side_by_side(
    capsys: pytest.CaptureFixture[str], difference: Path
) -> None:
    code, out, _ = run(capsys, str(difference), "--compare", "hami-legacy")
    assert code == 0
    comparison = out[out.index("COMPARED WITH hami-legacy") :].splitlines()
    assert comparison[1].split() == ["migweaver", "hami-legacy"]
    placed = next(line for line in comparison if line.startswith("pods placed"))
    assert placed.split()[2:] == ["6", "of", "7", "4", "of", "7"]


def test_compare_in_json(capsys: pytest.CaptureFixture[str], difference: Path) -> None:
    code, out, _ = run(capsys, str(difference), "--json", "--compare", "hami-legacy")
    assert code == 0
    data = json.loads(out)
    assert (data["policy"], data["compared"]["policy"]) == ("migweaver", "hami-legacy")
    assert (data["pods"]["placed"], data["compared"]["pods"]["placed"]) == (6, 4)


def test_bad_scenario_exits_1_naming_file_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(DIFFERENCE.replace("A100-SXM4-80GB", "A200"), encoding="utf-8")
    code, out, err = run(capsys, str(path))
    assert (code, out) == (1, "")
    assert f"error: {path}: nodes[0].gpus[0].model: unknown model 'A200'" in err


def test_missing_scenario_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "cannot read" in err


def test_unknown_policy_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], difference: Path
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["simulate", str(difference), "--policy", "random"])
    assert caught.value.code == 2
    assert "invalid choice: 'random'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["occupancy.png", "occupancy.chart"])
def test_chart_is_written_as_png(
    capsys: pytest.CaptureFixture[str], difference: Path, tmp_path: Path, name: str
) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / name
    code, _, err = run(capsys, str(difference), "--chart", str(chart))
    assert code == 0
    assert f"wrote {chart}" in err
    # A PNG whatever the name ends with (matplotlib would refuse an unknown extension).
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_matplotlib_exits_1_before_the_run(
    capsys: pytest.CaptureFixture[str], difference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migweaver.sim import chart

    def unavailable() -> None:
        raise chart.ChartUnavailable("--chart needs matplotlib (No module named 'matplotlib')")

    monkeypatch.setattr(chart, "check_available", unavailable)
    code, out, err = run(capsys, str(difference), "--chart", "x.png")
    assert (code, out) == (1, "")
    assert "error: --chart needs matplotlib" in err


def test_examples_ship_three_scenarios() -> None:
    assert [p.stem for p in SCENARIOS] == ["burst", "mixed-day", "mixed-pool"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_runs(path: Path, policy: str) -> None:
    loaded = load_scenario(path)
    # The first hour: enough to start pods of every early group on real fake GPUs.
    first_hour = replace(loaded, scenario=loaded.scenario.model_copy(update={"end": 3600.0}))
    result = run_simulation(first_hour, policy_named(policy))
    assert sum(p.placed for p in result.pods) > 0
    assert result.failures == []
    assert result.start_failures == 0
