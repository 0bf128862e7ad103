"""The operator against the API emulator: planning latency, release time and memory.

What runs (all on 127.0.0.1):

- the in-process Kubernetes API emulator of the e2e tests (`tests/e2e/emulator`), with
  migweaver's CRDs;
- `nodes` Node objects, one NodeConfig putting them all in `mig` mode, and one MigLayout
  per GPU (A100-SXM4-80GB, MIG on) whose spec and status are what an agent reports: the
  GPUs are `FakeBackend`s, 30 % of them already carry up to three instances
  (`workloads.random_instances`), most of those with a running process (in use);
- a simulated agent for the whole fleet in this process: one watch over every MigLayout;
  a spec the status has not observed yet is applied to the node's `FakeBackend` by the
  agent's own `Reconciler` and reported with `migweaver.agent.status.layout_status`, as
  `NodeAgent` does per node (one watch instead of one agent per node; no pod watch, so a
  released pod never shows as `inUse`: the pods are not bound and never start);
- the real operator as a subprocess: `python -m migweaver operator --standalone
  --no-webhook`, metrics on a free port, default batching window (1 s idle, 5 s max).

Then `pods` gated pods of realistic sizes (`workloads.random_pods`; those pinned to
hami-core are left unpinned, the fleet is all MIG) are created at once, and the benchmark
records when the operator writes its first plan, when every pod that gets a place is
reserved and then released (its gate removed), what `/metrics` says about the planning
passes, and the operator process's resident memory (`VmRSS`, and the peak `VmHWM` from
/proc, Linux only).

Run: python -m benchmarks.bench_operator [--nodes N] [--gpus N] [--pods N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.workloads import random_instances, random_pods
from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.node_agent import new_layout_body
from migweaver.agent.reconciler import Reconciler
from migweaver.agent.status import layout_status
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_RESERVATION,
    PLACEMENT_GATE,
)
from migweaver.core.resources.models import (
    LayoutInstance,
    MigLayout,
    MigLayoutSpec,
    PlacementModel,
)
from migweaver.core.resources.requests import PodDemand, VgpuMode
from migweaver.k8s.client import now_rfc3339
from tests.e2e.emulator import Emulator
from tests.e2e.kube_api import EVENTS, MIGLAYOUTS, NAMESPACES, NODECONFIGS, NODES, PODS, Kube

ROOT = Path(__file__).resolve().parents[1]

MODEL = "A100-SXM4-80GB"
NAMESPACE = "bench"
BENCH_LABEL = "migweaver.io/bench"
HOSTNAME = "kubernetes.io/hostname"
BUSY_FRACTION = 0.3
"""GPUs that already carry instances (as in the planner benchmark's clusters)."""
IN_USE_FRACTION = 0.7
"""Of those instances, the ones a process runs on; the others are idle."""
SIZE = (100, 8, 500)
"""(nodes, GPUs per node, pending pods): issue 5's benchmark."""

JsonDict = dict[str, Any]


@dataclass
class Result:
    nodes: int
    gpus_per_node: int
    pods: int
    instances_before: int = 0
    in_use_before: int = 0
    create_s: float = 0.0
    """Creating every pod (from the first request to the last answer)."""
    first_plan_s: float | None = None
    """From the last pod's creation to the first write of a plan (MigLayout or pod)."""
    reserved_s: float | None = None
    """...to the last reservation (or release) of a pod that got a place."""
    released_s: float | None = None
    """...to the last release: every pod that got a place is ungated."""
    timed_out: bool = False
    released: int = 0
    unplaceable: int = 0
    layouts_changed: int = 0
    conflicts: int = 0
    """MigLayout writes answered 409 (the operator re-read and re-planned)."""
    plan_passes: int = 0
    plan_seconds: float = 0.0
    pods_placed_metric: float = 0.0
    pod_wait_mean_s: float | None = None
    rss_idle_mib: float | None = None
    rss_end_mib: float | None = None
    rss_peak_mib: float | None = None
    operator_cpu_s: float | None = None
    """CPU time the operator process used from the pods' creation to the end."""
    operator_exit: int | None = None


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Fake GPUs per node and the agent's reconciler for each, as the node agents hold."""

    backends: dict[str, FakeBackend] = field(default_factory=dict)
    reconcilers: dict[str, Reconciler] = field(default_factory=dict)
    instances: int = 0
    in_use: int = 0

    @classmethod
    def build(cls, rng: random.Random, nodes: Sequence[str], gpus: int) -> Fleet:
        fleet = cls()
        for node in nodes:
            backend = FakeBackend([MODEL] * gpus, mig_enabled=True, seed=node)
            reconciler = Reconciler(backend)
            for index in range(gpus):
                if rng.random() >= BUSY_FRACTION:
                    continue
                placed = random_instances(rng, MODEL, f"{NAMESPACE}/{node}-{index}")
                spec = MigLayoutSpec(
                    node_name=node,
                    gpu_index=index,
                    gpu_uuid=backend.uuid(index),
                    mig_enabled=True,
                    instances=[
                        LayoutInstance(
                            profile=i.profile, placement=PlacementModel.from_placement(i.placement)
                        )
                        for i in placed
                    ],
                )
                result = reconciler.reconcile(index, spec)
                assert result.ready, result
                for mig_uuid in backend.mig_uuids(index).values():
                    fleet.instances += 1
                    if rng.random() < IN_USE_FRACTION:
                        backend.start_process(index, mig_uuid)
                        fleet.in_use += 1
            backend.calls.clear()
            fleet.backends[node] = backend
            fleet.reconcilers[node] = reconciler
        return fleet

    def layout_bodies(self, node: str) -> list[JsonDict]:
        """The MigLayouts an agent creates for its GPUs (spec = what exists)."""
        reconciler = self.reconcilers[node]
        return [
            new_layout_body(node, reconciler.observe(device.index))
            for device in self.backends[node].list_gpus()
        ]

    def status(self, obj: Mapping[str, Any]) -> JsonDict:
        """Apply a MigLayout's spec to its GPU and return the status the agent reports."""
        layout = MigLayout.from_api(obj)
        result = self.reconcilers[layout.spec.node_name].reconcile(
            layout.spec.gpu_index, layout.spec
        )
        previous = layout.status.conditions if layout.status else []
        status = layout_status(
            result,
            generation=(obj.get("metadata") or {}).get("generation"),
            now=now_rfc3339(),
            previous_conditions=previous,
        )
        return status.to_api()


def observed(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status) and status.get("observedGeneration") == (obj.get("metadata") or {}).get(
        "generation"
    )


async def follow(
    kube: Kube,
    ref: Any,
    namespace: str | None,
    handle: Callable[[str, JsonDict], Awaitable[None]],
) -> None:
    """List, then watch from the list's version; re-list when the watch ends (forever)."""
    while True:
        items, version = await kube.list_with_version(ref, namespace)
        for item in items:
            await handle("ADDED", item)
        async for kind, obj in kube.watch(ref, version, namespace, timeout_s=60):
            if kind == "ERROR":
                break  # 410 Gone: re-list
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                await handle(kind, obj)


async def agent_loop(kube: Kube, fleet: Fleet, on_spec: Callable[[JsonDict], None]) -> None:
    """The simulated agents: every spec the status has not observed yet is applied."""

    async def handle(kind: str, obj: JsonDict) -> None:
        if kind not in ("ADDED", "MODIFIED") or observed(obj):
            return
        if (obj.get("metadata") or {}).get("generation", 1) > 1:
            on_spec(obj)
        body = fleet.status(obj)
        name = obj["metadata"]["name"]
        await kube.patch(MIGLAYOUTS, name, {"status": body}, subresource="status")

    await follow(kube, MIGLAYOUTS, None, handle)


# --------------------------------------------------------------------------- pods


def pod_body(demand: PodDemand) -> JsonDict:
    """A gated pod asking for what `demand` describes, in HAMi's resource names."""
    (container,) = demand.containers
    limits: dict[str, Any] = {"nvidia.com/gpu": container.count}
    if container.memory_mib is not None:
        limits["nvidia.com/gpumem"] = container.memory_mib
    if container.memory_percentage is not None:
        limits["nvidia.com/gpumem-percentage"] = container.memory_percentage
    if container.cores:
        limits["nvidia.com/gpucores"] = container.cores
    annotations = {"nvidia.com/vgpu-mode": "mig"} if demand.mode == VgpuMode.MIG else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": demand.name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "schedulingGates": [{"name": PLACEMENT_GATE}],
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": container.name,
                    "image": "registry.k8s.io/pause:3.9",
                    "resources": {"limits": limits},
                }
            ],
        },
    }


