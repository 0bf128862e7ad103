"""Why a pod cannot be placed now, in words a person can act on.

The reason names the nearest miss, checked in this order:

1. no GPU passes the pod's filters: which filter excludes how many GPUs;
2. no eligible GPU could ever serve one device (even empty): the largest there is;
3. no eligible GPU can serve one device *now*: the profile it needs and the largest
   thing that is free, with the GPU it is on;
4. devices fit one by one but not all on one node: the node that can offer the most.

GPUs held for starving pods are mentioned when they are among the eligible ones. Nodes
kube-scheduler would refuse for the pod (`node_fit.py`) are left out; when no node is left
the code is `Filtered` and the reason groups the nodes by why they refuse it
(`node_refusals`), otherwise the reason ends with that summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from migweaver.core.planning._gpu_options import DeviceReq, GpuOptions, GpuType
from migweaver.core.planning._placement_score import profile_size_key
from migweaver.core.planning.pending import PendingPod
from migweaver.core.planning.snapshot import GpuKey, GpuState
from migweaver.core.resources.requests import (
    ANNOTATION_NOUSE_GPUTYPE,
    ANNOTATION_NOUSE_GPUUUID,
    ANNOTATION_USE_GPUTYPE,
    ANNOTATION_USE_GPUUUID,
    ANNOTATION_VGPU_MODE,
)

__all__ = [
    "CODE_FILTERED",
    "CODE_NOT_ON_ONE_NODE",
    "CODE_NO_ROOM",
    "CODE_TOO_LARGE",
    "explain",
    "node_refusals",
]

CODE_FILTERED = "Filtered"
CODE_TOO_LARGE = "TooLarge"
CODE_NO_ROOM = "NoRoom"
CODE_NOT_ON_ONE_NODE = "NotOnOneNode"

Groups = Sequence[tuple[int, Sequence[GpuState]]]


def _failed_filters(t: GpuType, gpu: GpuState, pod: PendingPod) -> list[str]:
    """The pod's filters that exclude this GPU, each as `annotation=value`."""
    d = pod.demand
    failed = []
    if not pod.allows_mode(t.mode):
        failed.append(f"{ANNOTATION_VGPU_MODE}={d.mode.value if d.mode else ''}")
    if pod.use_gputype and not any(u in t.name_upper for u in pod.use_gputype):
        failed.append(f"{ANNOTATION_USE_GPUTYPE}={','.join(d.use_gputype)}")
    if any(u in t.name_upper for u in pod.nouse_gputype):
        failed.append(f"{ANNOTATION_NOUSE_GPUTYPE}={','.join(d.nouse_gputype)}")
    if pod.use_uuid is not None and gpu.uuid not in pod.use_uuid:
        failed.append(f"{ANNOTATION_USE_GPUUUID}={','.join(d.use_gpuuuid)}")
    if gpu.uuid in pod.nouse_uuid:
        failed.append(f"{ANNOTATION_NOUSE_GPUUUID}={','.join(d.nouse_gpuuuid)}")
    return failed


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_PLURAL_VERBS = {"is": "are", "has": "have", "does": "do"}
_SHOWN_NODES = 3
_SHOWN_GROUPS = 4


def node_refusals(refused: Mapping[str, str]) -> str:
    """Nodes that refuse a pod (name -> phrase after the name), grouped by phrase, largest
    group first, a few names each: `node-a is cordoned; 998 nodes (node-c, node-d,
    node-e, ...) do not match the pod's nodeSelector zone=a`. Short on any cluster size."""
    by_phrase: dict[str, list[str]] = {}
    for node, phrase in refused.items():
        by_phrase.setdefault(phrase, []).append(node)
    groups = sorted(by_phrase.items(), key=lambda item: (-len(item[1]), item[0]))
    parts = []
    for phrase, nodes in groups[:_SHOWN_GROUPS]:
        nodes.sort()
        if len(nodes) == 1:
            parts.append(f"{nodes[0]} {phrase}")
            continue
        verb, _, rest = phrase.partition(" ")
        shown = ", ".join(nodes[:_SHOWN_NODES]) + (", ..." if len(nodes) > _SHOWN_NODES else "")
        parts.append(f"{len(nodes)} nodes ({shown}) {_PLURAL_VERBS.get(verb, verb)} {rest}")
    others = sum(len(nodes) for _, nodes in groups[_SHOWN_GROUPS:])
    if others:
        parts.append(f"{_plural(others, 'other node')} refuse it for other reasons")
    return "; ".join(parts)


