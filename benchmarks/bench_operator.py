"""The operator against the API emulator or a real cluster: release time, CPU and memory.

What runs (all on 127.0.0.1):

- the in-process Kubernetes API emulator of the e2e tests (`tests/e2e/emulator`), with
  migweaver's CRDs; or, with `--kubeconfig FILE`, that cluster (any: this run's objects
  get names of their own, `bench-<run>`, and are deleted at the end, with the CRDs when
  the run created them);
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

At the end it counts double allocations (a MIG device given to two released pods, or
to one while a process runs on it) and lost reservations (a reserved pod that ends
neither released nor reserved; a released pod whose device is gone): both must be 0.

Run: python -m benchmarks.bench_operator [--nodes N] [--gpus N] [--pods N]
     [--kubeconfig FILE] [--runs N] [--profile FILE] [--log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import pstats
import random
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.workloads import random_instances, random_pods
from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.node_agent import new_layout_body
from migweaver.agent.reconciler import Reconciler
from migweaver.agent.status import layout_status
from migweaver.core.resources.allocation import Allocation, pod_allocation
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_RESERVATION,
    PLACEMENT_GATE,
    annotations_of,
)
from migweaver.core.resources.models import (
    LayoutInstance,
    MigLayout,
    MigLayoutSpec,
    PlacementModel,
)
from migweaver.core.resources.requests import PodDemand, VgpuMode
from migweaver.k8s.client import connect, now_rfc3339
from migweaver.k8s.cluster import Pods
from migweaver.operator.settings import OperatorOptions
from tests.e2e.emulator import Emulator
from tests.e2e.kube_api import (
    CRDS,
    EVENTS,
    MIGLAYOUTS,
    NAMESPACES,
    NODECONFIGS,
    NODES,
    PODS,
    Kube,
    KubeError,
    meta,
)

ROOT = Path(__file__).resolve().parents[1]

MODEL = "A100-SXM4-80GB"
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
    api_cpu_s: float | None = None
    """CPU time of kube-apiserver and etcd over the same span, when they run here."""
    harness_cpu_s: float | None = None
    """CPU time of the benchmark's own process (simulated agents, watches, the emulator)."""
    load: float | None = None
    """The machine's 1-minute load average when the pods were created."""
    target: str = "emulator"
    """`emulator` (the in-process one) or `cluster` (a kubeconfig's)."""
    double_allocations: int = 0
    """Released pods given a MIG device another released pod has, or one a process ran
    on before: must be 0."""
    lost_reservations: int = 0
    """Pods reserved that end neither released nor still reserved, and released pods
    whose device no longer exists on its GPU: must be 0."""


# --------------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Fake GPUs per node and the agent's reconciler for each, as the node agents hold."""

    backends: dict[str, FakeBackend] = field(default_factory=dict)
    reconcilers: dict[str, Reconciler] = field(default_factory=dict)
    instances: int = 0
    in_use: int = 0
    busy_uuids: set[str] = field(default_factory=set)
    """MIG devices a process ran on before the pods came: no pod may be given one."""

    @classmethod
    def build(cls, rng: random.Random, nodes: Sequence[str], gpus: int) -> Fleet:
        fleet = cls()
        for node in nodes:
            backend = FakeBackend([MODEL] * gpus, mig_enabled=True, seed=node)
            reconciler = Reconciler(backend)
            for index in range(gpus):
                if rng.random() >= BUSY_FRACTION:
                    continue
                placed = random_instances(rng, MODEL, f"bench/{node}-{index}")
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
                        fleet.busy_uuids.add(mig_uuid)
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

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """Whether a MigLayout is one of this fleet's (a real cluster may hold others)."""
        spec = obj.get("spec") or {}
        return spec.get("nodeName") in self.reconcilers

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
    """List, then watch from the list's version, resuming from the last version seen when
    the watch ends; list again only after an error (410 Gone). Forever."""
    version: str | None = None
    while True:
        if version is None:
            items, version = await kube.list_with_version(ref, namespace)
            for item in items:
                await handle("ADDED", item)
        async for kind, obj in kube.watch(ref, version, namespace, timeout_s=60):
            if kind == "ERROR":
                version = None  # 410 Gone: list again
                break
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                await handle(kind, obj)