def node_body(name: str) -> JsonDict:
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "70"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME: name, BENCH_LABEL: "true"}},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


@dataclass
class PodTracker:
    """When each pod was first seen reserved and released; which ones got no place."""

    names: set[str]
    reserved: dict[str, float] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, bool] = field(default_factory=dict)
    """Pod -> whether it is gated with a reservation (planned, not released yet)."""
    unplaceable: set[str] = field(default_factory=set)
    first_write: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def wrote(self, at: float) -> None:
        if self.first_write is None:
            self.first_write = at

    async def on_pod(self, kind: str, pod: JsonDict) -> None:
        name = pod["metadata"]["name"]
        if name not in self.names or kind == "DELETED":
            return
        now = time.perf_counter()
        annotations = pod["metadata"].get("annotations") or {}
        gated = bool(pod["spec"].get("schedulingGates"))
        if ANNOTATION_RESERVATION in annotations or ANNOTATION_ALLOCATION in annotations:
            self.reserved.setdefault(name, now)
            self.wrote(now)
        if ANNOTATION_ALLOCATION in annotations and not gated:
            self.released.setdefault(name, now)
        self.waiting[name] = gated and ANNOTATION_RESERVATION in annotations
        self._check()

    async def on_event(self, kind: str, event: JsonDict) -> None:
        if kind == "ADDED" and event.get("reason") == "MigUnschedulable":
            self.unplaceable.add(str((event.get("involvedObject") or {}).get("name")))
            self._check()

    def _check(self) -> None:
        settled = all(
            name in self.released or (name in self.unplaceable and not self.waiting.get(name))
            for name in self.names
        )
        if settled:
            self.done.set()


