"""The API emulator against the real-apiserver behaviours migweaver depends on.

These tests go through kubernetes_asyncio (and migweaver's own `ClusterObjects`,
`CoreObjects` and `EventRecorder` where they fit), so the client-side encoding is the
production one. They run unchanged against a real cluster (`MIGWEAVER_E2E_KUBECONFIG`),
which is how the emulator is checked against the reference; the few that need the
emulator itself are marked `emulator_only`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from migweaver.core.resources.api import LABEL_NODE
from migweaver.core.resources.models import MIGLAYOUT_PLURAL
from migweaver.k8s.client import ApiError, ClusterObjects, Conflict, CoreObjects, NotFound
from migweaver.k8s.events import EventRecorder
from tests import builders
from tests.e2e.emulator import Emulator
from tests.e2e.kube_api import (
    CONFIGMAPS,
    CRDS,
    EVENTS,
    JSON_PATCH,
    MIGLAYOUTS,
    MUTATING_WEBHOOKS,
    NAMESPACES,
    NODES,
    PODS,
    STRATEGIC_PATCH,
    Kube,
    KubeError,
    Ref,
    condition,
    meta,
)
from tests.e2e.tls import TlsFiles

JsonDict = dict[str, Any]

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "miglayouts.migweaver.io.yaml"
TEST_LABEL = "e2e.migweaver.io/test"


def layout(kube: Kube, name: str, **extra: Any) -> JsonDict:
    """A valid MigLayout of a made-up node, labelled for the test."""
    labels = {LABEL_NODE: kube.name("tn"), TEST_LABEL: name, **extra.pop("labels", {})}
    meta = builders.metadata(
        kube.name(name), labels=labels, finalizers=extra.pop("finalizers", None)
    )
    return builders.layout(kube.name("tn"), 0, uuid="GPU-e2e", instances=None, meta=meta, **extra)


def pod(name: str, **spec: Any) -> JsonDict:
    labels = spec.pop("labels", None)
    containers = [builders.container(image="busybox:1.36")]
    return builders.pod(name, labels=labels, containers=containers, typed=True, **spec)


async def expect_error(status: int, reason: str, call: Any) -> KubeError:
    """Await `call`, which must fail with this HTTP status and Status reason."""
    with pytest.raises(KubeError) as caught:
        await call
    error = caught.value
    assert (error.status, error.reason) == (status, reason), error
    assert error.body["kind"] == "Status"
    assert error.body["status"] == "Failure"
    assert error.body["code"] == status
    return error


@pytest.fixture
def layouts(kube: Kube) -> ClusterObjects:
    return ClusterObjects(kube.api, MIGLAYOUT_PLURAL)


# ---------------------------------------------------------------------- discovery


async def test_discovery_lists_kinds_subresources_and_crd_groups(kube: Kube) -> None:
    version = await kube.request("GET", "/version")
    assert version["major"] == "1"
    assert "v1" in (await kube.request("GET", "/api"))["versions"]

    core = {r["name"]: r for r in (await kube.request("GET", "/api/v1"))["resources"]}
    for name in ("pods", "pods/status", "pods/binding", "nodes", "nodes/status", "events",
                 "namespaces", "configmaps", "secrets", "serviceaccounts"):  # fmt: skip
        assert name in core, name
    assert core["pods"]["namespaced"] is True
    assert core["nodes"]["namespaced"] is False
    assert {"list", "watch", "patch"} <= set(core["pods"]["verbs"])

    groups = {g["name"] for g in (await kube.request("GET", "/apis"))["groups"]}
    assert {"apiextensions.k8s.io", "coordination.k8s.io", "admissionregistration.k8s.io",
            "events.k8s.io", "migweaver.io"} <= groups  # fmt: skip

    ours = await kube.request("GET", "/apis/migweaver.io/v1alpha1")
    resources = {r["name"]: r for r in ours["resources"]}
    assert resources["miglayouts"]["kind"] == "MigLayout"
    assert resources["miglayouts"]["namespaced"] is False
    assert "miglayouts/status" in resources
    assert "nodeconfigs/status" in resources


# ---------------------------------------------------------------------- create, conflicts


async def test_create_sets_server_fields_and_a_duplicate_already_exists(
    kube: Kube, layouts: ClusterObjects
) -> None:
    body = layout(kube, "create")
    body["status"] = {"phase": "Ready"}  # dropped: status is a subresource
    created = await layouts.create(body)
    kube.track(MIGLAYOUTS, meta(created)["name"])
    assert meta(created)["uid"]
    assert meta(created)["creationTimestamp"].endswith("Z")
    assert meta(created)["generation"] == 1
    assert int(meta(created)["resourceVersion"]) > 0
    assert "status" not in created
    assert created["spec"]["policy"] == "dynamic"  # the schema's default

    with pytest.raises(Conflict):
        await layouts.create(body)
    error = await expect_error(409, "AlreadyExists", kube.create(MIGLAYOUTS, body))
    assert error.message == f'miglayouts.migweaver.io "{kube.name("create")}" already exists'
    await expect_error(
        404, "NotFound", kube.create(CONFIGMAPS, {"metadata": {"name": "x"}}, "no-such-ns")
    )
    generated = await kube.create(CONFIGMAPS, {"metadata": {"generateName": "gen-"}})
    assert meta(generated)["name"].startswith("gen-")
    assert len(meta(generated)["name"]) == len("gen-") + 5


async def test_stale_resource_version_is_a_409_conflict(
    kube: Kube, layouts: ClusterObjects
) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "stale"))
    name, first_rv = meta(created)["name"], meta(created)["resourceVersion"]
    patched = await layouts.patch(
        name, {"metadata": {"resourceVersion": first_rv}, "spec": {"gpuIndex": 1}}
    )
    assert int(meta(patched)["resourceVersion"]) > int(first_rv)

    with pytest.raises(Conflict):
        await layouts.patch(
            name, {"metadata": {"resourceVersion": first_rv}, "spec": {"gpuIndex": 2}}
        )
    stale = {**created, "spec": {**created["spec"], "gpuIndex": 3}}
    error = await expect_error(409, "Conflict", kube.replace(MIGLAYOUTS, stale))
    assert "the object has been modified" in error.message

    current = {**patched, "spec": {**patched["spec"], "gpuIndex": 3}}
    replaced = await kube.replace(MIGLAYOUTS, current)
    assert replaced["spec"]["gpuIndex"] == 3

    # Custom resources refuse an update without resourceVersion (their strategy does)...
    unversioned = {**replaced, "metadata": {**meta(replaced), "resourceVersion": None}}
    error = await expect_error(422, "Invalid", kube.replace(MIGLAYOUTS, unversioned))
    assert "must be specified for an update" in error.message
    # ... while a ConfigMap's PUT without one is unconditional.
    cm = await kube.create(CONFIGMAPS, {"metadata": {"name": "plain"}, "data": {"a": "1"}})
    unconditional = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "2"},
                     "metadata": {"name": "plain", "namespace": kube.namespace}}  # fmt: skip
    updated = await kube.replace(CONFIGMAPS, unconditional)
    assert updated["data"] == {"a": "2"}
    assert int(meta(updated)["resourceVersion"]) > int(meta(cm)["resourceVersion"])
    assert "generation" not in meta(updated)  # the apiserver keeps none on ConfigMaps


# ---------------------------------------------------------------------- status subresource


async def test_status_subresource_is_isolated_both_ways(
    kube: Kube, layouts: ClusterObjects
) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "status"))
    name = meta(created)["name"]

    # A /status patch changes status only: the spec in it is ignored, no generation bump.
    after_status = await kube.patch(
        MIGLAYOUTS,
        name,
        {"spec": {"gpuIndex": 7}, "status": {"phase": "Ready", "observedGeneration": 1}},
        subresource="status",
    )
    assert after_status["spec"]["gpuIndex"] == 0
    assert after_status["status"]["phase"] == "Ready"
    assert meta(after_status)["generation"] == 1

    # A main patch ignores status; a spec change bumps generation (migEnabled defaults
    # to true in the schema).
    assert created["spec"]["migEnabled"] is True
    after_spec = await layouts.patch(
        name, {"spec": {"migEnabled": False}, "status": {"phase": "Failed"}}
    )
    assert after_spec["status"]["phase"] == "Ready"
    assert after_spec["spec"]["migEnabled"] is False
    assert meta(after_spec)["generation"] == 2

    # Metadata-only changes do not bump generation; a no-op writes nothing.
    relabelled = await layouts.patch(name, {"metadata": {"labels": {"extra": "1"}}})
    assert meta(relabelled)["generation"] == 2
    again = await layouts.patch(name, {"metadata": {"labels": {"extra": "1"}}})
    assert meta(again)["resourceVersion"] == meta(relabelled)["resourceVersion"]

    # PUT /status with a changed spec: only status is taken.
    whole = {**again, "spec": {**again["spec"], "gpuIndex": 9},
             "status": {"phase": "Degraded"}}  # fmt: skip
    put = await kube.replace(MIGLAYOUTS, whole, subresource="status")
    assert put["spec"]["gpuIndex"] == 0
    assert put["status"] == {"phase": "Degraded"}
    assert meta(put)["generation"] == 2

    # migweaver's own status call goes through the subresource too.
    reported = await layouts.patch_status(name, {"status": {"phase": "Ready"}})
    assert reported["status"]["phase"] == "Ready"


# ---------------------------------------------------------------------- schema


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def widgets(kube: Kube) -> AsyncIterator[Ref]:
    """A namespaced test CRD without a status subresource, with a small schema."""
    group = f"{kube.prefix}e2e.migweaver.io"
    ref = Ref(f"{group}/v1", "widgets", True, "Widget")
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "string", "enum": ["small", "large"]},
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                    "mode": {"type": "string", "default": "fast"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
            "status": {"type": "object", "properties": {"note": {"type": "string"}}},
        },
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "listKind": "WidgetList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    await kube.request("POST", CRDS.path(), crd)
    await kube.wait_for(CRDS, f"widgets.{group}", _established)
    # A real apiserver serves a new kind a moment after Established: wait for discovery.
    await _until(lambda: _served(kube, f"/apis/{group}/v1", "widgets"))
    yield ref
    await kube.request("DELETE", CRDS.path(name=f"widgets.{group}"))


def _established(crd: JsonDict | None) -> bool:
    found = condition(crd, "Established")
    return bool(found and found["status"] == "True")


async def _served(kube: Kube, path: str, plural: str) -> bool:
    try:
        listing = await kube.request("GET", path)
    except KubeError:
        return False
    return any(r["name"] == plural for r in listing["resources"])


async def _until(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Bounded polling, only where no watch can tell (API discovery)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - discovery has no watch
            await asyncio.sleep(0.1)


def widget(ref: Ref, name: str, **spec: Any) -> JsonDict:
    return {"apiVersion": ref.api_version, "kind": ref.kind, "metadata": {"name": name},
            "spec": spec}  # fmt: skip


async def test_custom_resources_are_pruned_defaulted_and_validated(
    kube: Kube, widgets: Ref
) -> None:
    body = widget(widgets, "w1", size="small", bogus=1, free={"anything": {"goes": True}})
    body["toplevel"] = "x"
    created = await kube.create(widgets, body)
    assert created["spec"] == {
        "size": "small",
        "mode": "fast",
        "free": {"anything": {"goes": True}},
    }
    assert "toplevel" not in created
    assert meta(created)["namespace"] == kube.namespace

    cases = [
        (widget(widgets, "w2", size="medium"), "spec.size", "Unsupported value"),
        (
            widget(widgets, "w3", size="small", replicas=-1),
            "spec.replicas",
            "greater than or equal to 0",
        ),
        (
            widget(widgets, "w4", size="small", replicas=11),
            "spec.replicas",
            "less than or equal to 10",
        ),
        (
            widget(widgets, "w5", size="small", replicas="two"),
            "spec.replicas",
            "must be of type integer",
        ),
        (widget(widgets, "w6", replicas=1), "spec.size", "Required value"),
        (widget(widgets, "w7", size="small", tags=[1]), "spec.tags[0]", "must be of type string"),
    ]
    for bad, field, phrase in cases:
        error = await expect_error(422, "Invalid", kube.create(widgets, bad))
        assert phrase in error.message, error.message
        assert field in [c["field"] for c in error.body["details"]["causes"]], error.body

    # Without a status subresource, status is ordinary content: any change bumps generation.
    noted = await kube.patch(widgets, "w1", {"status": {"note": "hi"}})
    assert noted["status"] == {"note": "hi"}
    assert meta(noted)["generation"] == 2
    # A custom resource needs kind and apiVersion in its body (built-in kinds do not).
    await expect_error(400, "BadRequest", kube.create(widgets, {"metadata": {"name": "w8"}}))
    # Our own CRD's schema is enforced too.
    error = await expect_error(
        422, "Invalid", kube.create(MIGLAYOUTS, layout(kube, "bad", gpuIndex=-1))
    )
    assert "spec.gpuIndex" in error.message


async def test_a_new_crd_is_served_and_its_deletion_removes_its_objects(kube: Kube) -> None:
    group = f"{kube.prefix}gadgets.e2e.migweaver.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1beta1", "served": True, "storage": True,
                          "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {
                              "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }  # fmt: skip
    await kube.create(CRDS, crd)
    await kube.wait_for(CRDS, f"gadgets.{group}", _established)
    await _until(lambda: _served(kube, f"/apis/{group}/v1beta1", "gadgets"))
    resources = (await kube.request("GET", f"/apis/{group}/v1beta1"))["resources"]
    assert {r["name"] for r in resources} == {"gadgets", "gadgets/status"}
    groups = {g["name"] for g in (await kube.request("GET", "/apis"))["groups"]}
    assert group in groups

    gadgets = Ref(f"{group}/v1beta1", "gadgets", False, "Gadget")
    await kube.create(gadgets, {"apiVersion": gadgets.api_version, "kind": "Gadget",
                                "metadata": {"name": "g1"}, "spec": {"x": 1}})  # fmt: skip
    await kube.delete(CRDS, f"gadgets.{group}")
    await kube.wait_gone(CRDS, f"gadgets.{group}")
    await _until(lambda: _not_served(kube, f"/apis/{group}/v1beta1"))


async def _not_served(kube: Kube, path: str) -> bool:
    try:
        await kube.request("GET", path)
    except KubeError as exc:
        return exc.status == 404
    return False


# ---------------------------------------------------------------------- selectors


async def test_label_selectors(kube: Kube, layouts: ClusterObjects) -> None:
    labels = {"a": {"app": "x", "tier": "db"}, "b": {"app": "y"}, "c": {"app": "x", "tier": "web"},
              "d": {}}  # fmt: skip
    for name, extra in labels.items():
        await kube.create(
            CONFIGMAPS, {"metadata": {"name": name, "labels": {**extra, TEST_LABEL: "sel"}}}
        )
    cases = {
        "app=x": "ac", "app==x": "ac", "app!=x": "bd", "tier in (db,web)": "ac",
        "tier notin (db)": "bcd", "tier": "ac", "!tier": "bd", "app=x,tier=web": "c",
        "app in (x, y),!tier": "b",
    }  # fmt: skip
    for selector, expected in cases.items():
        found = await kube.list(
            CONFIGMAPS, kube.namespace, label_selector=f"{TEST_LABEL}=sel,{selector}"
        )
        assert "".join(sorted(meta(o)["name"] for o in found)) == expected, selector
    await expect_error(400, "BadRequest", kube.list(CONFIGMAPS, label_selector="app in x"))
    await kube.request(
        "DELETE",
        CONFIGMAPS.path(kube.namespace),
        query={"labelSelector": f"{TEST_LABEL}=sel,app=y"},
    )
    left = await kube.list(CONFIGMAPS, kube.namespace, label_selector=f"{TEST_LABEL}=sel")
    assert sorted(meta(o)["name"] for o in left) == ["a", "c", "d"]

    # migweaver's own list call with the agent's selector.
    await kube.create(MIGLAYOUTS, layout(kube, "sel-1"))
    await kube.create(MIGLAYOUTS, layout(kube, "sel-2", labels={LABEL_NODE: kube.name("other")}))
    mine = await layouts.list(f"{LABEL_NODE}={kube.name('tn')},{TEST_LABEL}")
    assert [meta(o)["name"] for o in mine.items] == [kube.name("sel-1")]
    assert int(mine.resource_version) > 0


async def test_field_selectors_across_and_within_namespaces(kube: Kube) -> None:
    other = f"{kube.namespace}-b"
    await kube.create(NAMESPACES, {"metadata": {"name": other}})
    node = kube.name("fs-node")
    await kube.create(NODES, {"metadata": {"name": node}})
    await kube.create(PODS, pod("placed", nodeName=node))
    await kube.create(PODS, pod("waiting"))
    await kube.create(PODS, pod("elsewhere", nodeName=node), other)

    async def names(namespace: str | None, selector: str) -> list[str]:
        found = await kube.list(PODS, namespace, field_selector=selector)
        return sorted(f"{meta(p)['namespace']}/{meta(p)['name']}" for p in found)

    ns = kube.namespace
    assert await names(None, f"spec.nodeName={node}") == sorted(
        [f"{ns}/placed", f"{other}/elsewhere"]
    )
    assert await names(ns, f"spec.nodeName=={node}") == [f"{ns}/placed"]
    assert await names(ns, "spec.nodeName=") == [f"{ns}/waiting"]
    assert await names(ns, "status.phase=Pending,metadata.name!=placed") == [f"{ns}/waiting"]
    assert await names(None, f"metadata.namespace={other}") == [f"{other}/elsewhere"]
    assert await names(ns, "metadata.name=waiting") == [f"{ns}/waiting"]
    await expect_error(400, "BadRequest", kube.list(PODS, ns, field_selector="spec.bogus=1"))
    # Custom resources only support metadata fields (no selectableFields in our CRDs).
    await expect_error(400, "BadRequest", kube.list(MIGLAYOUTS, field_selector="spec.nodeName=n1"))


# ---------------------------------------------------------------------- patches


async def test_merge_and_json_patch(kube: Kube, layouts: ClusterObjects) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "patch", labels={"drop": "me"}))
    name = meta(created)["name"]
    three = {"profile": "3g.40gb", "placement": {"start": 4, "size": 4}}
    two = {"profile": "2g.20gb", "placement": {"start": 0, "size": 2}}

    # Merge patch: lists are replaced, null deletes.
    merged = await layouts.patch(name, {"spec": {"instances": [three, two]}})
    merged = await layouts.patch(
        name, {"metadata": {"labels": {"drop": None}}, "spec": {"instances": [two]}}
    )
    assert merged["spec"]["instances"] == [two]
    assert "drop" not in meta(merged)["labels"]

    # JSON patch: test, add, replace, remove in one request.
    operations = [
        {"op": "test", "path": "/spec/gpuIndex", "value": 0},
        {"op": "add", "path": "/spec/instances/-", "value": three},
        {"op": "replace", "path": "/spec/migEnabled", "value": True},
        {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}},
        {"op": "remove", "path": "/metadata/annotations/note"},
    ]
    patched = await kube.patch(MIGLAYOUTS, name, operations, content_type=JSON_PATCH)
    assert patched["spec"]["instances"] == [two, three]
    assert patched["spec"]["migEnabled"] is True
    assert meta(patched)["generation"] == meta(merged)["generation"] + 1

    # A failing test (here: an optimistic-concurrency guard) changes nothing.
    guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
             {"op": "replace", "path": "/spec/gpuIndex", "value": 5}]  # fmt: skip
    await expect_error(422, "Invalid", kube.patch(MIGLAYOUTS, name, guard, content_type=JSON_PATCH))
    missing = [{"op": "remove", "path": "/spec/nope"}]
    await expect_error(
        422, "Invalid", kube.patch(MIGLAYOUTS, name, missing, content_type=JSON_PATCH)
    )
    assert (await layouts.get(name))["spec"]["gpuIndex"] == 0

    # Strategic merge patch is for built-in kinds only.
    await expect_error(
        415,
        "UnsupportedMediaType",
        kube.patch(MIGLAYOUTS, name, {"spec": {}}, content_type=STRATEGIC_PATCH),
    )


async def test_strategic_merge_patch_on_pods(kube: Kube) -> None:
    body = pod("smp")
    body["spec"]["containers"].append({"name": "side", "image": "busybox:1.36"})
    await kube.create(PODS, body)
    patched = await kube.patch(
        PODS,
        "smp",
        {"metadata": {"labels": {"k": "v"}},
         "spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}},
        content_type=STRATEGIC_PATCH,
    )  # fmt: skip
    images = {c["name"]: c["image"] for c in patched["spec"]["containers"]}
    assert images == {"main": "busybox:1.37", "side": "busybox:1.36"}
    assert meta(patched)["labels"] == {"k": "v"}

    ready = {"type": "Ready", "status": "False", "reason": "E2E"}
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "E2E"}
    status = {"status": {"conditions": [ready, scheduled]}}
    await kube.patch(PODS, "smp", status, content_type=STRATEGIC_PATCH, subresource="status")
    flipped = {"status": {"conditions": [{**ready, "status": "True"}]}}
    after = await kube.patch(
        PODS, "smp", flipped, content_type=STRATEGIC_PATCH, subresource="status"
    )
    by_type = {c["type"]: c["status"] for c in after["status"]["conditions"]}
    assert by_type == {"Ready": "True", "PodScheduled": "False"}  # merged by type


# ---------------------------------------------------------------------- finalizers


async def test_finalizers_keep_a_deleted_object_until_they_are_emptied(
    kube: Kube, layouts: ClusterObjects
) -> None:
    finalizer = "e2e.migweaver.io/hold"
    created = await kube.create(MIGLAYOUTS, layout(kube, "final", finalizers=[finalizer]))
    name = meta(created)["name"]
    events = _collect(kube, MIGLAYOUTS, meta(created)["resourceVersion"], f"{TEST_LABEL}=final")

    deleting = await kube.delete(MIGLAYOUTS, name)
    assert meta(deleting)["deletionTimestamp"]
    held = await layouts.get(name)
    assert meta(held)["deletionTimestamp"]
    assert meta(held)["deletionGracePeriodSeconds"] == 0
    assert meta(held)["generation"] == 2  # the apiserver bumps it when deletion starts

    more = {"metadata": {"finalizers": [finalizer, "e2e.migweaver.io/more"]}}
    error = await expect_error(422, "Invalid", kube.patch(MIGLAYOUTS, name, more))
    assert "metadata.finalizers" in error.message
    await layouts.patch(name, {"spec": {"gpuIndex": 1}})  # the spec still changes

    await layouts.patch(name, {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        await layouts.get(name)
    seen = await _until_seen(events, lambda kinds: "DELETED" in kinds)
    assert seen == ["MODIFIED", "MODIFIED", "DELETED"]

    # Without finalizers an object goes at once.
    plain = await kube.create(MIGLAYOUTS, layout(kube, "final-plain"))
    await kube.delete(MIGLAYOUTS, meta(plain)["name"])
    assert await kube.get_or_none(MIGLAYOUTS, meta(plain)["name"]) is None


class _Collector:
    """Events of one watch, gathered by a task (for tests that act while watching)."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.objects: list[JsonDict] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