async def agent_loop(
    kube: Kube,
    fleet: Fleet,
    on_spec: Callable[[JsonDict], None],
    on_status: Callable[[str], None] = lambda _: None,
) -> None:
    """The simulated agents: every spec the status has not observed yet is applied.

    One agent per node in a real cluster: nodes are served concurrently (a few dozen at
    once), each node's layouts in order, as its own agent would."""
    nodes: dict[str, asyncio.Lock] = {}
    limit = asyncio.Semaphore(32)
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException | None] = []

    async def apply(obj: JsonDict) -> None:
        node = str(obj["spec"]["nodeName"])
        async with limit, nodes.setdefault(node, asyncio.Lock()):
            body = fleet.status(obj)
            name = obj["metadata"]["name"]
            await kube.patch(MIGLAYOUTS, name, {"status": body}, subresource="status")
            on_status(name)

    async def handle(kind: str, obj: JsonDict) -> None:
        if kind not in ("ADDED", "MODIFIED") or observed(obj) or not fleet.owns(obj):
            return
        if (obj.get("metadata") or {}).get("generation", 1) > 1:
            on_spec(obj)
        task = asyncio.create_task(apply(obj))
        running.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())

    async def check(kind: str, obj: JsonDict) -> None:
        if failures:
            raise RuntimeError(f"a simulated agent failed: {failures[0]!r}")
        await handle(kind, obj)

    try:
        await follow(kube, MIGLAYOUTS, None, check)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


# --------------------------------------------------------------------------- pods


@dataclass(frozen=True)
class Names:
    """Where one run's objects go: its namespace, and a prefix for cluster-scoped names.

    On the private emulator, `bench` and no prefix; on another cluster, names of this run
    only (`bench-<run>`), so nothing there is touched and everything made is deleted."""

    namespace: str = "bench"
    prefix: str = ""

    @classmethod
    def unique(cls) -> Names:
        run = f"bench-{secrets.token_hex(3)}"
        return cls(namespace=run, prefix=f"{run}-")

    @property
    def label(self) -> str:
        """The value of BENCH_LABEL on this run's Nodes (its NodeConfig selects them)."""
        return self.prefix.rstrip("-") or "true"

    def node(self, n: int) -> str:
        return f"{self.prefix}node-{n:03d}"


def pod_body(demand: PodDemand, namespace: str = "bench") -> JsonDict:
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
        "metadata": {"name": demand.name, "namespace": namespace, "annotations": annotations},
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


def node_body(name: str, label: str = "true") -> JsonDict:
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "70"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME: name, BENCH_LABEL: label}},
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
    created: float = 0.0
    """When the last pod was created (perf_counter)."""
    settled: set[str] = field(default_factory=set)
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
        self._check(name)

    async def on_event(self, kind: str, event: JsonDict) -> None:
        if kind == "ADDED" and event.get("reason") == "MigUnschedulable":
            name = str((event.get("involvedObject") or {}).get("name"))
            self.unplaceable.add(name)
            self._check(name)

    def _check(self, name: str) -> None:
        """Whether `name` has settled (released, or without a place and not reserved);
        `done` once every pod has (per pod, not a scan of all: 5,000 pods, 15,000 events)."""
        if name not in self.names:
            return
        if name in self.released or (name in self.unplaceable and not self.waiting.get(name)):
            self.settled.add(name)
        else:
            self.settled.discard(name)
        if len(self.settled) == len(self.names):
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

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        profile: Path | None = None,
        log: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.profile = profile
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.log_tail: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # With a profile: cProfile of the work loop's thread, written at the clean stop.
        profiling = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        logging = ["--log-level", "DEBUG"] if self.log else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiling,
            "-m",
            "migweaver",
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
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
            *logging,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        log = self.log.open("w") if self.log else None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            if log is not None:
                log.write(line)
            self.log_tail = [*self.log_tail[-20:], line]
            # The JSON log line `operator serving` names the bound port.
            found = re.search(r'"metrics_port": ?(\d+)', line)
            if found and not self.metrics_port.done():
                self.metrics_port.set_result(int(found.group(1)))
        if log is not None:
            log.close()
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


