"""Builders for the raw API objects tests feed to migweaver: pods, GPU pods, containers,
MigLayouts and Nodes, as the API server would return them.

Each builder writes only the keys it is given (an argument left at None leaves its key
out), so a test states exactly what its object holds: "no annotations at all" and "an
empty annotations map" are different inputs to the webhook, and both can be built. Test
modules keep short helpers with their own defaults on top of these, never their own copy
of an object's structure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from migweaver.core.resources.api import API_VERSION

__all__ = [
    "JsonDict",
    "container",
    "gpu_limits",
    "gpu_pod",
    "layout",
    "metadata",
    "node",
    "placed",
    "pod",
    "required_node_affinity",
]

JsonDict = dict[str, Any]


def _given(*fields: tuple[str, Any]) -> JsonDict:
    """The fields whose value is not None, in order."""
    return {key: value for key, value in fields if value is not None}


def metadata(
    name: str,
    namespace: str | None = None,
    *,
    uid: str | None = None,
    rv: str | None = None,
    generation: int | None = None,
    created: str | None = None,
    deleting: str | None = None,
    labels: Any = None,
    annotations: Any = None,
    finalizers: Sequence[str] | None = None,
) -> JsonDict:
    """An object's `metadata` with the given fields only. Labels and annotations are
    kept as given, not copied: a test of malformed input may pass a list or a string."""
    return _given(
        ("name", name),
        ("namespace", namespace),
        ("uid", uid),
        ("resourceVersion", rv),
        ("generation", generation),
        ("creationTimestamp", created),
        ("deletionTimestamp", deleting),
        ("labels", labels),
        ("annotations", annotations),
        ("finalizers", None if finalizers is None else list(finalizers)),
    )


def gpu_limits(gpu: Any = None, mem: Any = None, pct: Any = None, cores: Any = None) -> JsonDict:
    """HAMi's resources (`nvidia.com/gpu`, `gpumem`, `gpumem-percentage`, `gpucores`);
    the ones left at None are absent. Values are written as given (ints or quantities)."""
    return _given(
        ("nvidia.com/gpu", gpu),
        ("nvidia.com/gpumem", mem),
        ("nvidia.com/gpumem-percentage", pct),
        ("nvidia.com/gpucores", cores),
    )


def container(
    name: str = "main",
    *,
    image: str | None = None,
    limits: Any = None,
    requests: Any = None,
) -> JsonDict:
    """One container; `resources` only when limits or requests are given (as given: a
    test of malformed input may pass a string)."""
    body: JsonDict = {"name": name}
    if image is not None:
        body["image"] = image
    resources: JsonDict = {}
    if limits is not None:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = requests
    if resources:
        body["resources"] = resources
    return body


def pod(
    name: str = "p",
    namespace: str | None = None,
    *,
    containers: Iterable[JsonDict] | None = None,
    gates: Sequence[str] | None = None,
    node_name: str | None = None,
    phase: str | None = None,
    status: Mapping[str, Any] | None = None,
    typed: bool = False,
    meta: JsonDict | None = None,
    uid: str | None = None,
    rv: str | None = None,
    created: str | None = None,
    deleting: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, Any] | None = None,
    **spec: Any,
) -> JsonDict:
    """A pod. `containers` defaults to one container `main`; `gates` are scheduling gate
    names; `typed` adds `apiVersion: v1, kind: Pod`; `phase` sets `status.phase` (or
    `status` the whole status); other keywords are `spec` fields (`nodeSelector=...`).
    `meta` replaces the metadata built from the other arguments."""
    body: JsonDict = {"apiVersion": "v1", "kind": "Pod"} if typed else {}
    body["metadata"] = (
        meta
        if meta is not None
        else metadata(
            name,
            namespace,
            uid=uid,
            rv=rv,
            created=created,
            deleting=deleting,
            labels=labels,
            annotations=annotations,
        )
    )
    pod_spec: JsonDict = {
        "containers": list(containers) if containers is not None else [container()]
    }
    if gates is not None:
        pod_spec["schedulingGates"] = [{"name": g} for g in gates]
    if node_name is not None:
        pod_spec["nodeName"] = node_name
    pod_spec.update(spec)
    body["spec"] = pod_spec
    if status is not None:
        body["status"] = dict(status)
    elif phase is not None:
        body["status"] = {"phase": phase}
    return body


def gpu_pod(
    name: str = "p",
    namespace: str | None = None,
    *,
    gpu: Any = 1,
    mem: Any = None,
    pct: Any = None,
    cores: Any = None,
    mode: str | None = None,
    image: str | None = None,
    container_name: str = "main",
    annotations: Mapping[str, Any] | None = None,
    **rest: Any,
) -> JsonDict:
    """A pod with one container asking for HAMi's GPU resources as limits; `mode` sets
    `nvidia.com/vgpu-mode`. Other keywords are those of `pod`."""
    notes = dict(annotations) if annotations is not None else None
    if mode is not None:
        notes = {**(notes or {}), "nvidia.com/vgpu-mode": mode}
    limits = gpu_limits(gpu, mem, pct, cores)
    return pod(
        name,
        namespace,
        containers=[container(container_name, image=image, limits=limits)],
        annotations=notes,
        **rest,
    )


def required_node_affinity(*terms: Sequence[JsonDict]) -> JsonDict:
    """`spec.affinity` requiring the node to match one of `terms` (each a list of
    `matchExpressions`)."""
    required = {"nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


def placed(profile: str, start: int, size: int, **fields: Any) -> JsonDict:
    """One MigLayout instance: `{profile, placement: {start, size}}` plus `fields`
    (status fields such as `uuid`, `inUse`, `pod`)."""
    return {"profile": profile, "placement": {"start": start, "size": size}, **fields}


def layout(
    node_name: str,
    index: int = 0,
    *,
    uuid: str | None = None,
    instances: Iterable[JsonDict] | None = (),
    status: Mapping[str, Any] | None = None,
    meta: JsonDict | None = None,
    name: str | None = None,
    **spec: Any,
) -> JsonDict:
    """A MigLayout of GPU `index` of `node_name` (named `<node>-gpu<index>` unless `name`
    or `meta` says otherwise). `instances` are the spec's (None: no `instances` key);
    other keywords are spec fields (`policy=...`, `migEnabled=...`)."""
    layout_spec: JsonDict = {"nodeName": node_name, "gpuIndex": index}
    if uuid is not None:
        layout_spec["gpuUUID"] = uuid
    layout_spec.update(spec)
    if instances is not None:
        layout_spec["instances"] = list(instances)
    body: JsonDict = {
        "apiVersion": API_VERSION,
        "kind": "MigLayout",
        "metadata": meta if meta is not None else metadata(name or f"{node_name}-gpu{index}"),
        "spec": layout_spec,
    }
    if status is not None:
        body["status"] = dict(status)
    return body


def node(
    name: str = "node-a",
    *,
    labels: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
) -> JsonDict:
    """A Node with the given labels, `spec` (taints, unschedulable) and `status`
    (conditions, capacity); the parts left at None are absent."""
    body: JsonDict = {"metadata": metadata(name, labels=labels)}
    if spec is not None:
        body["spec"] = dict(spec)
    if status is not None:
        body["status"] = dict(status)
    return body
