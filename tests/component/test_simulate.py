"""The simulator end to end: real planner (or HAMi's legacy rules), real reconciler, fake
GPUs. What users rely on: pods run on instances big enough for them, nothing in use is
ever destroyed, a scenario always gives the same report, and the comparison is fair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from migweaver.agent.backends.fake import FakeBackend
from migweaver.core.planning.plan import Assignment
from migweaver.sim.engine import Simulation, _Pod, run_simulation
from migweaver.sim.policies import HamiLegacyPolicy, MigweaverPolicy, Policy, policy_named
from migweaver.sim.report import report_json
from migweaver.sim.results import SimResult
from migweaver.sim.scenario import LoadedScenario, load_scenario_text
from tests.component.sim_helpers import DIFFERENCE, hami_node, mig_node, pod_group, scenario

# Pods of every size arrive and leave on two MIG GPUs and one hami-core GPU; the small
# ones keep coming while large ones wait, so GPUs are repartitioned around busy instances.
CHURN = scenario(
    mig_node(gpus=2) + hami_node(gpus=1),
    pod_group("small", 8000, every="2m", count=20, duration="20m", mode="mig")
    + pod_group("any", 4000, at="1m", every="5m", count=8, duration="30m")
    + pod_group("medium", 18000, at="3m", every="7m", count=5, duration="25m", mode="mig")
    + pod_group("half", 30000, at="10m", every="10m", count=3, duration="30m")
    + pod_group("whole", 70000, at="20m", count=1, duration="20m", mode="mig")
    + pod_group("pair", 8000, at="15m", gpus=2, duration="20m", mode="mig")
    + pod_group("share", 10000, at="4m", every="9m", count=4, duration="15m", cores=20,
                mode="hami-core"),
)  # fmt: skip


def loaded(text: str) -> LoadedScenario:
    return load_scenario_text(text, "test.yaml")


def simulate(text: str, policy: Policy) -> tuple[Simulation, SimResult]:
    sim = Simulation(loaded(text), policy)
    return sim, sim.run()


POLICIES = [pytest.param(MigweaverPolicy(), id="migweaver"),
            pytest.param(HamiLegacyPolicy(), id="hami-legacy")]  # fmt: skip


@pytest.mark.parametrize("policy", POLICIES)
def test_every_pod_is_placed_and_ends(policy: Policy) -> None:
    _, result = simulate(CHURN, policy)
    assert all(p.placed for p in result.pods), [p.reason for p in result.pods if not p.placed]
    assert all(p.ended is not None for p in result.pods)
    assert result.failures == []
    assert result.start_failures == 0


def test_every_placed_pod_ran_on_a_device_of_at_least_its_memory() -> None:
    _, result = simulate(CHURN, MigweaverPolicy())
    devices = [d for p in result.pods for d in p.devices]
    assert len(devices) == len(result.pods) + 1  # the pair has two
    for device in devices:
        assert device.memory_mib >= device.requested_mib, device
    modes = {d.mode for d in devices}
    assert modes == {"mig", "hami-core"}


def destroy_calls(backend: FakeBackend) -> list[tuple[str, tuple[object, ...], str | None]]:
    return [
        (c.name, c.args, c.error)
        for c in backend.calls
        if c.name in ("destroy_gpu_instance", "destroy_compute_instance")
    ]


@pytest.mark.parametrize("policy", POLICIES)
def test_no_instance_in_use_is_ever_destroyed(policy: Policy) -> None:
    sim, result = simulate(CHURN, policy)
    backends = sim.fleet.backends.values()
    # The fake refuses (InUse) to destroy an instance a process runs on, and the reconciler
    # refuses busy ones before NVML is asked: neither may ever have happened.
    for backend in backends:
        assert all(error is None for _, _, error in destroy_calls(backend))
        assert all(c.error is None for c in backend.calls if c.mutating)
    assert result.failures == []
    # The run did repartition GPUs (otherwise the check above would prove nothing).
    assert sum(len(destroy_calls(b)) for b in backends) > 0


class PromiseChecked(Simulation):
    """Records the GPU instance (GI id) each pod was promised when it was planned, and
    checks the pod starts on that very instance: a reserved instance that had been
    destroyed and re-created in between would have a new id or none."""

    def __init__(self, loaded: LoadedScenario, policy: Policy) -> None:
        super().__init__(loaded, policy)
        self.promised: dict[str, list[int]] = {}
        self.checked = 0

    def _gi_ids(self, pod: _Pod) -> list[int]:
        assert pod.assignment is not None
        ids = []
        for device in pod.assignment.devices:
            if device.placement is not None:
                gpu = self.fleet.gpus[device.gpu_key]
                ids.append(gpu.backend.gi_ids(gpu.index)[device.placement])
        return ids

    def _reserve(self, pod: _Pod, assignment: Assignment) -> None:
        super()._reserve(pod, assignment)
        if pod.state == "starting":
            self.promised[pod.pod.key] = self._gi_ids(pod)

    def _start(self, pod: _Pod) -> None:
        assert self._gi_ids(pod) == self.promised[pod.pod.key], pod.pod.key
        self.checked += 1
        super()._start(pod)


@pytest.mark.parametrize("policy", POLICIES)
def test_pods_start_on_the_instance_they_were_promised(policy: Policy) -> None:
    sim = PromiseChecked(loaded(CHURN), policy)
    result = sim.run()
    assert sim.checked == len(result.pods)


def test_the_same_scenario_gives_the_same_report() -> None:
    first = report_json(run_simulation(loaded(CHURN), MigweaverPolicy()))
    second = report_json(run_simulation(loaded(CHURN), MigweaverPolicy()))
    assert first == second


def test_migweaver_places_more_pods_than_hami_legacy_where_templates_waste_space() -> None:
    scenario_ = loaded(DIFFERENCE)
    mine = run_simulation(scenario_, MigweaverPolicy())
    theirs = run_simulation(scenario_, HamiLegacyPolicy())
    placed = {r.policy: sum(p.placed for p in r.pods) for r in (mine, theirs)}
    assert placed == {"migweaver": 6, "hami-legacy": 4}
    # HAMi gave a whole 3g.40gb to the first 8000 MiB pod.
    small = next(p for p in theirs.pods if p.key == "default/small-a")
    assert [(d.profile, d.requested_mib) for d in small.devices] == [("3g.40gb", 8000)]


def test_pods_wait_for_the_batch_window_and_for_new_instances() -> None:
    text = scenario(mig_node(gpus=1), pod_group("p", 8000, at="1m"))
    result = run_simulation(loaded(text), MigweaverPolicy())
    (pod,) = result.pods
    # Arrives at 60 s, planned at 70 s (10 s window), starts 20 s later (new instance).
    assert (pod.arrival, pod.started, pod.ended) == (60.0, 90.0, 3690.0)
    assert result.reconfigurations == 1
    assert result.instances_created == 1


def test_a_whole_gpu_pod_gets_7g_under_the_shipped_geometries() -> None:
    # The shipped config names A100-80GB's whole-GPU profile 7g.79gb (HAMi's spelling),
    # while the agent reports NVML's 7g.80gb: the snapshot must match the two.
    text = scenario(mig_node(gpus=1), pod_group("whole", 70000))
    result = run_simulation(loaded(text), MigweaverPolicy())
    (pod,) = result.pods
    assert [d.profile for d in pod.devices] == ["7g.80gb"]


def test_pods_still_waiting_at_the_end_are_reported_with_their_reason() -> None:
    text = scenario(
        mig_node(gpus=1),
        pod_group("whole", 70000, count=2, every="1m", duration="2h"),
        end="30m",
    )
    result = run_simulation(loaded(text), MigweaverPolicy())
    waiting = [p for p in result.pods if not p.placed]
    assert [p.key for p in waiting] == ["default/whole-2"]
    assert waiting[0].code == "NoRoom"
    assert result.horizon == 1800.0


def test_too_large_pods_are_not_placed_and_say_why() -> None:
    text = scenario(mig_node(gpus=1), pod_group("huge", 100000))
    data = report_json(run_simulation(loaded(text), policy_named("migweaver")))
    assert data["pods"]["notPlaced"] == 1
    assert data["notPlaced"][0]["code"] == "TooLarge"


def test_mig_mode_is_switched_on_when_a_gpu_starts_without_it() -> None:
    nodes = "- {name: node, mode: mig, gpus: [{model: H100-SXM5-80GB, migEnabled: false}]}\n"
    result = run_simulation(loaded(scenario(nodes, pod_group("p", 8000))), MigweaverPolicy())
    assert result.mode_switches == 1
    assert all(p.placed for p in result.pods)


def test_a_chart_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from migweaver.sim.chart import write_chart

    result = run_simulation(loaded(CHURN), MigweaverPolicy())
    path = tmp_path / "chart.png"
    write_chart(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_truncates_a_run() -> None:
    scenario_ = loaded(CHURN)
    short = replace(scenario_, scenario=scenario_.scenario.model_copy(update={"end": 600.0}))
    result = run_simulation(short, MigweaverPolicy())
    assert result.horizon == 600.0
    assert all(p.started is None or p.started <= 600.0 for p in result.pods)
    # Not vacuous: pods ran before the end, and those arriving after it never start.
    assert any(p.placed for p in result.pods)
    late = [p for p in result.pods if p.arrival > 600.0]
    assert late
    assert not any(p.placed for p in late)
    assert all(s.time <= 600.0 for s in result.samples)