async def _create_all(
    kube: Kube, ref: Any, bodies: Sequence[JsonDict], concurrency: int = 20
) -> None:
    """POST every body, `concurrency` at once (untracked: the run deletes what it made)."""
    limit = asyncio.Semaphore(concurrency)

    async def create(body: JsonDict) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") if ref.namespaced else None
        async with limit:
            await kube.request("POST", ref.path(namespace), body)

    await asyncio.gather(*(create(body) for body in bodies))


async def _cluster(kube: Kube, fleet: Fleet, names: Names) -> tuple[list[JsonDict], list[str]]:
    """CRDs, the namespace, Nodes, the NodeConfig and every GPU's MigLayout (no status);
    returns the layouts and the CRDs this run created."""
    crds = await kube.ensure_crds((ROOT / "crds").glob("*.yaml"))
    await kube.request("POST", NAMESPACES.path(), {"metadata": {"name": names.namespace}})
    await _create_all(kube, NODES, [node_body(n, names.label) for n in fleet.reconcilers])
    await kube.create(
        NODECONFIGS,
        {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "NodeConfig",
            "metadata": {"name": f"{names.prefix}bench-mig"},
            "spec": {
                "nodeSelector": {"matchLabels": {BENCH_LABEL: names.label}},
                "operatingMode": "mig",
            },
        },
    )
    layouts = [body for n in fleet.reconcilers for body in fleet.layout_bodies(n)]
    await _create_all(kube, MIGLAYOUTS, layouts)
    return layouts, list(crds)


async def _clean_up(kube: Kube, names: Names, crds: Sequence[str]) -> None:
    """Delete what the run made on a cluster that outlives it: pods at once (no kubelet
    confirms their end), the namespace, the MigLayouts, the NodeConfig, the Nodes, and
    the CRDs the run created."""
    await kube.request("DELETE", PODS.path(names.namespace), query={"gracePeriodSeconds": 0})
    await kube.request("DELETE", NAMESPACES.path(name=names.namespace))
    ours = [
        meta(o)["name"]
        for o in await kube.list(MIGLAYOUTS)
        if str(meta(o)["name"]).startswith(names.prefix)
    ]
    for start in range(0, len(ours), 50):
        await asyncio.gather(
            *(kube.request("DELETE", MIGLAYOUTS.path(name=n)) for n in ours[start : start + 50])
        )
    await kube.request("DELETE", NODECONFIGS.path(name=f"{names.prefix}bench-mig"))
    await kube.request(
        "DELETE", NODES.path(), query={"labelSelector": f"{BENCH_LABEL}={names.label}"}
    )
    for name in crds:
        await kube.request("DELETE", CRDS.path(name=name))


@contextlib.asynccontextmanager
async def _api(kubeconfig: Path | None, timeout_s: float) -> AsyncIterator[tuple[Path, Names]]:
    """The API to run against: the given cluster (names of this run), else a private
    emulator."""
    if kubeconfig is not None:
        yield kubeconfig, Names.unique()
        return
    with tempfile.TemporaryDirectory(prefix="migweaver-bench-") as tmp:
        async with Emulator(history_size=200_000) as emulator:
            yield emulator.write_kubeconfig(Path(tmp) / "kubeconfig"), Names()


