"""Admission of new pods: what the mutating webhook changes on a pod, as a JSON patch.

docs/design.md, "Pod lifecycle", step 1: a pod that asks for any GPU resource (`nvidia.com/gpu`,
`nvidia.com/gpumem`, `nvidia.com/gpumem-percentage`, `nvidia.com/gpucores`, or the names
the configuration gives them) gets the scheduling gate `migweaver.io/placement`, so
kube-scheduler leaves it alone until the operator has placed it. A container that names
memory, a memory percentage or cores but no device count gets `nvidia.com/gpu:
<defaultGPUNum>`, as HAMi's webhook adds it: the kubelet calls the device plugin only for
containers whose resources name `nvidia.com/gpu`, so without it the container would get
no device at all.

`mutate_pod` takes the pod exactly as the AdmissionReview carries it and returns a
`Mutation`: RFC 6902 `add` operations, or none with the reason the pod is left as it is.
It never raises, whatever the pod holds:

- presence decides, not values (`requests.wants_gpu`): a pod with a GPU quantity that
  does not parse is gated all the same, and the operator then keeps it Pending with a
  `MigUnschedulable` Event that names the bad field;
- only `spec.containers` count, not `initContainers`, as in HAMi's webhook and in
  `requests.parse_pod`, which computes the demand the operator plans for;
- a pod that already carries `migweaver.io/allocation` was placed by the operator and is
  left alone; so is a pod created with `spec.nodeName` (it bypasses the scheduler, and
  the apiserver refuses scheduling gates on it);
- running it on its own output changes nothing (the gate is added once, a count only
  where none is named), so the webhook may be invoked again (`reinvocationPolicy:
  IfNeeded`) or meet a pod that was created with the gate.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from migweaver.core.resources.api import (
    PLACEMENT_GATE,
    escape_pointer,
)
from migweaver.core.resources.requests import DEFAULTS, RequestDefaults, wants_gpu

__all__ = [
    "Mutation",
    "apply_operations",
    "has_gate",
    "mutate_pod",
]

JsonPatchOperation = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Mutation:
    """The webhook's answer for one pod: `operations` to apply (none = untouched), and
    `reason`, one line for the log saying what was done or why nothing was."""

    operations: tuple[JsonPatchOperation, ...]
    reason: str
    asks_gpu: bool = False
    """Whether the pod names a GPU resource (the webhook logs those at info, others at
    debug: with the shipped configuration it sees every new pod)."""
    defaulted: tuple[str, ...] = ()
    """Names of the containers that got the default device count."""
    warning: str | None = None
    """For the person creating the pod (an AdmissionReview warning, shown by kubectl)."""

    @property
    def changed(self) -> bool:
        return bool(self.operations)


def has_gate(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's `spec.schedulingGates` names the migweaver gate."""
    gates = _spec(pod).get("schedulingGates")
    if not isinstance(gates, list | tuple):
        return False
    return any(isinstance(g, Mapping) and g.get("name") == PLACEMENT_GATE for g in gates)


def mutate_pod(pod: Mapping[str, Any], defaults: RequestDefaults = DEFAULTS) -> Mutation:
    """The patch that gates `pod` and defaults its device counts; never raises."""
    if not isinstance(pod, Mapping):
        return Mutation((), "not a pod object")
    if not wants_gpu(pod, defaults):
        names = ", ".join(defaults.gpu_resources)
        return Mutation((), f"asks for no GPU (none of {names} in any container)")
    # A new pod is never placed already: the operator writes allocations on pods it
    # released, never on pods being created. One created with an allocation of its own
    # is gated like any other (docs/security.md); the admission policy refuses it anyway.
    spec = _spec(pod)
    if spec.get("nodeName"):
        return Mutation(
            (),
            "spec.nodeName is set: the pod bypasses scheduling and the apiserver refuses "
            "a scheduling gate on it",
            asks_gpu=True,
            warning=(
                "migweaver: this pod asks for a GPU but sets spec.nodeName, so migweaver "
                "cannot place it and the node's device plugin will refuse it; leave "
                "nodeName unset (use nodeSelector or affinity to choose nodes)"
            ),
        )

    operations: list[JsonPatchOperation] = []
    gates = spec.get("schedulingGates")
    if gates is None:
        operations.append(_add("/spec/schedulingGates", [{"name": PLACEMENT_GATE}]))
    elif not isinstance(gates, list | tuple):
        reason = "spec.schedulingGates is not a list: left for the apiserver to refuse"
        return Mutation((), reason, asks_gpu=True)
    elif not has_gate(pod):
        operations.append(_add("/spec/schedulingGates/-", {"name": PLACEMENT_GATE}))

    defaulted: list[str] = []
    if defaults.default_gpu_num > 0:
        containers = spec.get("containers")
        for index, container in enumerate(containers if isinstance(containers, list) else []):
            container_ops = _default_count(container, f"/spec/containers/{index}", defaults)
            if container_ops:
                operations.extend(container_ops)
                name = container.get("name")
                defaulted.append(name if isinstance(name, str) and name else f"#{index}")

    if not operations:
        return Mutation(
            (),
            f"already gated with {PLACEMENT_GATE}; no device count to default",
            asks_gpu=True,
        )
    done = [] if has_gate(pod) else [f"gate {PLACEMENT_GATE} added"]
    if defaulted:
        done.append(
            f"{defaults.resource_count}: {defaults.default_gpu_num} defaulted for "
            f"container{'s' if len(defaulted) > 1 else ''} {', '.join(defaulted)}"
        )
    return Mutation(tuple(operations), "; ".join(done), asks_gpu=True, defaulted=tuple(defaulted))


