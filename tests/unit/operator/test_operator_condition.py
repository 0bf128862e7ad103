"""The work loop's writes: the pod condition translates `core.pod_condition` and never fails a
round; a pod whose write the API server refuses never stops the others' releases; a periodic
read of the ConfigMap never undoes a newer version the watch delivered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from kubernetes_asyncio import client

from migweaver.core.config import CONFIG_KEY, CONFIGMAP_NAME
from migweaver.core.operator.pod_condition import PlacementCondition
from migweaver.core.operator.state import cluster_state
from migweaver.core.resources.api import PLACEMENT_CONDITION
from migweaver.k8s.client import ApiError, Listing, NotFound
from migweaver.operator.access import operator_api
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.rounds import Operator
from migweaver.operator.settings import OperatorOptions
from tests.unit.operator_helpers import layout, nodeconfig, pod, reservation

JsonDict = dict[str, Any]
WAITING = PlacementCondition("False", "MigUnschedulable", "no GPU has 200000 MiB")


class FakePods:
    """Records `patch_status` calls; raises `error` when one is given. `patch` raises
    `refuse[name]` for the pods named there and records the others."""

    def __init__(
        self, error: ApiError | None = None, refuse: Mapping[str, ApiError] | None = None
    ) -> None:
        self.error = error
        self.refuse = dict(refuse or {})
        self.calls: list[tuple[str, str, Mapping[str, Any]]] = []
        self.patched: list[str] = []

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        if name in self.refuse:
            raise self.refuse[name]
        self.patched.append(f"{namespace}/{name}")
        return {}

    async def evict(self, namespace: str, name: str, uid: str) -> None:
        raise AssertionError(f"no pod is evicted here ({namespace}/{name})")

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        self.calls.append((namespace, name, patch))
        if self.error is not None:
            raise self.error
        return {}


async def condition_write(
    fake: FakePods, body: JsonDict, wanted: PlacementCondition, only_if_present: bool = False
) -> None:
    async with client.ApiClient() as api:
        access = replace(operator_api(api, "migweaver"), pods=fake)
        operator = Operator(access, OperatorOptions(), OperatorMetrics(), wall=lambda: 0.0)
        await operator._condition(body, wanted, only_if_present=only_if_present)


async def test_the_patch_goes_to_the_pods_status() -> None:
    fake = FakePods()
    await condition_write(fake, pod("huge"), WAITING)
    ((namespace, name, patch),) = fake.calls
    assert (namespace, name) == ("default", "huge")
    (written,) = patch["status"]["conditions"]
    assert written == {
        "type": PLACEMENT_CONDITION,
        "status": "False",
        "reason": "MigUnschedulable",
        "message": "no GPU has 200000 MiB",
        "lastTransitionTime": "1970-01-01T00:00:00Z",
    }


async def test_nothing_is_sent_when_the_condition_already_says_it() -> None:
    body = pod("huge")
    body["status"] = {
        "conditions": [
            {
                "type": PLACEMENT_CONDITION,
                "status": "False",
                "reason": "MigUnschedulable",
                "message": "no GPU has 200000 MiB",
            }
        ]
    }
    fake = FakePods()
    await condition_write(fake, body, WAITING)
    await condition_write(fake, pod("fits"), PlacementCondition("True", "MigReady", "x"), True)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        pytest.param(ApiError(403, "Forbidden", "patch status"), True, id="forbidden-is-logged"),
        pytest.param(ApiError(0, "not reached", "patch status"), True, id="unreachable-is-logged"),
        pytest.param(NotFound(404, "NotFound", "patch status"), False, id="gone-pod-is-quiet"),
    ],
)
async def test_a_failed_write_is_logged_never_raised(
    error: ApiError, logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakePods(error)
    with caplog.at_level(logging.WARNING, logger="migweaver.operator"):
        await condition_write(fake, pod("huge"), WAITING)
    assert len(fake.calls) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert bool(warnings) is logged
    if logged:
        assert "MigUnschedulable" in warnings[0].getMessage()
        assert "default/huge" in warnings[0].getMessage()


class NoEvents:
    async def record(self, *_: Any) -> None:
        return None


async def release_two(refuse: ApiError) -> tuple[FakePods, OperatorMetrics]:
    """A round's releases of two reserved pods whose instances are Ready; the write of
    `default/a` (released first, by name) is refused with `refuse`."""
    state = cluster_state(
        pods=[
            pod("a", reserved=reservation("n", (0, "1g.10gb", 6, 1))),
            pod("b", reserved=reservation("n", (0, "1g.10gb", 5, 1))),
        ],
        layouts=[layout("n", spec=[("1g.10gb", 5, 1), ("1g.10gb", 6, 1)])],
        nodeconfigs=[nodeconfig("c", node_name="n")],
        nodes=[],
    )
    fake = FakePods(refuse={"a": refuse})
    metrics = OperatorMetrics()
    async with client.ApiClient() as api:
        access = replace(operator_api(api, "migweaver"), pods=fake, events=NoEvents())
        operator = Operator(access, OperatorOptions(), metrics, wall=lambda: 0.0)
        await operator._releases(state)
    return fake, metrics


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(ApiError(403, "Forbidden", "patch pod"), id="forbidden"),
        pytest.param(ApiError(422, "Invalid", "patch pod"), id="invalid"),
    ],
)
async def test_a_refused_release_is_logged_and_the_other_pods_are_released(
    refusal: ApiError, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="migweaver.operator"):
        fake, metrics = await release_two(refusal)
    assert fake.patched == ["default/b"]
    assert b"migweaver_pods_placed_total 1.0" in metrics.render()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "default/a" in warning
    assert str(refusal.status) in warning


async def test_an_api_server_that_fails_fails_the_round() -> None:
    # Not the pod's fault: the round fails and the work loop retries it whole.
    with pytest.raises(ApiError):
        await release_two(ApiError(503, "Unavailable", "patch pod"))


class SlowConfigMaps:
    """A ConfigMap read that answers only once `answer` is set (with `body`)."""

    def __init__(self, body: JsonDict) -> None:
        self.body = body
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def list_named(self, name: str) -> Listing:
        self.asked.set()
        await self.answer.wait()
        return Listing([self.body], "1")


def device_config(version: str, memory: int) -> JsonDict:
    text = f"nvidia:\n  defaultMemory: {memory}\n"
    return {
        "metadata": {"name": CONFIGMAP_NAME, "resourceVersion": version},
        "data": {CONFIG_KEY: text},
    }


async def test_a_resync_read_never_undoes_a_newer_version_from_the_watch() -> None:
    # The periodic round reads version 1; while its answer is on the way, the watch
    # delivers version 2. Version 2 stays in force, whatever order the two arrive in.
    slow = SlowConfigMaps(device_config("1", 1000))
    async with client.ApiClient() as api:
        access = replace(operator_api(api, "migweaver"), configmaps=slow, events=NoEvents())
        operator = Operator(access, OperatorOptions(), OperatorMetrics())
        refresh = asyncio.create_task(operator.refresh_config())
        await slow.asked.wait()
        watched = asyncio.create_task(operator.reload_config(device_config("2", 2000)))
        await asyncio.sleep(0)  # one turn of the loop: the watch's call runs as far as it can
        slow.answer.set()
        await asyncio.gather(refresh, watched)
    assert operator.config.version == "2"
    assert operator.config.config.nvidia.default_memory == 2000