def _filter_reason(opts: GpuOptions, pod: PendingPod, groups: Groups) -> tuple[str | None, Groups]:
    """(a reason when no GPU passes the filters, the groups of eligible GPUs)."""
    excluded: dict[str, dict[str, int]] = {}
    eligible: list[tuple[int, Sequence[GpuState]]] = []
    total = 0
    for vid, gpus in groups:
        t = opts.type_of(vid)
        total += len(gpus)
        if pod.has_uuid_filter:
            verdicts = [([gpu], _failed_filters(t, gpu, pod)) for gpu in gpus]
        else:
            # Without UUID filters the verdict depends on the GPU type only.
            verdicts = [(list(gpus), _failed_filters(t, gpus[0], pod))]
        passing = [gpu for members, failed in verdicts if not failed for gpu in members]
        for members, failed in verdicts:
            for label in failed:
                kinds = excluded.setdefault(label, {})
                kind = t.mode if label.startswith(ANNOTATION_VGPU_MODE) else ""
                kinds[kind] = kinds.get(kind, 0) + len(members)
        if passing:
            eligible.append((vid, passing))
    if eligible:
        return None, eligible
    if not total:
        return "the cluster has no GPU that migweaver manages", []
    parts = []
    for label in sorted(excluded):
        for kind, n in sorted(excluded[label].items()):
            parts.append(f"{label} excludes {_plural(n, f'{kind} GPU' if kind else 'GPU')}")
    return f"no GPU passes the pod's filters: {'; '.join(parts)}", []


def _serves_when_empty(opts: GpuOptions, vid: int, req: DeviceReq) -> bool:
    t = opts.type_of(vid)
    if t.mode == "hami-core":
        return t.share_memory(req) <= t.hami_memory and req.cores <= t.hami_cores
    new_profiles, any_profiles = opts.serving(t.tid, req)
    if t.static:
        view = opts.views[vid]
        return any(i[2] in any_profiles for i in (*view.busy, *view.idle))
    return bool(new_profiles)


def _too_big(opts: GpuOptions, req: DeviceReq, eligible: Groups) -> str:
    """`asks ... per device; the largest profile of any eligible GPU is ...`."""
    largest_mig: tuple[tuple[int, ...], str] | None = None
    largest_hami = 0
    geometries = False
    for vid, _ in eligible:
        t = opts.type_of(vid)
        if t.mode == "hami-core":
            largest_hami = max(largest_hami, t.hami_memory)
            continue
        geometries = geometries or t.geometries is not None
        if t.static:
            view = opts.views[vid]
            candidates = [i[2] for i in (*view.busy, *view.idle) if i[2] >= 0]
        else:
            candidates = list(t.by_size)
        for pidx in candidates:
            p = t.table.profiles[pidx]
            compute = f", {t.instance_cores(pidx)} % compute" if req.cores else ""
            text = f"{p.name} ({p.memory_mib} MiB{compute})"
            if largest_mig is None or profile_size_key(p) > largest_mig[0]:
                largest_mig = (profile_size_key(p), text)
    parts = []
    if largest_mig is not None:
        within = " (within its configured geometries)" if geometries else ""
        parts.append(f"the largest profile of any eligible GPU{within} is {largest_mig[1]}")
    if largest_hami:
        parts.append(f"the largest eligible hami-core GPU shares {largest_hami} MiB")
    if not parts:
        parts.append("no eligible GPU has a profile or share that could serve it")
    return f"asks {req.describe()} per device; {' and '.join(parts)}"


def _largest_free(opts: GpuOptions, vid: int) -> tuple[tuple[int, ...], str] | None:
    """The largest instance that is free or could be created on a GPU now (MIG), or the
    largest share that could be given (hami-core), as (sort key, text)."""
    view = opts.views[vid]
    t = opts.types[view.tid]
    if view.held:
        return None
    if t.mode == "hami-core":
        if view.mig_enabled or view.share_count >= t.split or view.share_exclusive:
            return None
        free = t.hami_memory - view.share_mem
        return ((free,), f"{free} MiB") if free > 0 else None
    best: tuple[tuple[int, ...], str] | None = None
    candidates = [i[2] for i in view.idle if i[2] >= 0] if view.mig_enabled else []
    candidates += [p for p in t.by_size if opts.can_create(vid, p)]
    for pidx in candidates:
        p = t.table.profiles[pidx]
        if best is None or profile_size_key(p) > best[0]:
            best = (profile_size_key(p), p.name)
    return best


