"""What the apiserver does specially for Pods: defaults, validation, update and binding rules.

- Defaults the scheme applies on create (restartPolicy, schedulerName, dnsPolicy,
  terminationGracePeriodSeconds, priority, container defaults, requests copied from
  limits) and the `DefaultTolerationSeconds` admission plugin's two tolerations; status
  starts as `phase: Pending` with a qosClass. Not emulated: the ServiceAccount admission
  plugin (no token volume, no check that the service account exists).
- Validation: at least one container with name and image; extended resources
  (`nvidia.com/gpu`...) need a limit, and a request must equal it; `nodeName` together
  with `schedulingGates` is forbidden.
- Updates: the spec is immutable except container images, `activeDeadlineSeconds`,
  additions to `tolerations`, removal of `schedulingGates` (adding one is forbidden) and,
  while the pod is still gated, additions to `nodeSelector` and changes to `affinity`
  (KEP-3838). `nodeName` is set through the `binding` subresource only.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import Cause, field_forbidden, field_invalid, field_required
from .quantity import canonical_map

JsonDict = dict[str, Any]

_STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage", "pods"}
_CONTAINER_LISTS = ("initContainers", "containers")


def _is_extended(resource: str) -> bool:
    """`nvidia.com/gpu` is an extended resource; cpu, memory and hugepages are not."""
    if resource in _STANDARD_RESOURCES or resource.startswith(("hugepages-", "requests.")):
        return False
    return "/" in resource and not resource.startswith("kubernetes.io/")


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def apply_defaults(pod: JsonDict) -> None:
    """The defaults a real apiserver fills in before admission webhooks see the pod."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    for list_name in _CONTAINER_LISTS:
        for container in spec.get(list_name) or []:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            if "image" in container:
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
            resources = container.setdefault("resources", {})
            limits = resources.get("limits") or {}
            if limits:
                requests = resources.setdefault("requests", {})
                for name, quantity in limits.items():
                    requests.setdefault(name, quantity)
    canonical_resources(pod)


def canonical_resources(pod: JsonDict) -> None:
    """Every container's limits and requests as the apiserver stores them (`8000` is
    `8k`: the quantities are decoded and written back canonically)."""
    spec = pod.get("spec") or {}
    for list_name in _CONTAINER_LISTS:
        for container in spec.get(list_name) or []:
            resources = container.get("resources") or {}
            canonical_map(resources.get("limits"))
            canonical_map(resources.get("requests"))


def validate_create(pod: JsonDict) -> list[Cause]:
    spec = pod.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("containers"):
        causes.append(field_required("spec.containers"))
    for list_name in _CONTAINER_LISTS:
        for index, container in enumerate(spec.get(list_name) or []):
            path = f"spec.{list_name}[{index}]"
            if not container.get("name"):
                causes.append(field_required(f"{path}.name"))
            if not container.get("image"):
                causes.append(field_required(f"{path}.image"))
            causes.extend(_resource_causes(container.get("resources") or {}, path))
    if spec.get("nodeName") and spec.get("schedulingGates"):
        causes.append(
            field_forbidden("spec.nodeName", "cannot be set until all schedulingGates are cleared")
        )
    return causes


def _resource_causes(resources: JsonDict, path: str) -> list[Cause]:
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    causes = []
    for name, quantity in requests.items():
        if not _is_extended(name):
            continue
        if name not in limits:
            causes.append(
                field_required(
                    f"{path}.resources.limits",
                    "Limit must be set for non overcommitable resources",
                )
            )
        elif str(limits[name]) != str(quantity):
            causes.append(
                field_invalid(
                    f"{path}.resources.requests",
                    str(quantity),
                    f"must be equal to {name} limit of {limits[name]}",
                )
            )
    return causes


def qos_class(spec: JsonDict) -> str:
    """BestEffort, Burstable or Guaranteed, from cpu/memory requests and limits."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for name in ("cpu", "memory"):
            if name in requests or name in limits:
                any_set = True
            if name not in limits or str(requests.get(name, limits[name])) != str(limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def initial_status(pod: JsonDict) -> JsonDict:
    return {"phase": "Pending", "qosClass": qos_class(pod.get("spec") or {})}


def _gate_names(spec: JsonDict) -> list[str]:
    return [str(g.get("name")) for g in spec.get("schedulingGates") or []]


def validate_update(old: JsonDict, new: JsonDict) -> list[Cause]:
    """The pod spec's immutability rules, as the apiserver's ValidatePodUpdate."""
    old_spec = copy.deepcopy(old.get("spec") or {})
    new_spec = copy.deepcopy(new.get("spec") or {})
    old_gates, new_gates = _gate_names(old_spec), _gate_names(new_spec)
    added = [g for g in new_gates if g not in old_gates]
    if added:
        return [
            field_forbidden(
                "spec.schedulingGates",
                f"only deletion is allowed, but found new scheduling gate '{added[0]}'",
            )
        ]
    for spec in (old_spec, new_spec):
        spec.pop("schedulingGates", None)
        spec.pop("activeDeadlineSeconds", None)
        for list_name in _CONTAINER_LISTS:
            for container in spec.get(list_name) or []:
                container.pop("image", None)
    old_tolerations = old_spec.get("tolerations") or []
    if all(t in (new_spec.get("tolerations") or []) for t in old_tolerations):
        new_spec["tolerations"] = old_tolerations
    if old_gates:
        old_selector = old_spec.get("nodeSelector") or {}
        new_selector = new_spec.get("nodeSelector") or {}
        if all(new_selector.get(k) == v for k, v in old_selector.items()):
            old_spec["nodeSelector"] = new_selector
        old_spec["affinity"] = new_spec.get("affinity")
    for spec in (old_spec, new_spec):
        if not spec.get("nodeSelector"):
            spec.pop("nodeSelector", None)
        if spec.get("affinity") is None:
            spec.pop("affinity", None)
    if old_spec != new_spec:
        changed = sorted(
            k for k in old_spec.keys() | new_spec.keys() if old_spec.get(k) != new_spec.get(k)
        )
        return [
            field_forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`, "
                "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
                "`spec.tolerations` (only additions to existing tolerations), "
                "`spec.schedulingGates` (only deletions) and, while gated, additions to "
                f"`spec.nodeSelector`; changed: {', '.join('spec.' + k for k in changed)}",
            )
        ]
    return []
