"""The simulation loop: pods arrive, are planned, start on real (fake) instances, leave.

The loop drives a policy exactly the way the operator drives the planner:

1. a pod arrives gated; the operator collects gated pods for `batchWindow` seconds;
2. it builds a snapshot from the MigLayouts (spec + status) and its own records
   (instances reserved for pods about to start, hami-core shares) and plans every gated
   pod at once;
3. it writes the changed MigLayout specs; the node's agent (`Reconciler` on a
   `FakeBackend`, NVML's rules enforced) converges each GPU, protecting the instances
   pods hold or are promised;
4. a pod whose devices now exist starts (after `reconfigureSeconds` when an instance had
   to be created for it): a simulated process runs on each of its MIG devices or on its
   hami-core GPU; it ends after its `duration`, and its devices become free;
5. a pod that fits nowhere waits for the next plan (the next arrival or departure).

Time is virtual: the clock jumps from event to event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from migweaver.core.mig.geometry import PlacedInstance
from migweaver.core.mig.profiles import normalize_profile_name
from migweaver.core.planning.pending import pending_pod
from migweaver.core.planning.plan import Assignment, Device, Plan, Unplaceable
from migweaver.core.planning.snapshot import GpuKey, Share
from migweaver.sim.events import EventKind, EventQueue
from migweaver.sim.fleet import Fleet
from migweaver.sim.policies import Policy
from migweaver.sim.results import DeviceUse, PodOutcome, Sample, SimResult
from migweaver.sim.scenario import LoadedScenario, SimPod

__all__ = ["Progress", "Simulation", "run_simulation"]

PodState = Literal["waiting", "starting", "running", "done"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands, for a progress line: virtual time and pods seen so far."""

    now: float
    arrived: int
    done: int
    total: int


@dataclass(slots=True)
class _Pod:
    pod: SimPod
    outcome: PodOutcome
    state: PodState = "waiting"
    assignment: Assignment | None = None
    pids: list[tuple[GpuKey, int]] = field(default_factory=list)