def _collect(kube: Kube, ref: Ref, rv: str, selector: str) -> _Collector:
    collector = _Collector()

    async def run() -> None:
        async for kind, obj in kube.watch(ref, rv, label_selector=selector, timeout_s=10):
            if kind != "BOOKMARK":
                collector.kinds.append(kind)
                collector.objects.append(obj)
                collector.changed.set()

    collector.task = asyncio.create_task(run())
    return collector


async def _until_seen(collector: _Collector, done: Callable[[list[str]], bool]) -> list[str]:
    assert collector.task is not None
    try:
        async with asyncio.timeout(10):
            while not done(collector.kinds):
                collector.changed.clear()
                await collector.changed.wait()
    finally:
        collector.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector.task
    return collector.kinds


# ---------------------------------------------------------------------- watch


async def test_watch_resumes_after_a_resource_version_with_bookmarks(
    kube: Kube, layouts: ClusterObjects
) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "watch"))
    name, start = meta(created)["name"], meta(created)["resourceVersion"]
    await layouts.patch(name, {"spec": {"gpuIndex": 1}})
    last = await layouts.patch(name, {"spec": {"gpuIndex": 2}})

    # migweaver's own watch call: resumes after `start`, bookmarks allowed, server timeout.
    # A Kubernetes v1.36 apiserver bookmarks 2 s before the deadline (and every minute),
    # but only past the last resourceVersion the watch sent: this quiet watch gets none.
    seen: list[tuple[str, int]] = []
    async for kind, obj in layouts.watch(start, f"{TEST_LABEL}=watch", timeout_s=3):
        seen.append((kind, int(meta(obj)["resourceVersion"])))
    last_rv = int(meta(last)["resourceVersion"])
    assert [k for k, _ in seen] == ["MODIFIED", "MODIFIED"]
    assert int(start) < seen[0][1] < seen[1][1] == last_rv


