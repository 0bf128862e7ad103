"""The object store: every write, with the apiserver's rules, and the history watches read.

All methods are synchronous and the emulator runs on one event loop, so each write is
atomic, exactly as one etcd transaction: a watch that subscribes in the same step as it
reads its starting point can never miss or duplicate a change.

Rules reproduced (see `ResourceType` for the per-kind switches):
- one global `resourceVersion`, bumped by every write (a no-op update writes nothing and
  keeps it, as the real server does);
- create: `uid`, `creationTimestamp`, `generation: 1` (kinds that have one), namespace
  from the URL, `generateName`, 409 AlreadyExists, 404 when the namespace is missing;
- update: a stale `metadata.resourceVersion` is a 409 Conflict; without one, PUT is
  unconditional except for custom resources and CRDs (422, as their strategies refuse it);
  the status subresource is isolated both ways and never bumps generation;
- delete: finalizers keep the object with `deletionTimestamp` (and a generation bump)
  until an update empties them; no new finalizer may be added meanwhile;
- namespaces and CRDs delete their contents first (what the namespace and CRD-cleanup
  controllers do), then vanish.
- garbage collection: when an owner is deleted, the objects it alone owns
  (`ownerReferences` by uid) are deleted too, at once (background propagation; the
  `propagationPolicy` of the request is ignored).
Not reproduced: foreground deletion and orphaning, managedFields, pod graceful
termination (no kubelet: a deleted pod goes at once).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import pods, policies, webhooks
from .errors import (
    Cause,
    StatusError,
    already_exists,
    bad_request,
    conflict,
    field_forbidden,
    field_invalid,
    field_required,
    forbidden,
    gone,
    invalid,
    not_found,
)
from .identity import current_user
from .quantity import canonical_map
from .resources import CRD_TYPE, Registry, ResourceType
from .schema import apply_schema

JsonDict = dict[str, Any]
StorageKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace or "", name)

NAMESPACES: StorageKey = ("", "namespaces")
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as watches see it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: StorageKey
    namespace: str
    obj: JsonDict  # the object after the write (never mutated afterwards)
    old: JsonDict | None  # before it, for MODIFIED (a watch's selector transitions)


Listener = Callable[[Change | None], None]  # None: the store is closing


def present(rt: ResourceType, obj: JsonDict) -> JsonDict:
    """A copy of a stored object as served at `rt`'s version."""
    result = copy.deepcopy(obj)
    result["apiVersion"] = rt.api_version
    result["kind"] = rt.kind
    return result


def _meta(obj: JsonDict) -> JsonDict:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