async def run(
    nodes: int = SIZE[0],
    gpus: int = SIZE[1],
    pods: int = SIZE[2],
    *,
    kubeconfig: Path | None = None,
    profile: Path | None = None,
    log: Path | None = None,
    seed: int = 11,
    timeout_s: float | None = None,
) -> Result:
    """Set the cluster up, start the operator, create the pods and measure (see above).

    `kubeconfig`: against that cluster instead of the emulator; `profile`: write the
    operator's cProfile statistics there."""
    # Generous: the bound only keeps a broken run from hanging.
    timeout_s = timeout_s if timeout_s is not None else 120.0 + pods * 0.1
    result = Result(nodes, gpus, pods)
    tasks: list[asyncio.Task[None]] = []
    async with _api(kubeconfig, timeout_s) as (config, names):
        result.target = "emulator" if kubeconfig is None else "cluster"
        rng = random.Random(seed)
        fleet = Fleet.build(rng, [names.node(n) for n in range(nodes)], gpus)
        result.instances_before, result.in_use_before = fleet.instances, fleet.in_use
        demands = [
            d if d.mode != VgpuMode.HAMI_CORE else dataclasses.replace(d, mode=None)
            for d in random_pods(rng, pods)
        ]
        tracker = PodTracker({d.name for d in demands})
        kube = await Kube.connect(config, names.namespace)
        operator = OperatorProcess(config, names.namespace, profile, log)
        crds: list[str] = []
        try:
            layouts, crds = await _cluster(kube, fleet, names)
            changed: set[str] = set()

            def on_spec(obj: JsonDict) -> None:
                changed.add(obj["metadata"]["name"])
                tracker.wrote(time.perf_counter())

            reported: set[str] = set()
            all_reported = asyncio.Event()

            def on_status(name: str) -> None:
                reported.add(name)
                if len(reported) == len(layouts):
                    all_reported.set()

            tasks.append(asyncio.create_task(agent_loop(kube, fleet, on_spec, on_status)))
            if not await _until(all_reported, tasks, timeout_s):
                raise RuntimeError(f"{len(reported)} of {len(layouts)} layouts reported")
            await operator.start()
            await _operator_ready(kube, operator, names.namespace)
            bodies = [pod_body(d, names.namespace) for d in demands]
            await _burst(result, kube, operator, tracker, bodies, tasks, timeout_s, kubeconfig)
            _record(result, tracker, changed)
            _verify(result, tracker, fleet, await kube.list(PODS, names.namespace))
        finally:
            if operator.process is not None:
                result.operator_exit = await operator.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if kubeconfig is not None:
                    await _clean_up(kube, names, crds)
            finally:
                await kube.close()
    return result