@pytest.mark.emulator_only(
    "the test kit's v1.36 apiserver refuses a watch without resourceVersion (500: its etcd "
    "lacks RequestWatchProgress) or times it out (504 Too large resource version); "
    "migweaver always watches from its own list"
)
async def test_watch_without_a_resource_version_starts_with_the_current_objects(
    kube: Kube, layouts: ClusterObjects
) -> None:
    await kube.create(MIGLAYOUTS, layout(kube, "unversioned"))
    stream = kube.watch(MIGLAYOUTS, None, label_selector=f"{TEST_LABEL}=unversioned")
    async with contextlib.aclosing(stream):
        async for kind, obj in stream:
            assert (kind, obj["spec"]["gpuIndex"]) == ("ADDED", 0)
            break


async def test_watch_follows_objects_in_and_out_of_its_label_selector(
    kube: Kube, layouts: ClusterObjects
) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "colour", labels={"colour": "blue"}))
    name = meta(created)["name"]
    events = _collect(kube, MIGLAYOUTS, meta(created)["resourceVersion"], "colour=blue")
    red = await layouts.patch(name, {"metadata": {"labels": {"colour": "red"}}})
    red_rv = meta(red)["resourceVersion"]
    await layouts.patch(name, {"spec": {"gpuIndex": 4}})  # invisible: not blue
    await layouts.patch(name, {"metadata": {"labels": {"colour": "blue"}}})
    await layouts.patch(name, {"spec": {"gpuIndex": 5}})
    kinds = await _until_seen(events, lambda kinds: len(kinds) >= 3)
    assert kinds == ["DELETED", "ADDED", "MODIFIED"]
    # The object that left the selector comes as the watch last matched it, with the
    # resourceVersion of the change that made it leave.
    assert events.objects[0]["metadata"]["labels"]["colour"] == "blue"
    assert events.objects[0]["metadata"]["resourceVersion"] == red_rv
    assert events.objects[1]["spec"]["gpuIndex"] == 4


