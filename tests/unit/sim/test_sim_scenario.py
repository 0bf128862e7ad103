"""Scenario files of `migweaver simulate`: what is accepted, and how mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from migweaver.sim.scenario import ScenarioError, load_scenario, load_scenario_text, parse_duration

ROOT = Path(__file__).resolve().parents[3]

MINIMAL = """
name: tiny
nodes:
- {name: node, mode: mig, gpus: [{model: A100-SXM4-80GB}]}
pods:
- duration: 1h
  pod:
    metadata: {name: p}
    spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpumem: 8000}}}]}
"""


def test_a_minimal_scenario_gets_the_documented_defaults() -> None:
    loaded = load_scenario_text(MINIMAL, "tiny.yaml")
    scenario = loaded.scenario
    assert (scenario.batch_window, scenario.reconfigure_seconds, scenario.end) == (10, 20, None)
    assert loaded.config is None
    (pod,) = loaded.pods
    assert (pod.key, pod.arrival, pod.duration) == ("default/p", 0.0, 3600.0)
    assert pod.manifest["metadata"]["creationTimestamp"] == "2024-05-01T00:00:00Z"
    assert pod.demand.containers[0].memory_mib == 8000


def test_groups_expand_into_named_copies_in_arrival_order() -> None:
    text = MINIMAL.replace(
        "- duration: 1h\n", "- at: 1m\n  every: 30s\n  count: 3\n  duration: 1h\n"
    )
    loaded = load_scenario_text(text, "tiny.yaml")
    assert [(p.key, p.arrival) for p in loaded.pods] == [
        ("default/p-1", 60.0),
        ("default/p-2", 90.0),
        ("default/p-3", 120.0),
    ]
    assert loaded.pods[2].demand.created == "2024-05-01T00:02:00Z"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(90, 90.0, id="int-seconds"),
        pytest.param(1.5, 1.5, id="float-seconds"),
        pytest.param("45s", 45.0, id="seconds"),
        pytest.param("15m", 900.0, id="minutes"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("1.5d", 129600.0, id="days"),
        pytest.param("30", 30.0, id="bare-number-string"),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(("name: tiny", "name: tiny\ncolour: red"), "bad.yaml: colour: unknown key",
                     id="unknown-top-level-key"),
        pytest.param(("A100-SXM4-80GB", "A200"), "bad.yaml: nodes[0].gpus[0].model: unknown "
                     "model 'A200'", id="unknown-model"),
        pytest.param(("mode: mig", "mode: mps"), "bad.yaml: nodes[0].mode: Input should be "
                     "'mig' or 'hami-core'", id="bad-mode"),
        pytest.param(("mode: mig, ", ""), "bad.yaml: nodes[0].mode: Field required",
                     id="mode-is-required"),
        pytest.param(("duration: 1h", "duration: soon"), "bad.yaml: pods[0].duration: expected "
                     "seconds or a duration", id="bad-duration"),
        pytest.param(("duration: 1h", "duration: 0"), "bad.yaml: pods[0].duration: Input should "
                     "be greater than 0", id="zero-duration"),
        pytest.param(("duration: 1h", "duration: 1h\n  at: -5"), "bad.yaml: pods[0].at: Input "
                     "should be greater than or equal to 0", id="negative-arrival"),
        pytest.param(("duration: 1h", "duration: 1h\n  count: two"), "bad.yaml: pods[0].count: "
                     "Input should be a valid integer", id="count-not-a-number"),
        pytest.param(("duration: 1h", "duration: 1h\n  durtion: 2h"), "bad.yaml: pods[0].durtion:"
                     " unknown key", id="typo-in-a-group"),
        pytest.param(("nvidia.com/gpumem: 8000", "nvidia.com/gpumem: 8Gi"),
                     'bad.yaml: pods[0].pod.spec.containers[0].resources.limits["nvidia.com/'
                     'gpumem"]', id="bad-pod-request"),
        pytest.param(("{nvidia.com/gpumem: 8000}", "{cpu: 1}"), "bad.yaml: pods[0].pod.spec."
                     "containers: the pod asks for no GPU", id="pod-without-gpu"),
        pytest.param(("{name: p}", "{name: p, creationTimestamp: '2024-01-01T00:00:00Z'}"),
                     "bad.yaml: pods[0].pod.metadata.creationTimestamp: set by the simulation",
                     id="creation-timestamp-given"),
        pytest.param(("{name: p}", "{namespace: x}"), "bad.yaml: pods[0].pod.metadata.name: "
                     "required", id="pod-without-name"),
        pytest.param(("name: tiny", "name: tiny\ndeviceConfig: missing.yaml"), "bad.yaml: "
                     "deviceConfig: cannot read missing.yaml", id="missing-device-config"),
        pytest.param(("name: tiny", "name: tiny\nstart: yesterday"), "bad.yaml: start: "
                     "expected an RFC 3339 time", id="bad-start"),
        pytest.param(("pods:", "pods: []\nx:"), "bad.yaml: pods: List should have at least 1",
                     id="no-pods"),
        pytest.param(("name: tiny", "name: [tiny"), "bad.yaml:3:6: invalid YAML",
                     id="invalid-yaml"),
        pytest.param(("name: tiny", "name: tiny\nwhen: 2024-13-01"), "bad.yaml: invalid YAML: "
                     "month must be in 1..12", id="impossible-date"),
        pytest.param(("name: tiny", "name: " + "[" * 5000 + "]" * 5000), "bad.yaml: invalid "
                     "YAML: nested too deeply", id="nested-too-deeply"),
        pytest.param(("name: tiny", "name: tiny\n---\nname: other"), "bad.yaml: expected a "
                     "mapping with name, nodes and pods, got 2 YAML documents",
                     id="two-documents"),
        pytest.param(("duration: 1h", "duration: 1h\n  at: 1.0e+12"), "bad.yaml: pods[0].at: "
                     "the pods would arrive 1e+12 s after the start, later than a "
                     "creationTimestamp can be", id="arrival-after-year-9999"),
        pytest.param(("duration: 1h", "duration: 1h\n  every: 1.0e+12\n  count: 2"),
                     "bad.yaml: pods[0].every: the pods would arrive 1e+12 s after the start",
                     id="last-copy-after-year-9999"),
    ],
)  # fmt: skip
def test_bad_scenarios_name_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = MINIMAL.replace(*change, 1)
    assert text != MINIMAL
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "bad.yaml", base=tmp_path)
    assert any(message in error for error in caught.value.errors), caught.value.errors


def test_duplicate_nodes_and_pods_are_refused() -> None:
    text = MINIMAL.replace(
        "- {name: node, mode: mig, gpus: [{model: A100-SXM4-80GB}]}",
        "- {name: node, mode: mig, count: 2, gpus: [{model: A100-SXM4-80GB}]}\n"
        "- {name: node-2, mode: mig, gpus: [{model: A100-SXM4-80GB}]}",
    )
    text += text[text.index("- duration") :]
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "dup.yaml")
    errors = caught.value.errors
    assert "dup.yaml: nodes[1].name: node 'node-2' is also defined by nodes[0]" in errors
    assert "dup.yaml: pods[1].pod.metadata.name: pod default/p is also defined by pods[0]" in (
        errors
    )


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_device_config_is_read_relative_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("nvidia:\n  defaultMemory: 1234\n", encoding="utf-8")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(MINIMAL.replace("name: tiny", "name: tiny\ndeviceConfig: config.yaml"))
    loaded = load_scenario(scenario)
    assert loaded.config is not None
    assert loaded.config.nvidia.default_memory == 1234


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "scenarios").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_scenario_loads_with_the_shipped_geometries(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.config is not None
    assert loaded.config.nvidia.known_mig_geometries
    assert loaded.pods


def test_an_invalid_device_config_is_named_once(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("nvidia: [\n")
    text = MINIMAL.replace("name: tiny", "name: tiny\ndeviceConfig: cfg.yaml", 1)
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "bad.yaml", base=tmp_path)
    (error,) = caught.value.errors
    assert error.startswith("bad.yaml: deviceConfig: cfg.yaml: invalid YAML at line 2"), error