# --------------------------------------------------------------------------- the operator


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process in MiB, from /proc (empty where there is none)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OperatorProcess:
    """`migweaver operator` as a subprocess; its metrics port is read from its log."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.log_tail: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "migweaver",
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            NAMESPACE,
            "--standalone",
            "--no-webhook",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--probe-address",
            "127.0.0.1",
            "--probe-port",
            "0",
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.log_tail = [*self.log_tail[-20:], line]
            # The JSON log line `operator serving` names the bound port.
            found = re.search(r'"metrics_port": ?(\d+)', line)
            if found and not self.metrics_port.done():
                self.metrics_port.set_result(int(found.group(1)))
        if not self.metrics_port.done():
            self.metrics_port.set_exception(
                RuntimeError("the operator ended:\n" + "".join(self.log_tail))
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def metrics(self) -> dict[str, float]:
        """Every sample of `/metrics` without labels, plus `name{label=value}` ones."""
        port = await self.metrics_port
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            await self._reader
        return int(self.process.returncode or 0)


# --------------------------------------------------------------------------- the run


async def _create_all(kube: Kube, ref: Any, bodies: Sequence[JsonDict], chunk: int = 20) -> None:
    for start in range(0, len(bodies), chunk):
        await asyncio.gather(*(kube.create(ref, body) for body in bodies[start : start + chunk]))


async def _cluster(kube: Kube, fleet: Fleet, names: Sequence[str]) -> list[JsonDict]:
    """CRDs, the namespace, Nodes, the NodeConfig and every GPU's MigLayout (no status)."""
    await kube.ensure_crds((ROOT / "crds").glob("*.yaml"))
    await kube.request("POST", NAMESPACES.path(), {"metadata": {"name": NAMESPACE}})
    await _create_all(kube, NODES, [node_body(n) for n in names])
    await kube.create(
        NODECONFIGS,
        {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "NodeConfig",
            "metadata": {"name": "bench-mig"},
            "spec": {
                "nodeSelector": {"matchLabels": {BENCH_LABEL: "true"}},
                "operatingMode": "mig",
            },
        },
    )
    layouts = [body for n in names for body in fleet.layout_bodies(n)]
    await _create_all(kube, MIGLAYOUTS, layouts)
    return layouts