class Store:
    """Objects of every kind, the global resourceVersion and the change history."""

    def __init__(self, registry: Registry, history_size: int = 10_000) -> None:
        self.registry = registry
        self.rv = 1
        self.compacted_rv = 0  # changes up to this resourceVersion are no longer retained
        self._history: deque[Change] = deque()
        self._history_size = history_size
        self._objects: dict[StorageKey, dict[ObjectKey, JsonDict]] = defaultdict(dict)
        self._listeners: list[Listener] = []
        for name in INITIAL_NAMESPACES:
            rt = self._rt(NAMESPACES)
            self.create(rt, None, self.prepare_create(rt, None, {"metadata": {"name": name}}))

    # ------------------------------------------------------------------ reading

    def _rt(self, key: StorageKey) -> ResourceType:
        rt = self.registry.any_version(*key)
        assert rt is not None, key
        return rt

    def _current(self, rt: ResourceType, namespace: str | None, name: str) -> JsonDict:
        obj = self._objects[rt.key].get((namespace or "", name))
        if obj is None:
            raise not_found(rt.group, rt.plural, name)
        return obj

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JsonDict:
        return present(rt, self._current(rt, namespace, name))

    def items(self, key: StorageKey, namespace: str | None = None) -> list[JsonDict]:
        """The stored objects of a kind (not copies: read-only use inside the emulator)."""
        objects = self._objects[key]
        return [objects[k] for k in sorted(objects) if namespace is None or k[0] == namespace]

    def select(
        self, rt: ResourceType, namespace: str | None, match: Callable[[JsonDict], bool]
    ) -> tuple[list[JsonDict], int]:
        """Matching objects (copies, served at `rt`'s version) and the list resourceVersion."""
        items = [present(rt, o) for o in self.items(rt.key, namespace) if match(o)]
        return items, self.rv

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        obj = self._objects[NAMESPACES].get(("", namespace)) or {}
        return dict(_meta(obj).get("labels") or {}) if obj else {}

    # ------------------------------------------------------------------ watching

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every later change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def changes_after(self, rv: int, key: StorageKey) -> list[Change]:
        """Retained changes of a kind after `rv`; 410 Gone when some were compacted away."""
        if rv < self.compacted_rv:
            raise gone(f"too old resource version: {rv} ({self.compacted_rv + 1})")
        return [c for c in self._history if c.rv > rv and c.key == key]

    def close(self) -> None:
        """End every watch (the server is stopping)."""
        for listener in list(self._listeners):
            listener(None)

    def _commit(
        self,
        rt: ResourceType,
        type_: str,
        obj: JsonDict,
        old: JsonDict | None,
    ) -> JsonDict:
        self.rv += 1
        meta = _meta(obj)
        meta["resourceVersion"] = str(self.rv)
        key = (meta.get("namespace") or "", str(meta["name"]))
        if type_ == "DELETED":
            self._objects[rt.key].pop(key, None)
        else:
            self._objects[rt.key][key] = obj
        change = Change(self.rv, type_, rt.key, key[0], copy.deepcopy(obj), old)
        self._history.append(change)
        while len(self._history) > self._history_size:
            self.compacted_rv = self._history.popleft().rv
        for listener in list(self._listeners):
            listener(change)
        return present(rt, obj)

    # ------------------------------------------------------------------ create

    def prepare_create(self, rt: ResourceType, namespace: str | None, body: Any) -> JsonDict:
        """The object as admission webhooks see it: identity settled, defaults applied."""
        if not isinstance(body, dict):
            raise bad_request("the body of a create must be a JSON object")
        obj = copy.deepcopy(body)
        _check_type(rt, obj)
        meta = _meta(obj)
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if not meta.get("name"):
            raise invalid(
                rt.kind,
                rt.group,
                "",
                [field_required("metadata.name", "name or generateName is required")],
            )
        if rt.key == ("", "pods"):
            pods.apply_defaults(obj)
        if rt.key == ("", "nodes"):
            _canonical_node(obj)
        if rt.key == webhooks.MUTATING_KEY:
            webhooks.apply_defaults(obj)
        return obj

    def create(self, rt: ResourceType, namespace: str | None, obj: JsonDict) -> JsonDict:
        """Store a prepared object; the apiserver's create strategy and validation."""
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        name = str(meta["name"])
        causes = _metadata_causes(rt, meta)
        if rt.namespaced:
            ns = self._objects[NAMESPACES].get(("", str(namespace)))
            if ns is None:
                raise not_found("", "namespaces", str(namespace))
            if _meta(ns).get("deletionTimestamp"):
                raise forbidden(
                    f'{rt.plural} "{name}" is forbidden: unable to create new content in '
                    f"namespace {namespace} because it is being terminated"
                )
        if (meta.get("namespace") or "", name) in self._objects[rt.key]:
            raise already_exists(rt.group, rt.plural, name)
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.generation != "none":
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rt.status_subresource and not rt.keep_status_on_create:
            obj.pop("status", None)
        causes += self._kind_create_rules(rt, obj)
        if rt.schema is not None:
            causes += apply_schema(obj, rt.schema)
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)
        self._admit("CREATE", rt, obj, None, None)
        created = self._commit(rt, "ADDED", obj, None)
        if rt.key == CRD_TYPE.key:
            self.registry.register_crd(obj)
        return created

    def _kind_create_rules(self, rt: ResourceType, obj: JsonDict) -> list[Cause]:
        """Per-kind create strategy: defaults the server sets, validation it applies."""
        meta = _meta(obj)
        if rt.key == ("", "pods"):
            obj["status"] = pods.initial_status(obj)
            return pods.validate_create(obj)
        if rt.key == NAMESPACES:
            labels = meta.setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = meta["name"]
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            if not _DNS_LABEL.match(str(meta["name"])) or len(str(meta["name"])) > 63:
                return [field_invalid("metadata.name", meta["name"], "a lowercase RFC 1123 label")]
            return []
        if rt.key == ("", "events"):
            return _event_causes(obj)
        if rt.key == CRD_TYPE.key:
            causes = _crd_causes(obj)
            if not causes:
                obj["status"] = _crd_status(obj)
            return causes
        if rt.key == webhooks.MUTATING_KEY:
            return webhooks.validate(obj)
        return []

    # ------------------------------------------------------------------ update

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> JsonDict:
        """PUT: the body is the whole new object."""
        if not isinstance(body, dict):
            raise bad_request("the body of an update must be a JSON object")
        body = copy.deepcopy(body)
        _check_type(rt, body)
        body_name = _meta(body).get("name")
        if body_name != name:
            raise bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        old = self._current(rt, namespace, name)
        if not _meta(body).get("resourceVersion") and not rt.unconditional_update:
            raise invalid(
                rt.kind,
                rt.group,
                name,
                [
                    field_invalid(
                        "metadata.resourceVersion", "0x0", "must be specified for an update"
                    )
                ],
            )
        return self._update(rt, old, body, subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        apply: Callable[[JsonDict], JsonDict],
        subresource: str | None = None,
    ) -> JsonDict:
        """PATCH: `apply` turns the current object into the new one."""
        old = self._current(rt, namespace, name)
        new = apply(present(rt, old))
        if not isinstance(new, dict):
            raise bad_request("the patched object is not a JSON object")
        return self._update(rt, old, new, subresource)

    def _update(
        self, rt: ResourceType, old: JsonDict, new: JsonDict, subresource: str | None
    ) -> JsonDict:
        old_meta = _meta(old)
        name = str(old_meta["name"])
        wanted_rv = _meta(new).get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old_meta["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name)
        if subresource == "status":
            # Only status changes; everything else is the stored object.
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = copy.deepcopy(new["status"])
            else:
                candidate.pop("status", None)
        else:
            candidate = copy.deepcopy(new)
            if rt.status_subresource:
                # A main-resource write never touches status.
                if "status" in old:
                    candidate["status"] = copy.deepcopy(old["status"])
                else:
                    candidate.pop("status", None)
        meta = _meta(candidate)
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "generateName",
        ):
            if field in old_meta:
                meta[field] = copy.deepcopy(old_meta[field])
            else:
                meta.pop(field, None)
        candidate["apiVersion"], candidate["kind"] = old.get("apiVersion"), old.get("kind")
        causes = _metadata_causes(rt, meta)
        if old_meta.get("deletionTimestamp"):
            before = old_meta.get("finalizers") or []
            added = [f for f in meta.get("finalizers") or [] if f not in before]
            if added:
                causes.append(
                    field_forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted, "
                        f"found new finalizers {added}",
                    )
                )
        if subresource is None:
            causes += self._kind_update_rules(rt, old, candidate)
        if rt.schema is not None:
            causes += apply_schema(candidate, rt.schema)
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)
        self._admit("UPDATE", rt, present(rt, candidate), present(rt, old), subresource)
        if candidate == old:
            return present(rt, old)  # no-op: nothing written, resourceVersion unchanged
        if subresource is None and _spec_changed(rt, old, candidate):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            result = self._commit(rt, "DELETED", candidate, None)
            self._reap()
            return result
        result = self._commit(rt, "MODIFIED", candidate, copy.deepcopy(old))
        if rt.key == CRD_TYPE.key:
            self.registry.register_crd(candidate)
        return result

    def _admit(
        self,
        operation: str,
        rt: ResourceType,
        obj: JsonDict,
        old: JsonDict | None,
        subresource: str | None,
    ) -> None:
        """Validating admission: the ValidatingAdmissionPolicies bound (`policies`)."""
        bindings = self.items(policies.BINDING_KEY)
        if not bindings:
            return
        meta = _meta(obj)
        policies.check(
            {str(_meta(p)["name"]): p for p in self.items(policies.POLICY_KEY)},
            bindings,
            rt=rt,
            operation=operation,
            namespace=meta.get("namespace"),
            name=str(meta.get("name") or ""),
            subresource=subresource,
            obj=obj,
            old=old,
            user=current_user.get(),
        )

    def _kind_update_rules(self, rt: ResourceType, old: JsonDict, new: JsonDict) -> list[Cause]:
        if rt.key == ("", "nodes"):
            _canonical_node(new)
        if rt.key == ("", "pods"):
            pods.canonical_resources(new)
            return pods.validate_update(old, new)
        if rt.key == CRD_TYPE.key:
            causes = _crd_causes(new)
            if not causes:
                new["status"] = _crd_status(new, old.get("status"))
            return causes
        if rt.key == webhooks.MUTATING_KEY:
            webhooks.apply_defaults(new)
            return webhooks.validate(new)
        if rt.key == NAMESPACES:
            new["spec"] = copy.deepcopy(old.get("spec"))
            _meta(new).setdefault("labels", {})["kubernetes.io/metadata.name"] = _meta(old)["name"]
        return []

    # ------------------------------------------------------------------ binding

    def evict(self, namespace: str, name: str, eviction: Any) -> None:
        """`pods/<name>/eviction`: admission of the Eviction (CREATE of the subresource),
        then the pod's deletion with the Eviction's `deleteOptions` preconditions.
        PodDisruptionBudgets are not modelled (a real server may answer 429)."""
        rt = self._rt(("", "pods"))
        self._current(rt, namespace, name)
        if not isinstance(eviction, dict):
            raise bad_request("the body of an eviction must be a JSON object")
        self._admit("CREATE", rt, eviction, None, "eviction")
        options = eviction.get("deleteOptions") or {}
        preconditions = options.get("preconditions") if isinstance(options, dict) else None
        self.delete(rt, namespace, name, {"preconditions": preconditions or {}})

    def bind(self, namespace: str, name: str, binding: Any) -> None:
        """`pods/<name>/binding`: what the scheduler does to place a pod on a node."""
        rt = self._rt(("", "pods"))
        pod = self._current(rt, namespace, name)
        if not isinstance(binding, dict):
            raise bad_request("the body of a binding must be a JSON object")
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise invalid("Binding", "", name, [field_required("target.name")])
        spec = pod.get("spec") or {}
        why = None
        if _meta(pod).get("deletionTimestamp"):
            why = f"pod {name} is being deleted, cannot be assigned to a host"
        elif spec.get("nodeName"):
            why = f'pod {name} is already assigned to node "{spec["nodeName"]}"'
        elif spec.get("schedulingGates"):
            why = f"pod {name} has non-empty .spec.schedulingGates"
        if why:
            raise conflict("", "pods/binding", name, why)
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        annotations = _meta(binding).get("annotations") or {}
        if annotations:
            _meta(new).setdefault("annotations", {}).update(annotations)
        conditions = [
            c
            for c in new.setdefault("status", {}).get("conditions") or []
            if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            }
        )
        new["status"]["conditions"] = conditions
        self._commit(rt, "MODIFIED", new, copy.deepcopy(pod))

    # ------------------------------------------------------------------ delete

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: JsonDict | None = None,
    ) -> JsonDict:
        old = self._current(rt, namespace, name)
        meta = _meta(old)
        preconditions = (options or {}).get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise conflict(
                rt.group,
                rt.plural,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        wanted_rv = preconditions.get("resourceVersion")
        if wanted_rv and wanted_rv != meta.get("resourceVersion"):
            raise conflict(
                rt.group,
                rt.plural,
                name,
                f"Precondition failed: ResourceVersion in precondition: {wanted_rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        if meta.get("deletionTimestamp"):
            return present(rt, old)  # already being deleted
        holds_contents = rt.key in (NAMESPACES, CRD_TYPE.key)
        if meta.get("finalizers") or holds_contents:
            new = copy.deepcopy(old)
            new_meta = _meta(new)
            new_meta["deletionTimestamp"] = now_rfc3339()
            new_meta["deletionGracePeriodSeconds"] = 0
            if new_meta.get("generation"):
                new_meta["generation"] = int(new_meta["generation"]) + 1
            if rt.key == NAMESPACES:
                new["status"] = {"phase": "Terminating"}
            result = self._commit(rt, "MODIFIED", new, copy.deepcopy(old))
            if holds_contents:
                self._delete_contents(rt, new)
                self._reap()
            return result
        result = self._commit(rt, "DELETED", copy.deepcopy(old), None)
        self._collect_dependents(str(meta.get("uid") or ""), namespace)
        self._reap()
        return result

    def _collect_dependents(self, uid: str, namespace: str | None) -> None:
        """The garbage collector's background deletion: objects whose every owner is gone
        go too (cluster-scoped dependents of any owner; namespaced ones of an owner in
        their namespace or a cluster-scoped one)."""
        if not uid:
            return
        dependents = [
            (key, obj)
            for key in list(self._objects)
            for obj in self._objects[key].values()
            if uid in [r.get("uid") for r in _meta(obj).get("ownerReferences") or []]
        ]
        if not dependents:
            return
        uids = {str(_meta(o).get("uid")) for objs in self._objects.values() for o in objs.values()}
        for key, obj in dependents:
            meta = _meta(obj)
            owners = [r.get("uid") for r in meta.get("ownerReferences") or []]
            if any(o in uids for o in owners):
                continue  # another owner remains
            if namespace and meta.get("namespace") not in (None, namespace):
                continue
            if (meta.get("namespace") or "", meta["name"]) in self._objects[key]:
                self.delete(self._rt(key), meta.get("namespace"), str(meta["name"]))

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, match: Callable[[JsonDict], bool]
    ) -> list[JsonDict]:
        deleted = []
        for obj in [o for o in self.items(rt.key, namespace) if match(o)]:
            meta = _meta(obj)
            deleted.append(self.delete(rt, meta.get("namespace"), str(meta["name"])))
        return deleted

    def _delete_contents(self, rt: ResourceType, container: JsonDict) -> None:
        """What the namespace controller and the CRD cleanup controller do."""
        targets: Iterable[tuple[ResourceType, str | None]]
        if rt.key == NAMESPACES:
            name = str(_meta(container)["name"])
            keys = {t.key for t in self.registry if t.namespaced}
            targets = [(self._rt(k), name) for k in sorted(keys)]
        else:
            spec = container.get("spec") or {}
            content = self.registry.any_version(spec.get("group", ""), spec["names"]["plural"])
            targets = [(content, None)] if content else []
        for content_rt, namespace in targets:
            for obj in list(self.items(content_rt.key, namespace)):
                meta = _meta(obj)
                if (meta.get("namespace") or "", meta["name"]) in self._objects[content_rt.key]:
                    self.delete(content_rt, meta.get("namespace"), str(meta["name"]))

    def _reap(self) -> None:
        """Remove terminating namespaces and CRDs whose contents are gone."""
        for ns in list(self.items(NAMESPACES)):
            meta = _meta(ns)
            if not meta.get("deletionTimestamp"):
                continue
            name = str(meta["name"])
            if any(k != NAMESPACES and self.items(k, name) for k in list(self._objects)):
                continue
            self._commit(self._rt(NAMESPACES), "DELETED", copy.deepcopy(ns), None)
        for crd in list(self.items(CRD_TYPE.key)):
            meta = _meta(crd)
            if not meta.get("deletionTimestamp"):
                continue
            spec = crd.get("spec") or {}
            if self.items((spec.get("group", ""), spec["names"]["plural"])):
                continue
            self._commit(CRD_TYPE, "DELETED", copy.deepcopy(crd), None)
            self.registry.unregister_crd(str(meta["name"]))


# ---------------------------------------------------------------------- helpers


def _canonical_node(node: JsonDict) -> None:
    """A Node's capacity and allocatable, as the apiserver stores quantities."""
    status = node.get("status")
    if isinstance(status, dict):
        canonical_map(status.get("capacity"))
        canonical_map(status.get("allocatable"))


def _check_type(rt: ResourceType, obj: JsonDict) -> None:
    """apiVersion/kind of a body: a 400 when they disagree with the URL.

    Built-in kinds default missing ones from the URL; custom resources are decoded as
    unstructured objects, which must carry both (the apiserver answers 400 otherwise).
    """
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if rt.custom and not kind:
        raise bad_request(f"Object 'Kind' is missing in '{json.dumps(obj)[:200]}'")
    if rt.custom and not api_version:
        raise bad_request(f"Object 'apiVersion' is missing in '{json.dumps(obj)[:200]}'")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the URL ({rt.kind})")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version})"
        )
    obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version