def _default_count(
    container: object, path: str, defaults: RequestDefaults
) -> list[JsonPatchOperation]:
    """The operations that give a container the default device count, if it needs one.

    It needs one when it names memory, a memory percentage or cores, in its limits or its
    requests, and no count in either. The count goes into the limits, as in HAMi, and into
    the requests too: the apiserver copies a limit into a missing request only when it
    defaults the object, and the two must be equal for an extended resource.
    """
    if not isinstance(container, Mapping):
        return []
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return []
    sections = {name: resources.get(name) for name in ("limits", "requests")}
    named: set[Any] = set()
    for section in sections.values():
        if isinstance(section, Mapping):
            named.update(section.keys())
        elif section is not None:
            return []  # malformed: the apiserver never sends this; nothing safe to patch
    if defaults.resource_count in named:
        return []
    others = (
        defaults.resource_memory,
        defaults.resource_memory_percentage,
        defaults.resource_cores,
    )
    if not any(name in named for name in others):
        return []
    value = str(defaults.default_gpu_num)
    key = escape_pointer(defaults.resource_count)
    operations = []
    for name, section in sections.items():
        if section is None:
            operations.append(_add(f"{path}/resources/{name}", {defaults.resource_count: value}))
        else:
            operations.append(_add(f"{path}/resources/{name}/{key}", value))
    return operations


def _add(path: str, value: Any) -> JsonPatchOperation:
    return {"op": "add", "path": path, "value": value}


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pod.get("spec")
    return spec if isinstance(spec, Mapping) else {}


# --- applying ---------------------------------------------------------------------------


def apply_operations(
    document: MutableMapping[str, Any], operations: Sequence[Mapping[str, Any]]
) -> None:
    """Apply `add` operations to `document` in place, as an apiserver applies them.

    Only `add`, the one operation `mutate_pod` makes, is supported; anything else, or a
    path whose parent does not exist, raises `ValueError` (the webhook's shell hands these
    to kopf, which turns the changed body back into a JSON patch for the response).
    """
    for operation in operations:
        if operation.get("op") != "add":
            raise ValueError(f"only 'add' operations are supported, got {operation.get('op')!r}")
        path = str(operation.get("path", ""))
        if not path.startswith("/"):
            raise ValueError(f"not a JSON pointer to a member: {path!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
        parent: Any = document
        for token in tokens[:-1]:
            parent = _child(parent, token, path)
        last = tokens[-1]
        value = copy.deepcopy(operation.get("value"))
        if isinstance(parent, MutableMapping):
            parent[last] = value
        elif isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif last.isdigit() and int(last) <= len(parent):
                parent.insert(int(last), value)
            else:
                raise ValueError(f"{path}: index {last!r} out of range")
        else:
            raise ValueError(f"{path}: the parent is neither an object nor a list")


def _child(parent: Any, token: str, path: str) -> Any:
    if isinstance(parent, Mapping) and token in parent:
        return parent[token]
    if isinstance(parent, list) and token.isdigit() and int(token) < len(parent):
        return parent[int(token)]
    raise ValueError(f"{path}: {token!r} does not exist")