def _cmdlines() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            found[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")
    return found


def _flag(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args[:-1]):
        if arg == name:
            return args[index + 1]
    return None


def api_server_pids(kubeconfig: Path | None) -> list[int]:
    """kube-apiserver and its etcd when they run on this machine (found by the port of the
    kubeconfig's server in /proc), so a run can say how much CPU the API itself took."""
    if kubeconfig is None:
        return []
    config = yaml.safe_load(kubeconfig.read_text())
    server = str(((config.get("clusters") or [{}])[0].get("cluster") or {}).get("server", ""))
    port = server.rpartition(":")[2].strip("/")
    pids: list[int] = []
    commands = _cmdlines()
    for pid, args in commands.items():
        if args and args[0].endswith("kube-apiserver") and _flag(args, "--secure-port") == port:
            pids.append(pid)
            etcd = _flag(args, "--etcd-servers") or ""
            pids += [
                other
                for other, words in commands.items()
                if words
                and words[0].endswith("etcd")
                and _flag(words, "--listen-client-urls") == etcd
            ]
    return pids


def _cpu(pids: Sequence[int]) -> float | None:
    times = [cpu_seconds(pid) for pid in pids]
    return sum(t for t in times if t is not None) if pids and None not in times else None


async def _burst(
    result: Result,
    kube: Kube,
    operator: OperatorProcess,
    tracker: PodTracker,
    bodies: Sequence[JsonDict],
    tasks: list[asyncio.Task[None]],
    timeout_s: float,
    kubeconfig: Path | None,
) -> None:
    """Create the pods at once and follow them until settled; the operator's figures."""
    result.rss_idle_mib = memory_mib(operator.pid).get("VmRSS")
    cpu_before = cpu_seconds(operator.pid)
    before = await operator.metrics()  # the canary's plan is not counted
    namespace = str(bodies[0]["metadata"]["namespace"])
    for ref, handle in ((PODS, tracker.on_pod), (EVENTS, tracker.on_event)):
        tasks.append(asyncio.create_task(follow(kube, ref, namespace, handle)))
    result.load = os.getloadavg()[0]
    servers = api_server_pids(kubeconfig)
    api_before, harness_before = _cpu(servers), time.process_time()
    started = time.perf_counter()
    await _create_all(kube, PODS, bodies)
    tracker.created = time.perf_counter()
    result.create_s = tracker.created - started
    result.timed_out = not await _until(tracker.done, tasks, timeout_s)
    after = await operator.metrics()
    _record_metrics(result, {k: v - before.get(k, 0.0) for k, v in after.items()})
    cpu_after = cpu_seconds(operator.pid)
    if cpu_before is not None and cpu_after is not None:
        result.operator_cpu_s = cpu_after - cpu_before
    memory = memory_mib(operator.pid)
    result.rss_end_mib = memory.get("VmRSS")
    result.rss_peak_mib = memory.get("VmHWM")
    api_after = _cpu(servers)
    if api_before is not None and api_after is not None:
        result.api_cpu_s = api_after - api_before
    result.harness_cpu_s = time.process_time() - harness_before


def _verify(result: Result, tracker: PodTracker, fleet: Fleet, pods: Sequence[JsonDict]) -> None:
    """Count double allocations and lost reservations from the pods as they end."""
    holders: dict[str, str] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if name not in tracker.names:
            continue
        allocation = pod_allocation(pod)
        if not isinstance(allocation, Allocation):
            if name in tracker.reserved and ANNOTATION_RESERVATION not in annotations_of(pod):
                result.lost_reservations += 1
            continue
        backend = fleet.backends[allocation.node]
        for container in allocation.containers:
            for device in container.devices:
                uuid = device.mig_uuid or device.gpu_uuid
                if uuid in fleet.busy_uuids or holders.setdefault(uuid, name) != name:
                    result.double_allocations += 1
                if device.mig_uuid and uuid not in backend.mig_uuids(device.gpu_index).values():
                    result.lost_reservations += 1


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


async def _operator_ready(kube: Kube, operator: OperatorProcess, namespace: str) -> None:
    """Until the operator works: a gated pod asking for no GPU is released by its first
    plan (the gate removed, nothing else), which needs its watch and its work loop."""
    await operator.metrics_port
    canary = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "canary", "namespace": namespace},
        "spec": {
            "schedulingGates": [{"name": PLACEMENT_GATE}],
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
        },
    }
    await kube.create(PODS, canary)
    await kube.wait_for(
        PODS,
        "canary",
        lambda p: p is not None and not p["spec"].get("schedulingGates"),
        timeout_s=90,
    )


def _record(result: Result, tracker: PodTracker, changed: set[str]) -> None:
    created = tracker.created
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