def _label(gpus: Sequence[GpuState]) -> str:
    return min(gpus, key=lambda g: g.key).label


def _no_room(opts: GpuOptions, req: DeviceReq, eligible: Groups) -> str:
    """`no eligible GPU has a free placement for X; largest free: Y on node/gpuN`."""
    needed_mig: tuple[tuple[int, ...], str] | None = None
    mig_free: tuple[tuple[int, ...], str] | None = None
    hami_free: tuple[tuple[int, ...], str] | None = None
    has_mig = has_hami = False
    for vid, gpus in eligible:
        t = opts.type_of(vid)
        free = _largest_free(opts, vid)
        label = _label(gpus)
        if t.mode == "hami-core":
            has_hami = True
            if free and (hami_free is None or free[0] > hami_free[0]):
                hami_free = (free[0], f"{free[1]} on {label}")
            continue
        has_mig = True
        new_profiles, _ = opts.serving(t.tid, req)
        if new_profiles:
            p = t.table.profiles[new_profiles[0]]
            if needed_mig is None or profile_size_key(p) < needed_mig[0]:
                needed_mig = (profile_size_key(p), p.name)
        if free and (mig_free is None or free[0] > mig_free[0]):
            mig_free = (free[0], f"{free[1]} on {label}")
    parts = []
    if has_mig:
        what = (
            f"a free placement for {needed_mig[1]}"
            if needed_mig
            else "a free instance that serves it"
        )
        largest = f"largest free: {mig_free[1]}" if mig_free else "nothing is free on them"
        kind = "MIG GPU" if has_hami else "GPU"
        parts.append(f"no eligible {kind} has {what}; {largest}")
    if has_hami:
        cores = f" and {req.cores} % compute" if req.cores else ""
        memory = req.memory_mib or f"{req.memory_percentage} % of the GPU's"
        most = f"most free: {hami_free[1]}" if hami_free else "none takes another share"
        parts.append(f"no eligible hami-core GPU can share {memory} MiB{cores}; {most}")
    return "; ".join(parts)


def explain(
    opts: GpuOptions,
    pod: PendingPod,
    groups: Groups,
    best_offer: Callable[[], tuple[str, int] | None],
    held_by: Mapping[GpuKey, str],
) -> tuple[str, str]:
    """(code, reason) for a pod that cannot be placed now. `groups` holds every GPU
    grouped by view; `best_offer` computes (node, devices it can offer) only when needed.

    Codes: `Filtered` and `TooLarge` (waiting will not help: the pod or the cluster must
    change), `NoRoom` and `NotOnOneNode` (the pod fits once capacity frees up).
    """
    reason, eligible = _filter_reason(opts, pod, groups)
    if reason is not None:
        return CODE_FILTERED, reason
    held = sorted({held_by[g.key] for _, gpus in eligible for g in gpus if g.key in held_by})
    held_count = sum(1 for _, gpus in eligible for g in gpus if g.key in held_by)
    suffix = (
        f"; {_plural(held_count, 'eligible GPU')} held for starving pod(s) {', '.join(held)}"
        if held_count
        else ""
    )
    reqs = list(dict.fromkeys(req for _, _, req in pod.containers))
    for req in reqs:
        if not any(_serves_when_empty(opts, vid, req) for vid, _ in eligible):
            return CODE_TOO_LARGE, _too_big(opts, req, eligible)
    for req in reqs:
        if not any(
            opts.best(vid, req, pod.allow_mig, pod.allow_hami, pod.spread_gpu) is not None
            for vid, _ in eligible
        ):
            return CODE_NO_ROOM, _no_room(opts, req, eligible) + suffix
    offer = best_offer()
    needed = pod.total_devices
    if offer is None:
        text = f"needs {needed} devices on one node; no node can offer any{suffix}"
    else:
        node, count = offer
        text = (
            f"needs {needed} devices on one node; the best node ({node}) can offer {count}{suffix}"
        )
    return CODE_NOT_ON_ONE_NODE, text