@pytest.mark.emulator_only("a real apiserver's history cannot be compacted on demand")
async def test_watch_from_a_compacted_resource_version_is_410_gone(tmp_path: Path) -> None:
    async with Emulator(history_size=3) as small:
        kube = await Kube.connect(small.write_kubeconfig(tmp_path / "config"), "default")
        try:
            await kube.request("POST", CRDS.path(), yaml.safe_load(CRD_FILE.read_text()))
            _, start = await kube.list_with_version(CONFIGMAPS, "default")
            for index in range(4):
                await kube.create(CONFIGMAPS, {"metadata": {"name": f"cm{index}"}})
            events = [e async for e in kube.watch(CONFIGMAPS, start, "default")]
            assert len(events) == 1
            kind, status = events[0]
            assert kind == "ERROR"
            assert (status["code"], status["reason"]) == (410, "Expired")
            assert status["message"].startswith(f"too old resource version: {start}")

            # migweaver's watch surfaces it as ApiError(410), so the agent re-lists.
            with pytest.raises(ApiError) as caught:
                async for _ in ClusterObjects(kube.api, MIGLAYOUT_PLURAL).watch(start):
                    pass
            assert caught.value.status == 410
        finally:
            await kube.close()


# ---------------------------------------------------------------------- pods


async def test_scheduling_gates_can_only_be_removed_and_binding_sets_the_node(
    kube: Kube,
) -> None:
    # No Node of this name exists, so a real scheduler cannot bind the pod before we do.
    node = kube.name("nowhere")
    gates = [{"name": "e2e.migweaver.io/one"}, {"name": "e2e.migweaver.io/two"}]
    created = await kube.create(PODS, pod("gated", schedulingGates=gates))
    assert created["status"]["phase"] == "Pending"
    assert "nodeName" not in created["spec"]
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "gated"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": node}}  # fmt: skip
    bind_path = PODS.path(kube.namespace, "gated", "binding")
    await expect_error(409, "Conflict", kube.request("POST", bind_path, binding))

    add_gate = [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "x.io/new"}}]
    error = await expect_error(
        422, "Invalid", kube.patch(PODS, "gated", add_gate, content_type=JSON_PATCH)
    )
    assert "spec.schedulingGates" in error.message
    set_node = {"spec": {"nodeName": node}}
    await expect_error(422, "Invalid", kube.patch(PODS, "gated", set_node))

    # While gated, nodeSelector may grow and gates may go (what the operator does).
    one_gone = await kube.patch(
        PODS,
        "gated",
        [{"op": "remove", "path": "/spec/schedulingGates/0"},
         {"op": "add", "path": "/spec/nodeSelector", "value": {"kubernetes.io/hostname": node}}],
        content_type=JSON_PATCH,
    )  # fmt: skip
    assert [g["name"] for g in one_gone["spec"]["schedulingGates"]] == ["e2e.migweaver.io/two"]
    ungated = await kube.patch(PODS, "gated", {"spec": {"schedulingGates": None}})
    assert "schedulingGates" not in ungated["spec"]
    reselect = {"spec": {"nodeSelector": {"kubernetes.io/hostname": "elsewhere"}}}
    await expect_error(422, "Invalid", kube.patch(PODS, "gated", reselect))

    await kube.request("POST", bind_path, binding)
    bound = await kube.get(PODS, "gated")
    assert bound["spec"]["nodeName"] == node
    assert (condition(bound, "PodScheduled") or {}).get("status") == "True"
    await expect_error(409, "Conflict", kube.request("POST", bind_path, binding))