def _rows(r: Result) -> list[tuple[str, str]]:
    mean_plan = r.plan_seconds / r.plan_passes if r.plan_passes else None
    wait = "-" if r.pod_wait_mean_s is None else f"{r.pod_wait_mean_s:.1f} s"
    released = f"{r.released:,} of {r.pods:,}" + (
        f" ({r.unplaceable} without a place)" if r.unplaceable else ""
    )
    if r.timed_out:
        released += " (gave up waiting)"
    return [
        ("nodes x GPUs", f"{r.nodes:,} x {r.gpus_per_node}"),
        ("machine load (1-min average) at the burst", "-" if r.load is None else f"{r.load:.1f}"),
        (
            "MIG instances before",
            f"{r.instances_before:,} ({r.in_use_before:,} in use by a process)",
        ),
        ("pending pods (created in)", f"{r.pods:,} ({r.create_s:.2f} s)"),
        ("first plan written", _seconds(r.first_plan_s)),
        ("every placed pod reserved", _seconds(r.reserved_s)),
        ("**every placed pod released (ungated)**", _seconds(r.released_s)),
        ("pods released", released),
        ("double allocations, lost reservations", f"{r.double_allocations}, {r.lost_reservations}"),
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
        ("**operator CPU time, creation to the end**", _seconds(r.operator_cpu_s)),
        ("API server + etcd CPU time, same span (on this machine)", _seconds(r.api_cpu_s)),
        ("benchmark's own CPU time (agents, watches, emulator)", _seconds(r.harness_cpu_s)),
        ("operator memory after start-up (RSS)", _mib(r.rss_idle_mib)),
        ("operator memory at the end (RSS)", _mib(r.rss_end_mib)),
        ("**operator peak memory (`VmHWM`)**", _mib(r.rss_peak_mib)),
    ]


def markdown(columns: Sequence[tuple[str, Result]]) -> str:
    """One table, a column per (heading, result): the runs side by side."""
    headings = [heading for heading, _ in columns]
    rows = [_rows(r) for _, r in columns]
    lines = [
        "| | " + " | ".join(headings) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for index, (label, _) in enumerate(rows[0]):
        lines.append(f"| {label} | " + " | ".join(r[index][1] for r in rows) + " |")
    return "\n".join(lines)


async def write_rate(kubeconfig: Path, writes: int = 300, concurrency: int = 32) -> float:
    """Pod patches per second the cluster answers, through the operator's own client and
    with its concurrency: the ceiling of a burst's critical path (a reservation and a
    release per pod, a spec per changed GPU)."""
    names = Names.unique()
    kube = await Kube.connect(kubeconfig, names.namespace)
    api = await connect(str(kubeconfig))
    try:
        await kube.request("POST", NAMESPACES.path(), {"metadata": {"name": names.namespace}})
        bodies = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"probe-{n}", "namespace": names.namespace},
                "spec": {
                    "schedulingGates": [{"name": PLACEMENT_GATE}],
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
                },
            }
            for n in range(writes)
        ]
        await _create_all(kube, PODS, bodies)
        pods = Pods(api)
        limit = asyncio.Semaphore(concurrency)

        async def patch(n: int) -> None:
            async with limit:
                patch = {"metadata": {"annotations": {"migweaver.io/bench": str(n)}}}
                await pods.patch(names.namespace, f"probe-{n}", patch)

        started = time.perf_counter()
        await asyncio.gather(*(patch(n) for n in range(writes)))
        return writes / (time.perf_counter() - started)
    finally:
        with contextlib.suppress(KubeError):
            await kube.request(
                "DELETE", PODS.path(names.namespace), query={"gracePeriodSeconds": 0}
            )
            await kube.request("DELETE", NAMESPACES.path(name=names.namespace))
        await api.close()
        await kube.close()


BURST = (1000, 8, 5000)
"""(nodes, GPUs per node, pending pods): the large burst."""

