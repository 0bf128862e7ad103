"""Anti-starvation: a pod that has waited too long holds the GPUs it would fit on soonest.

Pods are planned oldest first within a priority, but a large pod that does not fit now is
skipped, and the small pods behind it take every slot that frees up, so without help it
could wait forever. Once it has waited `PlannerOptions.starvation_after` seconds, the
planner picks the node where it would fit after the fewest busy instances (or hami-core
shares) go away, and *holds* those GPUs: no later pod in the plan may take anything on
them. As their pods finish, the GPUs drain, and the held pod is the first to fit there.

Holding is recomputed by every plan from the snapshot alone (the operator stays
stateless); the choice is deterministic, so it is stable from one plan to the next while
the cluster does not change under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from migweaver.core.planning._gpu_options import DeviceReq, GpuOptions, inst_mask
from migweaver.core.planning.pending import PendingPod

__all__ = ["choose_hold", "drain_cost"]


def drain_cost(opts: GpuOptions, vid: int, req: DeviceReq, pod: PendingPod) -> int | None:
    """How many busy instances or shares must end before one device of `req` fits on the
    GPU in state `vid` (0: fits now); None when it never could (wrong kind, too small,
    already held)."""
    view = opts.views[vid]
    t = opts.types[view.tid]
    if view.held:
        return None
    if t.mode == "hami-core":
        if not pod.allow_hami or view.mig_enabled:
            return None
        return _share_cost(opts, vid, req)
    if not pod.allow_mig:
        return None
    new_profiles, any_profiles = opts.serving(view.tid, req)
    if t.static or any(i[2] < 0 for i in view.busy):
        # A static layout never changes: only its own instances can serve.
        costs = [
            0 if inst in view.idle else 1
            for inst in (*view.busy, *view.idle)
            if inst[2] in any_profiles
        ]
        return min(costs, default=None)
    if not new_profiles:
        return None
    if view.share_count:
        return view.share_count  # the GPU must drain before MIG can be switched on
    best: int | None = None
    geometries = range(len(t.geometries)) if t.geometries is not None else [None]
    for gi in geometries:
        for pidx in new_profiles:
            for start, size, mask in t.shape.masks[pidx]:
                blockers = [i for i in view.busy if inst_mask(i) & mask]
                if best is not None and len(blockers) >= best:
                    continue
                kept = [i for i in view.busy if i not in blockers]
                rest = tuple(sorted((*kept, (start, size, pidx))))
                if gi is not None and not opts.fits_rest(view.tid, gi, rest):
                    continue
                best = len(blockers)
    return best


def _share_cost(opts: GpuOptions, vid: int, req: DeviceReq) -> int | None:
    """Shares that must end before a share of `req` fits, assuming average-sized shares
    (the view keeps totals, not each share)."""
    view = opts.views[vid]
    t = opts.types[view.tid]
    memory = t.share_memory(req)
    if memory > t.hami_memory or req.cores > t.hami_cores:
        return None
    count = view.share_count
    if not count:
        return 0
    if req.cores >= 100 or view.share_exclusive:
        return count
    average_mem = view.share_mem / count
    average_cores = view.share_cores / count
    need_mem = memory - (t.hami_memory - view.share_mem)
    need_cores = req.cores - (t.hami_cores - view.share_cores)
    by_mem = math.ceil(need_mem / average_mem) if need_mem > 0 and average_mem else 0
    by_cores = math.ceil(need_cores / average_cores) if need_cores > 0 and average_cores else 0
    by_count = count - t.split + 1 if count >= t.split else 0
    return min(count, max(by_mem, by_cores, by_count))


def _devices_per_gpu(opts: GpuOptions, vid: int, req: DeviceReq) -> int:
    """How many devices of `req` one drained GPU of this type takes (hami-core: 1 per
    container, as HAMi spreads a container's devices over distinct GPUs)."""
    t = opts.type_of(vid)
    if t.mode == "hami-core":
        return 1
    new_profiles, _ = opts.serving(t.tid, req)
    if not new_profiles:
        return 1
    smallest = t.table.profiles[new_profiles[0]]
    return max(1, min(smallest.max_count, t.table.memory_slots // smallest.memory_slices))


def choose_hold(
    opts: GpuOptions,
    nodes: Sequence[tuple[str, Sequence[tuple[int, bool]]]],
    pod: PendingPod,
) -> tuple[str, tuple[int, ...]] | None:
    """The node and GPU positions the pod would fit on soonest, or None.

    Per node, eligible GPUs are taken cheapest first (fewest busy instances in the way)
    until they can hold all of the pod's devices; the node with the smallest total wins,
    then the first by name. The largest request of the pod stands for all its devices.
    """
    req = max(
        (r for _, _, r in pod.containers),
        key=lambda r: (r.memory_mib, r.memory_percentage, r.cores),
    )
    needed = pod.total_devices
    best: tuple[int, str, tuple[int, ...]] | None = None
    memo: dict[int, tuple[int | None, int]] = {}
    for name, gpus in nodes:
        costs = []
        for pos, (vid, eligible) in enumerate(gpus):
            if not eligible:
                continue
            if vid not in memo:
                memo[vid] = (drain_cost(opts, vid, req, pod), _devices_per_gpu(opts, vid, req))
            cost, capacity = memo[vid]
            if cost is not None:
                costs.append((cost, pos, capacity))
        costs.sort()
        total = 0
        taken: list[int] = []
        room = 0
        for cost, pos, capacity in costs:
            if room >= needed:
                break
            total += cost
            taken.append(pos)
            room += capacity
        if room < needed:
            continue
        if best is None or (total, name) < (best[0], best[1]):
            best = (total, name, tuple(sorted(taken)))
    return None if best is None else (best[1], best[2])