async def test_pods_get_the_apiservers_defaults_and_extended_resource_rules(
    kube: Kube,
) -> None:
    gpu = pod("gpu")
    gpu["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "8000"}
    }
    created = await kube.create(PODS, gpu)
    container = created["spec"]["containers"][0]
    # Quantities are stored canonically: 8000 is 8k (and the requests copy the limits).
    assert container["resources"]["requests"] == {
        "nvidia.com/gpu": "2",
        "nvidia.com/gpumem": "8k",
    }
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert created["spec"]["schedulerName"] == "default-scheduler"
    assert created["status"]["qosClass"] == "BestEffort"

    requests_only = pod("gpu-bad")
    requests_only["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    await expect_error(422, "Invalid", kube.create(PODS, requests_only))
    await expect_error(422, "Invalid", kube.create(PODS, {"metadata": {"name": "empty"},
                                                          "spec": {"containers": []}}))  # fmt: skip
    # Deleting with grace 0 removes a pod at once (no kubelet has to confirm).
    await kube.delete(PODS, "gpu")
    assert await kube.get_or_none(PODS, "gpu") is None


@pytest.mark.emulator_only("the binder stands in for kube-scheduler on the emulator")
async def test_binder_binds_a_pod_once_its_gates_are_gone(kube: Kube, binder: None) -> None:
    node = kube.name("bind-node")
    await kube.create(
        NODES, {"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}
    )
    body = pod("to-bind", schedulingGates=[{"name": "e2e.migweaver.io/wait"}],
               nodeSelector={"kubernetes.io/hostname": node})  # fmt: skip
    await kube.create(PODS, body)
    await kube.patch(PODS, "to-bind", {"spec": {"schedulingGates": None}})
    bound = await kube.wait_for(PODS, "to-bind", lambda p: bool(p and p["spec"].get("nodeName")))
    assert bound is not None
    assert bound["spec"]["nodeName"] == node


# ---------------------------------------------------------------------- events, namespaces


async def test_events_for_cluster_scoped_objects_go_to_default(kube: Kube) -> None:
    created = await kube.create(MIGLAYOUTS, layout(kube, "events"))
    recorder = EventRecorder(CoreObjects(kube.api), "migweaver-e2e")
    await recorder.record(created, "E2ETest", "an event from the e2e suite")
    found = await kube.wait_for_list(
        EVENTS,
        lambda items: len(items) == 1,
        "default",
        field_selector=f"involvedObject.uid={meta(created)['uid']}",
    )
    assert found[0]["reason"] == "E2ETest"
    assert found[0]["involvedObject"]["kind"] == "MigLayout"
    kube.track(EVENTS, meta(found[0])["name"], "default")
    # The apiserver refuses an event of a cluster-scoped object elsewhere than default.
    elsewhere = {
        "metadata": {"name": "misplaced"},
        "involvedObject": {"kind": "MigLayout", "name": meta(created)["name"]},
        "reason": "E2ETest",
        "message": "misplaced",
    }
    await expect_error(422, "Invalid", kube.create(EVENTS, elsewhere))


async def test_deleting_a_namespace_deletes_its_contents(kube: Kube) -> None:
    doomed = f"{kube.namespace}-doomed"
    await kube.create(NAMESPACES, {"metadata": {"name": doomed}})
    await kube.create(CONFIGMAPS, {"metadata": {"name": "inside"}}, doomed)
    namespace = await kube.get(NAMESPACES, doomed)
    assert meta(namespace)["labels"]["kubernetes.io/metadata.name"] == doomed
    assert namespace["status"]["phase"] == "Active"
    await kube.delete(NAMESPACES, doomed)
    await kube.wait_for(CONFIGMAPS, "inside", lambda o: o is None, doomed, timeout_s=60)
    await kube.wait_for(NAMESPACES, doomed, lambda o: o is None, timeout_s=60)


# ---------------------------------------------------------------------- admission


class WebhookServer:
    """A tiny mutating webhook over TLS: annotates and gates pods, denies on request."""

    def __init__(self, tls: TlsFiles) -> None:
        self.tls = tls
        self.reviews: list[JsonDict] = []
        self.delay_s = 0.0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _mutate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        await asyncio.sleep(self.delay_s)  # simulates a slow webhook when asked to
        req = review["request"]
        labels = req["object"]["metadata"].get("labels") or {}
        response: JsonDict = {"uid": req["uid"], "allowed": True}
        if labels.get("deny"):
            response = {"uid": req["uid"], "allowed": False,
                        "status": {"code": 403, "message": "no such pods here"}}  # fmt: skip
        else:
            patch = [
                {"op": "add", "path": "/metadata/annotations", "value": {"e2e/mutated": "yes"}},
                {"op": "add", "path": "/spec/schedulingGates",
                 "value": [{"name": "e2e.migweaver.io/gate"}]},
            ]  # fmt: skip
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    async def __aenter__(self) -> WebhookServer:
        app = web.Application()
        app.router.add_post("/mutate", self._mutate)
        # handler_cancellation: a call the API server gave up on ends here too.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls.server_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://127.0.0.1:{port}/mutate"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def webhook_config(name: str, url: str, ca_bundle: str, **webhook: Any) -> JsonDict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": f"{name}.e2e.migweaver.io",
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            **webhook,
        }],
    }  # fmt: skip


