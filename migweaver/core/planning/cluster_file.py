"""`migweaver plan` input files: CLUSTER.yaml to a Snapshot, PODS.yaml to pod demands.

Pure: the functions take the text and a name for messages. Every problem is collected and
reported at once as `InputError`, each message naming the file and the field
(`cluster.yaml: nodes[1].gpus[0].model: unknown model 'A200' (known: ...)`). The format
is documented with examples in docs/planner.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import yaml

from migweaver.core.mig.catalog import GpuModel, get_model, match_model, model_keys
from migweaver.core.mig.geometry import layout_problems
from migweaver.core.mig.profiles import Placement
from migweaver.core.planning.snapshot import (
    GpuState,
    InstanceState,
    NodeState,
    Share,
    Snapshot,
    fake_gpu_uuid,
)
from migweaver.core.resources.api import describe_kind, parse_timestamp
from migweaver.core.resources.node_fit import Taint
from migweaver.core.resources.requests import (
    DEFAULTS,
    InvalidRequest,
    PodDemand,
    RequestDefaults,
    parse_pod,
)

__all__ = ["InputError", "PodsFile", "load_cluster", "load_pods", "yaml_documents"]

_TOP_KEYS: Final = ("nodes", "now")
_NODE_KEYS: Final = ("name", "mode", "labels", "unschedulable", "ready", "taints", "gpus")
_TAINT_KEYS: Final = ("key", "value", "effect")
_TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_GPU_KEYS: Final = (
    "model", "count", "index", "uuid", "name", "memoryMiB", "policy", "migEnabled",
    "instances", "shares",
)  # fmt: skip
_MAX_GPUS_PER_ENTRY: Final = 64
"""A bound on `count` (as in simulation scenarios): a typo such as 1000000000 would
otherwise build that many GPUs before anything else is checked."""
_INSTANCE_KEYS: Final = ("profile", "placement", "inUse", "pod", "uuid")
_SHARE_KEYS: Final = ("pod", "memoryMiB", "cores")


class InputError(Exception):
    """One or more problems with an input file; `errors` are complete messages."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []

    def add(self, path: str, message: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.messages.append(f"{where}: {message}")

    def unknown_keys(self, path: str, raw: Mapping[Any, Any], known: Sequence[str]) -> None:
        """One error for each key of the mapping at `path` that is not `known` (a typo)."""
        for key in raw:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                self.add(where, f"unknown key (expected: {', '.join(known)})")


def yaml_documents(text: str, source: str) -> list[Any]:
    """Every document of a YAML text (None for an empty one); `InputError` naming the
    file (and the line, when PyYAML knows it) for anything PyYAML cannot read."""
    try:
        return list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise InputError([f"{where}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise InputError([f"{source}: invalid YAML: {exc}"]) from None
    except ValueError as exc:
        # PyYAML's timestamp constructor on a date that does not exist (2024-13-01).
        raise InputError([f"{source}: invalid YAML: {exc}"]) from None
    except RecursionError:
        raise InputError([f"{source}: invalid YAML: nested too deeply"]) from None


def _time_text(value: Any) -> Any:
    """A time as the API writes it (text): an unquoted time in the YAML is a date or
    datetime to PyYAML, and would otherwise count as no time at all."""
    return value.isoformat() if isinstance(value, date) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- cluster


@dataclass
class _GpuSpec:
    """One GPU entry, checked but not yet expanded (`count` copies)."""

    path: str
    model: GpuModel
    count: int
    index: int | None
    uuid: str | None
    name: str
    memory: int
    policy: str
    mig_enabled: bool | None
    instances: list[InstanceState] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)


def load_cluster(text: str, source: str = "cluster.yaml") -> Snapshot:
    """Parse CLUSTER.yaml. Raises `InputError` listing every problem."""
    documents = [d for d in yaml_documents(text, source) if d is not None]
    errors = _Errors(source)
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        got = "no document" if not documents else describe_kind(documents[0])
        if len(documents) > 1:
            got = f"{len(documents)} documents"
        raise InputError([f"{source}: expected one mapping with a `nodes:` list, got {got}"])
    doc = documents[0]
    errors.unknown_keys("", doc, _TOP_KEYS)
    now = 0.0
    if doc.get("now") is not None:
        raw_now = doc["now"]
        now = parse_timestamp(str(_time_text(raw_now)))
        if now == float("inf"):
            errors.add(
                "now", f"expected an RFC 3339 time such as 2024-05-01T12:00:00Z, got {raw_now!r}"
            )
            now = 0.0
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list):
        errors.add("nodes", f"expected a list of nodes, got {describe_kind(raw_nodes)}")
        raise InputError(errors.messages)
    nodes: list[NodeState] = []
    seen_nodes: set[str] = set()
    seen_uuids: set[str] = set()
    for i, raw in enumerate(raw_nodes):
        node = _node(errors, f"nodes[{i}]", raw, seen_uuids)
        if node is None:
            continue
        if node.name in seen_nodes:
            errors.add(f"nodes[{i}].name", f"duplicate node name {node.name!r}")
        seen_nodes.add(node.name)
        nodes.append(node)
    if errors.messages:
        raise InputError(errors.messages)
    return Snapshot(nodes=tuple(nodes), now=now)


def _node(errors: _Errors, path: str, raw: Any, seen_uuids: set[str]) -> NodeState | None:
    if not isinstance(raw, Mapping):
        errors.add(path, f"expected a node mapping, got {describe_kind(raw)}")
        return None
    errors.unknown_keys(path, raw, _NODE_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        errors.add(f"{path}.name", f"expected a node name, got {describe_kind(name)}")
        name = ""
    mode = raw.get("mode", "hami-core")
    if mode not in ("mig", "hami-core"):
        errors.add(f"{path}.mode", f"expected mig or hami-core, got {mode!r}")
        mode = "hami-core"
    labels = raw.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        errors.add(f"{path}.labels", "expected a mapping of strings to strings")
        labels = {}
    flags: dict[str, bool] = {}
    for key, default in (("unschedulable", False), ("ready", True)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            errors.add(f"{path}.{key}", f"expected true or false, got {value!r}")
            value = default
        flags[key] = value
    taints = _taints(errors, f"{path}.taints", raw.get("taints", []))
    raw_gpus = raw.get("gpus", [])
    if isinstance(raw_gpus, Mapping):
        raw_gpus = [raw_gpus]
    if not isinstance(raw_gpus, list):
        errors.add(f"{path}.gpus", f"expected a list of GPUs, got {describe_kind(raw_gpus)}")
        raw_gpus = []
    specs = [
        spec
        for j, item in enumerate(raw_gpus)
        if (spec := _gpu_spec(errors, f"{path}.gpus[{j}]", item)) is not None
    ]
    gpus = _expand(errors, name, mode, specs, seen_uuids)
    return NodeState(
        name=name,
        mode=mode,
        gpus=tuple(gpus),
        labels=dict(labels),
        unschedulable=flags["unschedulable"],
        ready=flags["ready"],
        taints=taints,
    )


def _taints(errors: _Errors, path: str, raw: Any) -> tuple[Taint, ...]:
    """`[{key: gpu, value: reserved, effect: NoSchedule}]`, or kubectl's
    `gpu=reserved:NoSchedule` strings."""
    if not isinstance(raw, list):
        errors.add(path, f"expected a list of taints, got {describe_kind(raw)}")
        return ()
    result: list[Taint] = []
    for k, raw_item in enumerate(raw):
        where = f"{path}[{k}]"
        item: Mapping[str, Any]
        if isinstance(raw_item, str):
            if ":" not in raw_item:
                errors.add(where, f"expected key=value:Effect or key:Effect, got {raw_item!r}")
                continue
            head, _, tail = raw_item.rpartition(":")
            name, _, text = head.partition("=")
            item = {"key": name, "value": text, "effect": tail}
        elif isinstance(raw_item, Mapping):
            item = raw_item
            errors.unknown_keys(where, item, _TAINT_KEYS)
        else:
            errors.add(
                where,
                f"expected a taint mapping or key=value:Effect, got {describe_kind(raw_item)}",
            )
            continue
        key, value, effect = item.get("key"), item.get("value", ""), item.get("effect")
        if not isinstance(key, str) or not key:
            errors.add(f"{where}.key", f"expected a taint key, got {describe_kind(key)}")
            continue
        if not isinstance(value, str):
            errors.add(f"{where}.value", f"expected a string, got {describe_kind(value)}")
            continue
        if effect not in _TAINT_EFFECTS:
            errors.add(
                f"{where}.effect", f"expected one of {', '.join(_TAINT_EFFECTS)}, got {effect!r}"
            )
            continue
        result.append(Taint(key, value, str(effect)))
    return tuple(result)


def _expand(
    errors: _Errors, node: str, mode: str, specs: list[_GpuSpec], seen_uuids: set[str]
) -> list[GpuState]:
    """GPU entries to GpuStates: indices assigned in order, UUIDs made up when absent."""
    gpus: list[GpuState] = []
    used: set[int] = set()
    next_index = 0
    for spec in specs:
        if spec.count > 1 and (spec.index is not None or spec.uuid is not None):
            errors.add(spec.path, "index and uuid describe one GPU; leave them out with count > 1")
        for k in range(spec.count):
            index = spec.index if spec.index is not None and k == 0 else next_index
            while spec.index is None and index in used:
                index += 1
            if index in used:
                errors.add(f"{spec.path}.index", f"GPU index {index} is used twice on this node")
            used.add(index)
            next_index = max(next_index, index + 1)
            uuid = spec.uuid if spec.uuid and spec.count == 1 else fake_gpu_uuid(node, index)
            if uuid in seen_uuids:
                errors.add(f"{spec.path}.uuid", f"GPU UUID {uuid} is used twice")
            seen_uuids.add(uuid)
            enabled = spec.mig_enabled
            if enabled is None:
                enabled = mode == "mig" or bool(spec.instances)
            gpus.append(
                GpuState(
                    node=node,
                    index=index,
                    uuid=uuid,
                    name=spec.name,
                    model=spec.model.key,
                    mode="mig" if mode == "mig" else "hami-core",
                    policy="static" if spec.policy == "static" else "dynamic",
                    mig_enabled=enabled,
                    table=spec.model.table,
                    memory_mib=spec.memory,
                    instances=tuple(spec.instances),
                    shares=tuple(spec.shares),
                )
            )
    return sorted(gpus, key=lambda g: g.index)


def _gpu_spec(errors: _Errors, path: str, raw: Any) -> _GpuSpec | None:
    if not isinstance(raw, Mapping):
        errors.add(path, f"expected a GPU mapping, got {describe_kind(raw)}")
        return None
    errors.unknown_keys(path, raw, _GPU_KEYS)
    model_name = raw.get("model")
    model = None
    if isinstance(model_name, str):
        model = get_model(model_name) or match_model(model_name)
    if model is None:
        errors.add(
            f"{path}.model",
            f"unknown model {model_name!r} (known: {', '.join(model_keys())})",
        )
        return None
    count = raw.get("count", 1)
    if not _is_int(count) or not 1 <= count <= _MAX_GPUS_PER_ENTRY:
        errors.add(
            f"{path}.count",
            f"expected a whole number from 1 to {_MAX_GPUS_PER_ENTRY}, got {count!r}",
        )
        count = 1
    index = raw.get("index")
    if index is not None and (not _is_int(index) or index < 0):
        errors.add(f"{path}.index", f"expected a GPU index >= 0, got {index!r}")
        index = None
    uuid = raw.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        errors.add(f"{path}.uuid", f"expected a string, got {describe_kind(uuid)}")
        uuid = None
    name = raw.get("name", f"NVIDIA {model.key}")
    if not isinstance(name, str):
        errors.add(f"{path}.name", f"expected the NVML device name, got {describe_kind(name)}")
        name = f"NVIDIA {model.key}"
    memory = raw.get("memoryMiB", model.memory_mib)
    if not _is_int(memory) or memory < 1:
        errors.add(f"{path}.memoryMiB", f"expected MiB >= 1, got {memory!r}")
        memory = model.memory_mib
    policy = raw.get("policy", "dynamic")
    if policy not in ("dynamic", "static"):
        errors.add(f"{path}.policy", f"expected dynamic or static, got {policy!r}")
    enabled = raw.get("migEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        errors.add(f"{path}.migEnabled", f"expected true or false, got {enabled!r}")
        enabled = None
    spec = _GpuSpec(path, model, count, index, uuid, name, memory, str(policy), enabled)
    spec.instances = _instances(errors, path, raw.get("instances", []), model)
    spec.shares = _shares(errors, path, raw.get("shares", []))
    return spec


def _instances(errors: _Errors, path: str, raw: Any, model: GpuModel) -> list[InstanceState]:
    if not isinstance(raw, list):
        errors.add(f"{path}.instances", f"expected a list, got {describe_kind(raw)}")
        return []
    result: list[InstanceState] = []
    for k, item in enumerate(raw):
        where = f"{path}.instances[{k}]"
        if not isinstance(item, Mapping):
            errors.add(where, f"expected an instance mapping, got {describe_kind(item)}")
            continue
        errors.unknown_keys(where, item, _INSTANCE_KEYS)
        name = item.get("profile")
        profile = model.table.get(name) if isinstance(name, str) else None
        if profile is None:
            known = ", ".join(p.name for p in model.profiles)
            errors.add(
                f"{where}.profile", f"{name!r} is not a profile of {model.key} (known: {known})"
            )
            continue
        placement = _placement(
            errors, f"{where}.placement", item.get("placement"), profile.memory_slices
        )
        if placement is None:
            continue
        in_use = item.get("inUse", False)
        if not isinstance(in_use, bool):
            errors.add(f"{where}.inUse", f"expected true or false, got {in_use!r}")
            in_use = False
        pod, uuid = item.get("pod"), item.get("uuid")
        for key, value in (("pod", pod), ("uuid", uuid)):
            if value is not None and not isinstance(value, str):
                errors.add(f"{where}.{key}", f"expected a string, got {describe_kind(value)}")
        result.append(
            InstanceState(
                profile=str(name),
                placement=placement,
                uuid=uuid if isinstance(uuid, str) else None,
                in_use=in_use,
                reserved_by=pod if isinstance(pod, str) else None,
            )
        )
    for problem in layout_problems(model.table, [i.placed for i in result]):
        errors.add(f"{path}.instances", problem.message)
    return result


def _placement(errors: _Errors, path: str, raw: Any, size: int) -> Placement | None:
    """`{start: 4, size: 4}`, `{start: 4}` or just `4` (the size follows the profile)."""
    if _is_int(raw):
        raw = {"start": raw}
    if not isinstance(raw, Mapping) or not _is_int(raw.get("start")):
        errors.add(
            path, f"expected {{start: N, size: M}} or a start slot, got {describe_kind(raw)}"
        )
        return None
    start, got = raw["start"], raw.get("size", size)
    if start < 0 or not _is_int(got) or got != size:
        errors.add(path, f"expected start >= 0 and size {size}, got {dict(raw)}")
        return None
    return Placement(start, size)


def _shares(errors: _Errors, path: str, raw: Any) -> list[Share]:
    if not isinstance(raw, list):
        errors.add(f"{path}.shares", f"expected a list, got {describe_kind(raw)}")
        return []
    result: list[Share] = []
    for k, item in enumerate(raw):
        where = f"{path}.shares[{k}]"
        if not isinstance(item, Mapping):
            errors.add(where, f"expected a share mapping, got {describe_kind(item)}")
            continue
        errors.unknown_keys(where, item, _SHARE_KEYS)
        pod, memory, cores = item.get("pod"), item.get("memoryMiB", 0), item.get("cores", 0)
        if not isinstance(pod, str) or not pod:
            errors.add(f"{where}.pod", f"expected namespace/name, got {describe_kind(pod)}")
            continue
        if not _is_int(memory) or memory < 0:
            errors.add(f"{where}.memoryMiB", f"expected MiB >= 0, got {memory!r}")
            continue
        if not _is_int(cores) or not 0 <= cores <= 100:
            errors.add(f"{where}.cores", f"expected 0 to 100, got {cores!r}")
            continue
        result.append(Share(pod, memory, cores))
    return result


# --------------------------------------------------------------------------- pods


@dataclass(frozen=True, slots=True)
class PodsFile:
    """The pods of PODS.yaml: demands to plan, pods refused with their field errors, and
    pods that ask for no GPU (listed so the output can say they were skipped)."""

    demands: tuple[PodDemand, ...]
    invalid: tuple[InvalidRequest, ...]
    no_gpu: tuple[str, ...]


def load_pods(
    text: str, source: str = "pods.yaml", defaults: RequestDefaults = DEFAULTS
) -> PodsFile:
    """Parse a multi-document YAML of Pod manifests. A pod without a namespace is in
    `default`. Raises `InputError` for YAML errors and documents that are not pods."""
    errors = _Errors(source)
    demands: list[PodDemand] = []
    invalid: list[InvalidRequest] = []
    no_gpu: list[str] = []
    for i, doc in enumerate(yaml_documents(text, source)):
        if doc is None:
            continue
        where = f"document {i + 1}"
        if not isinstance(doc, Mapping):
            errors.add(where, f"expected a Pod manifest, got {describe_kind(doc)}")
            continue
        kind = doc.get("kind", "Pod")
        if kind != "Pod":
            errors.add(f"{where}.kind", f"expected Pod, got {kind!r}")
            continue
        pod: Mapping[str, Any] = doc
        metadata = doc.get("metadata")
        if isinstance(metadata, Mapping):
            filled = {**metadata, "namespace": metadata.get("namespace") or "default"}
            if "creationTimestamp" in metadata:
                filled["creationTimestamp"] = _time_text(metadata["creationTimestamp"])
            pod = {**doc, "metadata": filled}
        result = parse_pod(pod, defaults)
        if isinstance(result, InvalidRequest):
            invalid.append(result)
        elif not result.containers:
            no_gpu.append(result.key)
        else:
            demands.append(result)
    if errors.messages:
        raise InputError(errors.messages)
    return PodsFile(tuple(demands), tuple(invalid), tuple(no_gpu))