INTRO = """\
## Operator against the emulator and a real control plane

The real operator (`migweaver operator --standalone --no-webhook`, a subprocess, default
batching window of 1 s idle / 5 s max) against the in-process API emulator of the e2e
tests (`tests/e2e/emulator`) and against a real Kubernetes control plane (kube-apiserver,
etcd, kube-scheduler and kube-controller-manager on loopback, no kubelet: `make bench`
starts one from the test kit `K8S_KIT` names, see `benchmarks/control_plane.py`;
`python -m benchmarks.bench_operator --kubeconfig FILE` runs against any cluster, with
objects of its own that it deletes at the end). Measured by
`benchmarks/bench_operator.py`.

The fleet is Node objects with 8 MIG-enabled {model} each (one MigLayout per GPU, one
NodeConfig in `mig` mode for all); 30 % of the GPUs already carry up to three instances,
most of them in use by a process. The agents are simulated in the benchmark's process:
one watch over every MigLayout; each new spec is applied by the agent's own `Reconciler`
to the node's `FakeBackend` and reported with the agent's status code, as `NodeAgent`
does, nodes concurrently as separate agents would (no MIG reconfiguration delay; no pod
watch: on the control plane kube-scheduler binds the released pods to their Nodes, which
have no kubelet to start them). The gated pods are of realistic sizes
(`benchmarks/workloads.py`; pods pinned to hami-core are left unpinned) and are created
at once, after the operator has started. Times are wall-clock, from the answer to the
last pod's creation. The operator shares the machine's CPUs with the API server, etcd,
the scheduler and the simulated agents (and, on the machine these figures come from, with
other work: the load average is given per run), so the times are upper bounds of its own
work. Memory is the operator process's resident set, from /proc. *Double allocations*
counts released pods given a MIG device another released pod holds or that a process ran
on before; *lost reservations* counts pods reserved that end neither released nor
reserved, and released pods whose device no longer exists: both must be 0.

### {pods} pods over {nodes} nodes

{table}

### {burst_pods:,} pods over {burst_nodes:,} nodes

{burst}

{bound}
"""

BOUND = """\
### Where the time goes

{rate}

{profile}

Planning is the `migweaver_plan_duration_seconds` row: a small part. What the operator
does per burst, and how:

- **Reads**: pods and MigLayouts come from the operator's own watches (list once, then
  watch from the list's resourceVersion), kept in a store where the newest
  resourceVersion wins, with the answers of its own writes (`core/operator/object_store.py`);
  only the first round, every resync (30 s) and a round after a write refused as stale
  list everything afresh. Answers are decoded
  as plain JSON (no client model objects); a MigLayout whose resourceVersion did not
  change is not parsed again; a GPU model's profile table is built once.
- **Writes** on the critical path: one spec per GPU whose layout changes, one reservation
  per pod, one release per pod (each conditional on the resourceVersion planned from),
  {concurrency} in flight at once, a 429 answer retried after `Retry-After` with backoff.
- **Events** (a LayoutChanged per GPU, a MigPlanned and a MigReady per pod: as many
  again) are queued, the same one aggregated with a count, and posted while no round's
  writes are in flight (for 10 s at most), so they do not take the critical path's share
  of the API server.

A burst of N pods therefore needs about 2N + (GPUs reconfigured) writes of the operator
and one status write per reconfigured GPU from the agents before the last pod is
released. A MigLayout is a large object (its status carries NVML's profile table), so
its writes cost the API server several times a pod patch. On this 2-core machine the API
server and etcd, the scheduler, the simulated agents and the operator share the CPUs: the
rows *API server + etcd CPU time* and *benchmark's own CPU time* against the operator's
show where the burst's CPU goes, and the profile shows the operator's main thread mostly
waiting for answers (`poll`). The emulator column is the same operator against an API
that answers at once. The operator's memory grows with the fleet: it keeps every
MigLayout (raw and parsed) and every pod that concerns it.

Before these changes (the same benchmark against the same kind of control plane, issue
16), the 500 pods were released 26.8 s after their creation, with 14.3 s of operator CPU
time and a 195 MiB peak.
"""


def _columns(
    label: str, size: tuple[int, int, int], runs: int, kubeconfig: Path | None
) -> list[tuple[str, Result]]:
    columns = []
    for n in range(runs):
        result = measure(*size, kubeconfig=kubeconfig)
        columns.append((f"{label} #{n + 1}" if runs > 1 else label, result))
        print(markdown(columns[-1:]), flush=True)
    return columns