async def test_admission_webhook_patches_matching_pods(kube: Kube, webhook_tls: TlsFiles) -> None:
    async with WebhookServer(webhook_tls) as hook:
        selector = {"matchLabels": {"e2e-webhook": "on"}}
        await kube.create(
            MUTATING_WEBHOOKS,
            webhook_config("e2e-gate", hook.url, webhook_tls.ca_bundle, objectSelector=selector,
                           timeoutSeconds=1),
        )  # fmt: skip
        mutated = await kube.create(PODS, pod("hooked", labels={"e2e-webhook": "on"}))
        assert meta(mutated)["annotations"] == {"e2e/mutated": "yes"}
        assert mutated["spec"]["schedulingGates"] == [{"name": "e2e.migweaver.io/gate"}]
        request = hook.reviews[-1]["request"]
        assert (request["operation"], request["namespace"]) == ("CREATE", kube.namespace)
        assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
        assert request["object"]["metadata"]["name"] == "hooked"

        untouched = await kube.create(PODS, pod("plain"))
        assert "annotations" not in meta(untouched)
        assert len(hook.reviews) == 1  # objectSelector: not even called

        error = await expect_error(
            403, "", kube.create(PODS, pod("denied", labels={"e2e-webhook": "on", "deny": "1"}))
        )
        assert 'admission webhook "e2e-gate.e2e.migweaver.io" denied the request' in error.message

        hook.delay_s = 3  # beyond timeoutSeconds: 1
        error = await expect_error(
            500, "InternalError", kube.create(PODS, pod("slow", labels={"e2e-webhook": "on"}))
        )
        assert "failed calling webhook" in error.message
        assert await kube.get_or_none(PODS, "slow") is None