async def run(
    nodes: int = SIZE[0],
    gpus: int = SIZE[1],
    pods: int = SIZE[2],
    *,
    seed: int = 11,
    timeout_s: float = 120.0,
) -> Result:
    """Set the cluster up, start the operator, create the pods and measure (see above)."""
    result = Result(nodes, gpus, pods)
    rng = random.Random(seed)
    names = [f"node-{n:03d}" for n in range(nodes)]
    fleet = Fleet.build(rng, names, gpus)
    result.instances_before, result.in_use_before = fleet.instances, fleet.in_use
    demands = [
        d if d.mode != VgpuMode.HAMI_CORE else dataclasses.replace(d, mode=None)
        for d in random_pods(rng, pods)
    ]
    tracker = PodTracker({d.name for d in demands})
    tasks: list[asyncio.Task[None]] = []
    with tempfile.TemporaryDirectory(prefix="migweaver-bench-") as tmp:
        async with Emulator(history_size=200_000) as emulator:
            kubeconfig = emulator.write_kubeconfig(Path(tmp) / "kubeconfig")
            kube = await Kube.connect(kubeconfig, NAMESPACE)
            operator = OperatorProcess(kubeconfig)
            try:
                layouts = await _cluster(kube, fleet, names)
                changed: set[str] = set()

                def on_spec(obj: JsonDict) -> None:
                    changed.add(obj["metadata"]["name"])
                    tracker.wrote(time.perf_counter())

                tasks.append(asyncio.create_task(agent_loop(kube, fleet, on_spec)))
                await kube.wait_for_list(
                    MIGLAYOUTS,
                    lambda items: len(items) == len(layouts) and all(observed(o) for o in items),
                    timeout_s=120,
                )
                await operator.start()
                await _operator_ready(kube, operator)
                result.rss_idle_mib = memory_mib(operator.pid).get("VmRSS")
                cpu_before = cpu_seconds(operator.pid)
                before = await operator.metrics()  # the canary's plan is not counted

                tasks.append(asyncio.create_task(follow(kube, PODS, NAMESPACE, tracker.on_pod)))
                tasks.append(asyncio.create_task(follow(kube, EVENTS, NAMESPACE, tracker.on_event)))
                started = time.perf_counter()
                await _create_all(kube, PODS, [pod_body(d) for d in demands])
                created = time.perf_counter()
                result.create_s = created - started
                result.timed_out = not await _until(tracker.done, tasks, timeout_s)

                _record(result, tracker, created, changed)
                after = await operator.metrics()
                _record_metrics(result, {k: v - before.get(k, 0.0) for k, v in after.items()})
                cpu_after = cpu_seconds(operator.pid)
                if cpu_before is not None and cpu_after is not None:
                    result.operator_cpu_s = cpu_after - cpu_before
                memory = memory_mib(operator.pid)
                result.rss_end_mib = memory.get("VmRSS")
                result.rss_peak_mib = memory.get("VmHWM")
            finally:
                if operator.process is not None:
                    result.operator_exit = await operator.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await kube.close()
    return result


async def _until(
    done: asyncio.Event, tasks: Sequence[asyncio.Task[None]], timeout_s: float
) -> bool:
    """Until `done` (True) or `timeout_s` (False); a helper task that fails raises here."""
    waiter = asyncio.create_task(done.wait())
    try:
        finished, _ = await asyncio.wait(
            [waiter, *tasks], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    for task in finished:
        if task is not waiter:
            task.result()  # raises what ended it
            raise RuntimeError(f"{task.get_name()} ended")
    return waiter in finished


async def _operator_ready(kube: Kube, operator: OperatorProcess) -> None:
    """Until the operator works: a gated pod asking for no GPU is released by its first
    plan (the gate removed, nothing else), which needs its watch and its work loop."""
    await operator.metrics_port
    canary = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canary", "namespace": NAMESPACE},
        "spec": {
            "schedulingGates": [{"name": PLACEMENT_GATE}],
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
        },
    }
    await kube.create(PODS, canary)
    await kube.wait_for(
        PODS, "canary", lambda p: bool(p) and not p["spec"].get("schedulingGates"), timeout_s=90
    )


def _record(result: Result, tracker: PodTracker, created: float, changed: set[str]) -> None:
    placed = [name for name in tracker.names if name in tracker.released]
    result.released = len(placed)
    result.unplaceable = len(tracker.unplaceable - set(placed))
    result.layouts_changed = len(changed)
    if tracker.first_write is not None:
        result.first_plan_s = tracker.first_write - created
    if tracker.reserved:
        result.reserved_s = max(tracker.reserved.values()) - created
    if tracker.released:
        result.released_s = max(tracker.released.values()) - created


def _record_metrics(result: Result, samples: Mapping[str, float]) -> None:
    result.plan_passes = int(samples.get("migweaver_plan_duration_seconds_count", 0))
    result.plan_seconds = samples.get("migweaver_plan_duration_seconds_sum", 0.0)
    result.pods_placed_metric = samples.get("migweaver_pods_placed_total", 0.0)
    result.conflicts = int(samples.get("migweaver_reconfigurations_total{result=conflict}", 0))
    count = samples.get("migweaver_pod_wait_seconds_count", 0.0)
    if count:
        result.pod_wait_mean_s = samples.get("migweaver_pod_wait_seconds_sum", 0.0) / count


def measure(
    nodes: int = SIZE[0], gpus: int = SIZE[1], pods: int = SIZE[2], **options: Any
) -> Result:
    return asyncio.run(run(nodes, gpus, pods, **options))