def profile_table(kubeconfig: Path | None, top: int = 12) -> str:
    """One more 500-pod run with the operator under cProfile: where its main thread's
    wall-clock time went (waiting for answers is `select.epoll.poll`), by own time."""
    with tempfile.TemporaryDirectory(prefix="migweaver-profile-") as tmp:
        path = Path(tmp) / "operator.prof"
        result = measure(*SIZE, kubeconfig=kubeconfig, profile=path)
        stats = pstats.Stats(str(path))
    entries = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    total = sum(item[1][2] for item in entries) or 1.0
    lines = [
        f"A profiled run (load {result.load or 0:.1f}; every pod released "
        f"{_seconds(result.released_s)} after the last creation, under cProfile's "
        "overhead): the operator's main thread (the work loop, its watches and writes) "
        "from start to stop, by own time.",
        "",
        "| function | calls | own time | share |",
        "|---|---:|---:|---:|",
    ]
    for (filename, line, name), (_, calls, own, _cum, _) in entries[:top]:
        where = Path(filename).name if filename != "~" else ""
        label = f"`{where}:{line} {name}`" if where else f"`{name}`"
        lines.append(f"| {label} | {calls:,} | {own:.2f} s | {own / total:.0%} |")
    return "\n".join(lines)


def section(
    kubeconfig: Path | None = None, runs: int = 2, burst_runs: int = 1, burst: bool = True
) -> str:
    """The markdown section of docs/benchmarks.md: `runs` runs of the 500-pod burst on
    the emulator and on the cluster of `kubeconfig` (when given), then `burst_runs` of the
    large burst on that cluster (on the emulator without one), and a profiled run (minutes
    each)."""
    rate = (
        "The API server's answers on this machine, measured before the bursts: "
        f"**{asyncio.run(write_rate(kubeconfig)):,.0f} pod patches per second** "
        "(300 patches, 32 at once, the operator's client)."
        if kubeconfig is not None
        else "No control plane was at hand: the emulator's figures only."
    )
    targets: list[tuple[str, Path | None]] = [("emulator", None)]
    if kubeconfig is not None:
        targets.append(("control plane", kubeconfig))
    table = [c for label, config in targets for c in _columns(label, SIZE, runs, config)]
    # The large burst on the control plane when there is one (the emulator keeps every
    # version of every object in one Python process: its figures say little there).
    label, config = targets[-1]
    large = _columns(label, BURST, burst_runs, config) if burst else []
    profile = profile_table(kubeconfig) if kubeconfig is not None else ""
    return INTRO.format(
        model=MODEL,
        pods=SIZE[2],
        nodes=SIZE[0],
        table=markdown(table),
        burst_pods=BURST[2],
        burst_nodes=BURST[0],
        burst=markdown(large) if large else "(not run)",
        bound=BOUND.format(
            rate=rate, concurrency=OperatorOptions().write_concurrency, profile=profile
        ),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=SIZE[0])
    parser.add_argument("--gpus", type=int, default=SIZE[1])
    parser.add_argument("--pods", type=int, default=SIZE[2])
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="run against this cluster (objects of this run only, deleted at the end) "
        "instead of the in-process emulator",
    )
    parser.add_argument(
        "--profile", type=Path, help="write the operator's cProfile statistics to this file"
    )
    parser.add_argument("--log", type=Path, help="write the operator's log to this file")
    parser.add_argument("--runs", type=int, default=1, help="repeat, one column per run")
    args = parser.parse_args(argv)
    columns = []
    for n in range(args.runs):
        result = measure(
            args.nodes,
            args.gpus,
            args.pods,
            kubeconfig=args.kubeconfig,
            profile=args.profile,
            log=args.log,
        )
        columns.append((f"{result.target} #{n + 1}", result))
        print(markdown(columns[-1:]), flush=True)
    if len(columns) > 1:
        print(markdown(columns))


if __name__ == "__main__":
    main()