async def test_admission_failure_policy_and_namespace_selector(
    kube: Kube, webhook_tls: TlsFiles
) -> None:
    async with WebhookServer(webhook_tls) as hook:
        down = hook.url.replace("/mutate", "/nothing-here")  # answers 404: a failed call
        await kube.create(
            MUTATING_WEBHOOKS, webhook_config("e2e-down", down, webhook_tls.ca_bundle)
        )
        error = await expect_error(500, "InternalError", kube.create(PODS, pod("blocked")))
        assert 'failed calling webhook "e2e-down.e2e.migweaver.io"' in error.message

        ignore = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
        await kube.patch(MUTATING_WEBHOOKS, "e2e-down", ignore, content_type=JSON_PATCH)
        admitted = await kube.create(PODS, pod("admitted"))
        assert "annotations" not in meta(admitted)

        elsewhere = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
        await kube.create(
            MUTATING_WEBHOOKS,
            webhook_config("e2e-other-ns", hook.url, webhook_tls.ca_bundle,
                           namespaceSelector=elsewhere),
        )  # fmt: skip
        assert "annotations" not in meta(await kube.create(PODS, pod("not-selected")))
        assert hook.reviews == []

        # A certificate the caBundle does not vouch for is a failed call too.
        other_ca = base64.b64encode(b"not a certificate").decode()
        await kube.create(MUTATING_WEBHOOKS, webhook_config("e2e-bad-ca", hook.url, other_ca))
        error = await expect_error(500, "InternalError", kube.create(PODS, pod("bad-ca")))
        assert 'failed calling webhook "e2e-bad-ca' in error.message
        assert "unable to load root certificates" in error.message