class Simulation:
    """One run of a scenario under a policy; `run()` returns the result."""

    def __init__(
        self,
        loaded: LoadedScenario,
        policy: Policy,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.progress = progress
        self._arrived = 0
        self._done = 0
        self.scenario = loaded.scenario
        self.policy = policy
        self.queue = EventQueue()
        self.fleet = Fleet(self.scenario, clock=lambda: self.queue.now)
        self.pods: dict[str, _Pod] = {
            p.key: _Pod(p, PodOutcome(p.key, p.arrival, p.duration)) for p in loaded.pods
        }
        self._next_plan: float | None = None
        self._samples: list[Sample] = []
        self._plans = 0
        self._start_failures = 0
        self._total_memory = sum(g.model.memory_mib for g in self.fleet)
        self._total_gpus = len(self.fleet.gpus)

    # ------------------------------------------------------------------------------ run

    def run(self) -> SimResult:
        for pod in self.loaded.pods:
            self.queue.push(pod.arrival, EventKind.ARRIVE, pod.key)
        end = self.scenario.end
        while self.queue:
            next_time = self.queue.peek_time()
            assert next_time is not None
            if end is not None and next_time > end:
                break
            event = self.queue.pop()
            if event.kind is EventKind.ARRIVE:
                self._arrived += 1
                self._schedule_plan()
            elif event.kind is EventKind.PLAN:
                self._plan()
            elif event.kind is EventKind.START:
                self._start(self.pods[event.pod])
            else:
                self._end(self.pods[event.pod])
            if self.queue.peek_time() != self.queue.now:
                self._sample()
                if self.progress is not None:
                    self.progress(
                        Progress(self.queue.now, self._arrived, self._done, len(self.pods))
                    )
        horizon = end if end is not None else self.queue.now
        steps = self.fleet.steps
        return SimResult(
            scenario=self.loaded.name,
            policy=self.policy.name,
            horizon=horizon,
            gpus=tuple(g.label for g in self.fleet),
            gpu_memory={g.label: g.model.memory_mib for g in self.fleet},
            pods=[p.outcome for p in self.pods.values()],
            samples=self._samples,
            plans=self._plans,
            reconfigurations=steps.passes,
            instances_created=steps.created,
            instances_destroyed=steps.destroyed,
            mode_switches=steps.mode_switches,
            failures=list(steps.failures),
            start_failures=self._start_failures,
        )

    # --------------------------------------------------------------------------- events

    def _schedule_plan(self) -> None:
        if self._next_plan is None:
            self._next_plan = self.queue.now + self.scenario.batch_window
            self.queue.push(self._next_plan, EventKind.PLAN)

    def _waiting(self) -> list[_Pod]:
        now = self.queue.now
        return [p for p in self.pods.values() if p.state == "waiting" and p.pod.arrival <= now]

    def _plan(self) -> None:
        self._next_plan = None
        waiting = self._waiting()
        if not waiting:
            return
        self._plans += 1
        snapshot = self.fleet.snapshot(
            self.loaded.epoch + self.queue.now, self._reservations(), self._shares()
        )
        plan = self.policy.plan(snapshot, [p.pod.demand for p in waiting], self.loaded.config)
        self._apply(plan)
        for key, result in plan.pods.items():
            pod = self.pods[key]
            if isinstance(result, Unplaceable):
                pod.outcome.code, pod.outcome.reason = result.code, result.reason
            else:
                self._reserve(pod, result)

    def _apply(self, plan: Plan) -> None:
        """Write the plan's specs and let the agents converge them; new reservations are
        held first, so no agent pass can take an instance promised to a pod."""
        for key, given in plan.reservations.items():
            for instance, pod in given:
                self.fleet.gpus[key].held[str(instance.placement)] = pod
        for key in sorted(set(plan.layouts) | set(plan.mig_enabled)):
            self.fleet.apply(key, plan.layouts.get(key), plan.mig_enabled.get(key))

    def _reserve(self, pod: _Pod, assignment: Assignment) -> None:
        missing = [d for d in assignment.devices if d.mode == "mig" and not self._exists(d)]
        if missing:
            self._start_failures += 1
            for device in assignment.devices:
                if device.placement is not None:
                    self.fleet.gpus[device.gpu_key].held.pop(str(device.placement), None)
            pod.outcome.code = "NotApplied"
            pod.outcome.reason = (
                f"planned on {assignment.node}, but the agent could not create "
                f"{missing[0].profile} at {missing[0].placement}"
            )
            return
        pod.state = "starting"
        pod.assignment = assignment
        pod.outcome.code = pod.outcome.reason = None
        for device in assignment.devices:
            gpu = self.fleet.gpus[device.gpu_key]
            gpu.dirty = True
            if device.placement is not None:
                gpu.held[str(device.placement)] = pod.pod.key
        delay = self.scenario.reconfigure_seconds
        new = any(d.new_instance for d in assignment.devices)
        self.queue.push(self.queue.now + (delay if new else 0.0), EventKind.START, pod.pod.key)

    def _exists(self, device: Device) -> bool:
        assert device.placement is not None
        assert device.profile is not None
        gpu = self.fleet.gpus[device.gpu_key]
        wanted = normalize_profile_name(device.profile)
        found = any(
            i.placement == device.placement and normalize_profile_name(i.profile) == wanted
            for i in gpu.backend.placed_instances(gpu.index)
        )
        return found and self.fleet.mig_uuid(device.gpu_key, device.placement) is not None

    def _start(self, pod: _Pod) -> None:
        assert pod.assignment is not None
        now = self.queue.now
        uses: list[DeviceUse] = []
        containers = {c.name: c for c in pod.assignment.containers}
        for name, _, req in pending_pod(pod.pod.demand).containers:
            for device in containers[name].devices:
                gpu = self.fleet.gpus[device.gpu_key]
                requested = req.memory_mib or gpu.model.memory_mib * req.memory_percentage // 100
                if device.placement is not None:
                    uuid = self.fleet.mig_uuid(device.gpu_key, device.placement)
                    assert uuid is not None, f"{pod.pod.key}: instance vanished before start"
                    pid = gpu.backend.start_process(gpu.index, uuid, requested)
                    gpu.held.pop(str(device.placement), None)
                    gpu.held[uuid] = pod.pod.key
                    profile = gpu.model.table.get(device.profile or "")
                    slices = profile.compute_slices if profile else 0
                    compute = slices / max(p.compute_slices for p in gpu.model.profiles)
                else:
                    pid = gpu.backend.start_process(gpu.index, None, requested)
                    compute = device.cores / 100
                gpu.dirty = True
                pod.pids.append((device.gpu_key, pid))
                uses.append(
                    DeviceUse(
                        gpu=gpu.label,
                        mode=device.mode,
                        profile=device.profile,
                        start_slot=device.placement.start if device.placement else None,
                        slots=device.placement.size if device.placement else None,
                        memory_mib=device.memory_mib,
                        requested_mib=requested,
                        compute=compute,
                    )
                )
        pod.state = "running"
        pod.outcome.started = now
        pod.outcome.node = pod.assignment.node
        pod.outcome.devices = tuple(uses)
        self.queue.push(now + pod.pod.duration, EventKind.END, pod.pod.key)

    def _end(self, pod: _Pod) -> None:
        for key, pid in pod.pids:
            gpu = self.fleet.gpus[key]
            gpu.backend.stop_process(pid)
            gpu.dirty = True
            for held, owner in list(gpu.held.items()):
                if owner == pod.pod.key:
                    del gpu.held[held]
        pod.pids.clear()
        pod.state = "done"
        self._done += 1
        pod.outcome.ended = self.queue.now
        if self._waiting():
            self._schedule_plan()

    # ----------------------------------------------------------------- operator records

    def _reservations(self) -> dict[GpuKey, dict[PlacedInstance, str]]:
        """Instances planned for pods that have not started yet."""
        result: dict[GpuKey, dict[PlacedInstance, str]] = {}
        for pod in self.pods.values():
            if pod.state != "starting" or pod.assignment is None:
                continue
            for device in pod.assignment.devices:
                if device.placement is None:
                    continue
                profile = self.fleet.spec_profile(device.gpu_key, device.placement)
                placed = PlacedInstance(profile or device.profile or "", device.placement)
                result.setdefault(device.gpu_key, {})[placed] = pod.pod.key
        return result

    def _shares(self) -> dict[GpuKey, list[Share]]:
        """hami-core shares of pods starting or running."""
        result: dict[GpuKey, list[Share]] = {}
        for pod in self.pods.values():
            if pod.state not in ("starting", "running") or pod.assignment is None:
                continue
            for device in pod.assignment.devices:
                if device.mode == "hami-core":
                    share = Share(pod.pod.key, device.memory_mib, device.cores)
                    result.setdefault(device.gpu_key, []).append(share)
        return result

    def _sample(self) -> None:
        running = [p for p in self.pods.values() if p.state == "running"]
        allocated = sum(d.memory_mib for p in running for d in p.outcome.devices)
        requested = sum(d.requested_mib for p in running for d in p.outcome.devices)
        compute = sum(d.compute for p in running for d in p.outcome.devices)
        sample = Sample(
            time=self.queue.now,
            running=len(running),
            pending=len(self._waiting()),
            memory_allocated=allocated / max(1, self._total_memory),
            memory_requested=requested / max(1, self._total_memory),
            compute=compute / max(1, self._total_gpus),
        )
        if self._samples and self._samples[-1].time == sample.time:
            self._samples[-1] = sample
        else:
            self._samples.append(sample)


def run_simulation(
    loaded: LoadedScenario,
    policy: Policy,
    progress: Callable[[Progress], None] | None = None,
) -> SimResult:
    """Run `loaded` under `policy` from t=0 until nothing is left (or `end`); `progress`
    is called after every instant of virtual time."""
    return Simulation(loaded, policy, progress).run()