def _metadata_causes(rt: ResourceType, meta: JsonDict) -> list[Cause]:
    causes = []
    name = str(meta.get("name", ""))
    if rt.key != NAMESPACES and (len(name) > 253 or not _SUBDOMAIN.match(name)):
        causes.append(
            field_invalid(
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise bad_request(f"metadata.{field} must map strings to strings")
        for key in values:
            prefix, _, key_name = key.rpartition("/")
            if (prefix and not _SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(key_name):
                causes.append(
                    field_invalid(
                        f"metadata.{field}",
                        key,
                        "name part must consist of alphanumeric characters, '-', '_' or '.'",
                    )
                )
            elif len(key_name) > 63:
                causes.append(
                    field_invalid(
                        f"metadata.{field}", key, "name part must be no more than 63 characters"
                    )
                )
    for value in (meta.get("labels") or {}).values():
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                field_invalid(
                    "metadata.labels",
                    value,
                    "a valid label must be an empty string or "
                    "consist of at most 63 alphanumeric characters, '-', '_' or '.'",
                )
            )
    return causes


def _spec_changed(rt: ResourceType, old: JsonDict, new: JsonDict) -> bool:
    """Whether this write bumps metadata.generation for `rt`."""
    if rt.generation == "spec":
        return old.get("spec") != new.get("spec")
    if rt.generation == "all":
        # Without a status subresource, status is content like any other.
        return {k: v for k, v in old.items() if k != "metadata"} != {
            k: v for k, v in new.items() if k != "metadata"
        }
    return False


def _event_causes(event: JsonDict) -> list[Cause]:
    """core/v1 Event namespace rules (legacyValidateEvent) and required fields."""
    meta = _meta(event)
    involved = event.get("involvedObject") or {}
    namespace = meta.get("namespace")
    causes = []
    if not involved.get("namespace"):
        allowed = {"default"} | ({"kube-system"} if event.get("eventTime") else set())
        if namespace not in allowed:
            causes.append(
                field_invalid("involvedObject.namespace", "", "does not match event.namespace")
            )
    elif involved["namespace"] != namespace:
        causes.append(
            field_invalid(
                "involvedObject.namespace", involved["namespace"], "does not match event.namespace"
            )
        )
    if event.get("eventTime"):
        for field in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not event.get(field):
                causes.append(field_required(field))
    return causes


def _crd_causes(crd: JsonDict) -> list[Cause]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    for path, value in (
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
    ):
        if not value:
            causes.append(field_required(path))
    if causes:
        return causes
    expected = f"{names['plural']}.{spec['group']}"
    if _meta(crd).get("name") != expected:
        causes.append(
            field_invalid(
                "metadata.name", _meta(crd).get("name"), 'must be spec.names.plural+"."+spec.group'
            )
        )
    if spec.get("scope") not in ("Cluster", "Namespaced"):
        causes.append(field_invalid("spec.scope", spec.get("scope"), "Cluster or Namespaced"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(field_required("spec.versions"))
    if sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            field_invalid(
                "spec.versions", len(versions), "must have exactly one version marked as storage"
            )
        )
    for index, version in enumerate(versions):
        if not (version.get("schema") or {}).get("openAPIV3Schema"):
            causes.append(
                field_required(
                    f"spec.versions[{index}].schema.openAPIV3Schema", "schemas are required"
                )
            )
    return causes


def _crd_status(crd: JsonDict, previous_status: JsonDict | None = None) -> JsonDict:
    """Accepted and established at once (the emulator has no controller delay)."""
    spec = crd["spec"]
    now = now_rfc3339()
    previous_status = previous_status or {}
    names = copy.deepcopy(spec["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    previous = previous_status.get("storedVersions") or []
    return {
        "conditions": previous_status.get("conditions")
        or [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
        "acceptedNames": names,
        "storedVersions": sorted(set(previous) | {storage}),
    }


def generation_of(obj: JsonDict) -> int:
    return int(_meta(obj).get("generation") or 0)


__all__ = ["Change", "Listener", "Store", "StatusError", "generation_of", "now_rfc3339", "present"]