async def test_webhook_configurations_are_validated(kube: Kube) -> None:
    config = webhook_config(kube.name("e2e-invalid"), "http://127.0.0.1:1/x", "")
    del config["webhooks"][0]["sideEffects"]
    error = await expect_error(422, "Invalid", kube.create(MUTATING_WEBHOOKS, config))
    fields = {c["field"] for c in error.body["details"]["causes"]}
    assert {"webhooks[0].clientConfig.url", "webhooks[0].sideEffects"} <= fields


# ---------------------------------------------------------------------- limits


@pytest.mark.emulator_only("documents what the emulator deliberately does not do")
async def test_unsupported_requests_fail_loudly(kube: Kube) -> None:
    created = await kube.create(CONFIGMAPS, {"metadata": {"name": "limits"}})
    await expect_error(
        415,
        "UnsupportedMediaType",
        kube.patch(CONFIGMAPS, "limits", {"data": {}}, content_type="application/apply-patch+yaml"),
    )
    await expect_error(
        400,
        "BadRequest",
        kube.request("POST", CONFIGMAPS.path(kube.namespace), created, {"dryRun": "All"}),
    )
    async with aiohttp.ClientSession() as session, session.get(f"{kube.emulator.url}/nope") as r:
        assert r.status == 404


async def test_apply_creates_then_updates_a_multi_document_yaml(kube: Kube) -> None:
    name = kube.name("applied")
    text = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: applied, labels: {{{TEST_LABEL}: applied}}}}
data: {{mode: first}}
---
apiVersion: migweaver.io/v1alpha1
kind: MigLayout
metadata: {{name: {name}}}
spec: {{nodeName: {kube.name("tn")}, gpuIndex: 0, gpuUUID: GPU-e2e}}
"""
    first = await kube.apply(text)
    assert [o["kind"] for o in first] == ["ConfigMap", "MigLayout"]
    second = await kube.apply(text.replace("mode: first", "mode: second"))
    assert second[0]["data"] == {"mode": "second"}
    assert meta(second[1])["generation"] == 1  # same spec: nothing changed
    assert meta(second[1])["resourceVersion"] == meta(first[1])["resourceVersion"]


@pytest.mark.emulator_only(
    "sendInitialEvents needs RequestWatchProgress, which the test kit's etcd lacks (500)"
)
async def test_watch_with_initial_events_ends_them_with_a_bookmark(kube: Kube) -> None:
    await kube.create(CONFIGMAPS, {"metadata": {"name": "initial", "labels": {TEST_LABEL: "ie"}}})
    query = {"watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
             "allowWatchBookmarks": "true", "labelSelector": f"{TEST_LABEL}=ie",
             "timeoutSeconds": "1"}  # fmt: skip
    url = f"{kube.emulator.url}{CONFIGMAPS.path(kube.namespace)}"
    async with aiohttp.ClientSession() as session, session.get(url, params=query) as response:
        events = [json.loads(line) async for line in response.content if line.strip()]
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
