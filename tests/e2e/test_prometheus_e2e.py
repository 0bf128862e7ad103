"""Issue 15's acceptance: the shipped dashboard and alerts, evaluated by a real Prometheus.

The operator and five agents with fake GPUs run against the Kubernetes API (the
emulator, or a real control plane with MIGWEAVER_E2E_KUBECONFIG); Debian's `prometheus`
server, started by the test on 127.0.0.1, scrapes all of them every second and loads the
alert rules of `manifests/components/monitoring/prometheusrule.yaml`. The test then makes
every situation the dashboard and the alerts are about happen for real:

- `mig`: a GPU with two free 1g.10gb instances at start; one pod gets one, and a process
  runs on it (in use), the other stays free; a MigLayout for a GPU the node lacks fails;
- `hami`: a hami-core node (NodeConfig) where a pod gets a share of the whole GPU;
- `drift`: a GPU whose driver sizes a MIG profile unlike migweaver's catalog;
- `nvml`: a GPU whose NVML calls start failing (GPU is lost) while it is scraped;
- `stuck`: an agent that cannot reach the API server, so it never reports;
- a pod no node can hold waits (MigUnschedulable); the operator's clock runs an hour
  ahead so that it has waited longer than the alert's threshold.

Every query of every dashboard panel, and every alert expression (without its `for:`),
must return at least one series. The agent-down and no-leader alerts are evaluated after
stopping an agent and then the operator. A chart of one panel is drawn from Prometheus'
answer (into docs/img/ when MIGWEAVER_E2E_CHART_DIR says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.protocol import NvmlError
from migweaver.agent.main import AgentOptions, run_agent
from migweaver.agent.metrics import AgentMetrics
from migweaver.agent.reconciler import Reconciler
from migweaver.core.mig.catalog import GpuModel, get_model
from migweaver.core.mig.profiles import ProfileTable
from migweaver.core.resources.api import LABEL_NODE
from migweaver.core.resources.models import (
    LayoutInstance,
    MigLayoutSpec,
    PlacementModel,
    node_label_value,
)
from migweaver.operator.metrics import OperatorMetrics
from tests.e2e.kube_api import MIGLAYOUTS, PODS, Kube
from tests.e2e.prometheus import Prometheus, draw_chart, running_prometheus
from tests.e2e.test_operator_e2e import (
    A100,
    add_node,
    add_nodeconfig,
    allocation_of,
    gpu_pod,
    layout_ready,
    released,
    running_operator,
    wait_pod,
)

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "components" / "monitoring"
CHART_ENV = "MIGWEAVER_E2E_CHART_DIR"
# Prometheus needs a few scrapes before rate() and increase() have two samples.
DATA_TIMEOUT = 120.0
# The chart's panel: MIG instances of every agent by state.
CHART_EXPR = "sum by (state) (migweaver_agent_mig_instances)"

JsonDict = dict[str, Any]


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "migweaver-dashboard.json").read_text(encoding="utf-8"))
    return [
        (f"panel {p['title']!r}", t["expr"])
        for p in dashboard["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


def alert_rules() -> list[JsonDict]:
    (doc,) = yaml.safe_load_all((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def alert_queries(names: Iterable[str]) -> list[tuple[str, str]]:
    wanted = set(names)
    return [(f"alert {r['alert']}", str(r["expr"])) for r in alert_rules() if r["alert"] in wanted]


# Alerts whose situation the running system shows; the last two need a component stopped.
LIVE_ALERTS = (
    "MigweaverGpuPodWaiting",
    "MigweaverLayoutFailed",
    "MigweaverLayoutNotConverged",
    "MigweaverAgentNotReporting",
    "MigweaverNvmlErrorsRising",
    "MigweaverCatalogMismatch",
)


def drifted_a100() -> GpuModel:
    """An A100 whose driver reports its smallest profile 512 MiB smaller than the catalog."""
    real = get_model(A100)
    assert real is not None
    first, *rest = real.table.profiles
    smaller = replace(first, memory_mib=first.memory_mib - 512)
    return replace(real, table=ProfileTable(real.table.memory_slots, (smaller, *rest)))


def with_two_free_instances(backend: FakeBackend, node: str) -> FakeBackend:
    """Two 1g.10gb instances made before the agent starts (it adopts them, free)."""
    spec = MigLayoutSpec(
        node_name=node,
        gpu_index=0,
        gpu_uuid=backend.uuid(0),
        instances=[
            LayoutInstance(profile="1g.10gb", placement=PlacementModel(start=s, size=1))
            for s in (0, 1)
        ],
    )
    assert Reconciler(backend).reconcile(0, spec).ready
    return backend


@dataclass
class Agent:
    node: str
    backend: FakeBackend
    metrics: AgentMetrics
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[int] | None = None

    @property
    def target(self) -> str:
        assert self.metrics.port is not None
        return f"127.0.0.1:{self.metrics.port}"

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            assert await asyncio.wait_for(self.task, 30) == 0


@contextlib.asynccontextmanager
async def running_agent(
    kube: Kube, node: str, backend: FakeBackend, kubeconfig: Path | None = None
) -> AsyncIterator[Agent]:
    """One agent with this fake backend and its metrics on a free loopback port."""
    agent = Agent(node, backend, AgentMetrics(node))
    options = AgentOptions(
        node_name=node,
        backend="fake",
        kubeconfig=str(kubeconfig or kube.kubeconfig),
        probe_address="127.0.0.1",
        probe_port=0,
        metrics_address="127.0.0.1",
        metrics_port=0,
        resync_s=2,
        device_plugin=False,
    )
    agent.task = asyncio.create_task(
        run_agent(options, agent.stop, backend=backend, metrics=agent.metrics)
    )
    try:
        while agent.metrics.port is None:
            assert not agent.task.done(), agent.task.result()
            await asyncio.sleep(0.05)
        yield agent
    finally:
        await agent.halt()


async def layouts_ready(kube: Kube, node: str) -> None:
    await kube.wait_for_list(
        MIGLAYOUTS,
        lambda items: bool(items) and all(layout_ready(o) for o in items),
        label_selector=f"{LABEL_NODE}={node_label_value(node)}",
        timeout_s=60,
    )


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig naming an API server nobody listens on (port 9 of loopback: discard)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "nobody"}}],
        "current-context": "gone",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def failing_layout(node: str, name: str) -> JsonDict:
    """A MigLayout for GPU 5 of a node that has one GPU: its agent reports it Failed."""
    return {
        "apiVersion": "migweaver.io/v1alpha1",
        "kind": "MigLayout",
        "metadata": {"name": name, "labels": {LABEL_NODE: node_label_value(node)}},
        "spec": {
            "nodeName": node,
            "gpuIndex": 5,
            "gpuUUID": "GPU-00000000-0000-0000-0000-000000000005",
            "migEnabled": True,
            "instances": [],
        },
    }


async def until_every_query_has_data(
    prometheus: Prometheus, queries: list[tuple[str, str]], timeout_s: float = DATA_TIMEOUT
) -> dict[str, list[JsonDict]]:
    """Evaluate every query until each returns a series; fail naming the empty ones."""
    deadline = time.monotonic() + timeout_s
    answers: dict[str, list[JsonDict]] = {}
    while True:
        empty = []
        for where, expr in queries:
            answers[where] = await prometheus.query(expr)
            if not answers[where]:
                empty.append(f"{where}: {expr}")
        if not empty:
            return answers
        if time.monotonic() > deadline:
            pytest.fail("queries without data:\n" + "\n".join(empty))
        await asyncio.sleep(2.0)


async def test_every_dashboard_panel_and_alert_returns_data(
    kube: Kube, binder: None, tmp_path: Path
) -> None:
    mig, hami, drift, nvml, stuck = (
        kube.name(f"prom-{n}") for n in ("mig", "hami", "drift", "nvml", "stuck")
    )
    for node in (mig, hami, drift, nvml):
        await add_node(kube, node)
    await add_nodeconfig(kube, hami, "hami-core")
    for node in (mig, drift, nvml):
        await add_nodeconfig(kube, node, "mig")
    backends = {
        mig: with_two_free_instances(FakeBackend([A100], mig_enabled=True, seed=mig), mig),
        # MIG on at start: the hami-core NodeConfig makes the agent switch it off.
        hami: FakeBackend([A100], mig_enabled=True, seed=hami),
        drift: FakeBackend([drifted_a100()], mig_enabled=True, seed=drift),
        nvml: FakeBackend([A100], mig_enabled=True, seed=nvml),
        stuck: FakeBackend([A100], seed=stuck),
    }
    # Pods waiting an hour: the operator's clock runs ahead (its timestamps and ages only).
    wall = lambda: time.time() + 3600.0  # noqa: E731
    async with contextlib.AsyncExitStack() as running, contextlib.AsyncExitStack() as leading:
        agents = {
            node: await running.enter_async_context(running_agent(kube, node, backends[node]))
            for node in (mig, hami, drift, nvml)
        }
        agents[stuck] = await running.enter_async_context(
            running_agent(
                kube, stuck, backends[stuck], unreachable_kubeconfig(tmp_path / "gone.conf")
            )
        )
        for node in (mig, hami, drift, nvml):
            await layouts_ready(kube, node)
        operator_metrics = OperatorMetrics()
        operator = await leading.enter_async_context(
            running_operator(kube, operator_metrics, wall=wall)
        )
        await asyncio.wait_for(operator.ready.wait(), 60)
        assert operator_metrics.port is not None
        rules = tmp_path / "rules.yaml"
        (doc,) = yaml.safe_load_all(
            (MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8")
        )
        rules.write_text(yaml.safe_dump(doc["spec"]), encoding="utf-8")
        (tmp_path / "prometheus").mkdir()
        targets = {
            "migweaver-operator": [f"127.0.0.1:{operator_metrics.port}"],
            "migweaver-agent": [a.target for a in agents.values()],
        }
        async with running_prometheus(tmp_path / "prometheus", targets, [rules]) as prometheus:
            started = time.time()
            await make_every_situation(kube, prometheus, mig, nvml, backends)
            failing = kube.name("prom-failing")

            queries = panel_queries() + alert_queries(LIVE_ALERTS)
            answers = await until_every_query_has_data(prometheus, queries)
            # The series show what the test made happen, not some other situation.
            by_state = {
                s["metric"]["state"]: float(s["value"][1])
                for s in answers["panel 'MIG instances by state'"]
            }
            assert by_state["in_use"] >= 1
            assert by_state["free"] >= 1
            failed = answers["alert MigweaverLayoutFailed"]
            assert failing in {s["metric"]["layout"] for s in failed}
            waiting = answers["alert MigweaverGpuPodWaiting"]
            assert {s["metric"]["reason"] for s in waiting} == {"MigUnschedulable"}
            assert nodes_of(answers["alert MigweaverAgentNotReporting"]) == {stuck}
            assert nodes_of(answers["alert MigweaverNvmlErrorsRising"]) == {nvml}
            assert nodes_of(answers["alert MigweaverCatalogMismatch"]) == {drift}
            for rule in await prometheus.rules():
                assert rule["health"] == "ok", rule

            chart = await prometheus.query_range(CHART_EXPR, started, time.time(), 1.0)
            out = Path(os.environ.get(CHART_ENV) or tmp_path)
            draw_chart(
                chart,
                "state",
                "sum by (state) (migweaver_agent_mig_instances), e2e run",
                out / "mig-instances-by-state.png",
            )
            assert (out / "mig-instances-by-state.png").stat().st_size > 0

            # An agent stops: its node's layouts stay, its metrics go.
            await agents[drift].halt()
            down = await until_every_query_has_data(
                prometheus, alert_queries(["MigweaverAgentDown"])
            )
            assert nodes_of(down["alert MigweaverAgentDown"]) == {drift}
            # The operator stops: no replica leads.
            await leading.aclose()
            await until_every_query_has_data(
                prometheus, alert_queries(["MigweaverOperatorWithoutLeader"])
            )


def nodes_of(series: list[JsonDict]) -> set[str]:
    return {s["metric"]["node"] for s in series}


async def make_every_situation(
    kube: Kube, prometheus: Prometheus, mig: str, nvml: str, backends: dict[str, FakeBackend]
) -> None:
    """The workload, created while Prometheus scrapes (see the module docstring)."""
    await kube.create(PODS, gpu_pod("prom-mig-pod", 1, 10000, "mig"))
    await kube.create(PODS, gpu_pod("prom-hami-pod", 1, 20000, "hami-core"))
    await kube.create(PODS, gpu_pod("prom-too-big", 8, 80000, "mig"))
    await kube.create(MIGLAYOUTS, failing_layout(mig, kube.name("prom-failing")))
    placed = allocation_of(await wait_pod(kube, "prom-mig-pod", released, 60))
    (device,) = placed.devices
    assert device.mig_uuid is not None
    # Bound to its node, the pod holds its instance before any process runs on it...
    reserved = f'migweaver_agent_mig_instances{{node="{placed.node}",state="reserved"}} > 0'
    await until_every_query_has_data(prometheus, [("reserved instance", reserved)])
    # ... and its container starts.
    backends[placed.node].start_process(device.gpu_index, device.mig_uuid)
    await wait_pod(kube, "prom-hami-pod", released, 60)
    # NVML starts failing on one GPU: every observation of it fails from now on.
    backends[nvml].fail_call("list_processes", NvmlError.GPU_IS_LOST, times=1_000_000)