# --------------------------------------------------------------------------- report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"


def markdown(r: Result) -> str:
    mean_plan = r.plan_seconds / r.plan_passes if r.plan_passes else None
    wait = "-" if r.pod_wait_mean_s is None else f"{r.pod_wait_mean_s:.1f} s"
    released = f"{r.released:,} of {r.pods:,}" + (
        f" ({r.unplaceable} without a place)" if r.unplaceable else ""
    )
    if r.timed_out:
        released += " (gave up waiting)"
    rows = [
        ("nodes x GPUs", f"{r.nodes:,} x {r.gpus_per_node} {MODEL}, MIG on"),
        (
            "MIG instances before",
            f"{r.instances_before:,} ({r.in_use_before:,} in use by a process)",
        ),
        ("pending pods (created in)", f"{r.pods:,} ({r.create_s:.2f} s)"),
        ("first plan written", _seconds(r.first_plan_s)),
        ("every placed pod reserved", _seconds(r.reserved_s)),
        ("every placed pod released (ungated)", _seconds(r.released_s)),
        ("pods released", released),
        (
            "MigLayouts reconfigured (409 conflicts)",
            f"{r.layouts_changed:,} ({r.conflicts})",
        ),
        (
            "planning passes (`migweaver_plan_duration_seconds`)",
            f"{r.plan_passes}, {r.plan_seconds:.2f} s in all"
            + (f", {mean_plan:.2f} s each" if mean_plan is not None else ""),
        ),
        ("mean wait, creation to ungating (`migweaver_pod_wait_seconds`)", wait),
        ("operator CPU time, creation to the end", _seconds(r.operator_cpu_s)),
        ("operator memory after start-up (RSS)", _mib(r.rss_idle_mib)),
        ("operator memory at the end (RSS)", _mib(r.rss_end_mib)),
        ("operator peak memory (`VmHWM`)", _mib(r.rss_peak_mib)),
    ]
    lines = ["| | |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


INTRO = """\
## Operator against the emulator

The real operator (`migweaver operator --standalone --no-webhook`, a subprocess, default
batching window of 1 s idle / 5 s max) against the in-process API emulator of the e2e
tests (`tests/e2e/emulator`), measured by `benchmarks/bench_operator.py`. The fleet is
{nodes} Node objects with {gpus} MIG-enabled {model} each (one MigLayout per GPU, one
NodeConfig in `mig` mode for all); 30 % of the GPUs already carry up to three instances,
most of them in use by a process. The agents are simulated in the benchmark's process:
one watch over every MigLayout; each new spec is applied by the agent's own `Reconciler`
to the node's `FakeBackend` and reported with the agent's status code, as `NodeAgent`
does, so specs converge within milliseconds (no MIG reconfiguration delay; no pod watch,
the released pods are not bound). The {pods} gated pods are of realistic sizes
(`benchmarks/workloads.py`; pods pinned to hami-core are left unpinned) and are created
at once, after the operator has started. Times are wall-clock, from the answer to the
last pod's creation. The operator shares the machine's CPUs with the emulator and the
simulated agents, so they are upper bounds of its own work. Memory is the operator
process's resident set, from /proc.

{table}

The first plan is written once no new pod arrived for a second (the batching window) and
the operator has read every pod, MigLayout, NodeConfig and Node; the planning pass itself
is the `migweaver_plan_duration_seconds` figure, a small part of it. The rest is API
writes, made one at a time: the planning round writes every changed MigLayout spec and
every reservation, each with its Event; the following rounds, woken by the agents' status
reports, release the pods (one patch and one Event each). The time from plan to release
therefore grows with the number of writes times the API's round-trip time, not with the
planner. `migweaver_pod_wait_seconds` counts from `creationTimestamp`, which has whole
seconds, so its mean can exceed the wall-clock figures by up to a second.
"""


def section(nodes: int = SIZE[0], gpus: int = SIZE[1], pods: int = SIZE[2]) -> str:
    """The markdown section of docs/benchmarks.md (runs the benchmark: under a minute)."""
    result = measure(nodes, gpus, pods)
    return INTRO.format(nodes=nodes, gpus=gpus, model=MODEL, pods=pods, table=markdown(result))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=SIZE[0])
    parser.add_argument("--gpus", type=int, default=SIZE[1])
    parser.add_argument("--pods", type=int, default=SIZE[2])
    args = parser.parse_args(argv)
    print(section(args.nodes, args.gpus, args.pods))


if __name__ == "__main__":
    main()
