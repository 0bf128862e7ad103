"""The work loop's pod-condition write: it translates `core.pod_condition`, never fails a round."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes_asyncio import client
from operator_helpers import pod

from migweaver.core.pod_condition import CONDITION_TYPE, PlacementCondition
from migweaver.k8s.client import ApiError, NotFound
from migweaver.operator.metrics import OperatorMetrics
from migweaver.operator.rounds import Operator
from migweaver.operator.settings import OperatorOptions

JsonDict = dict[str, Any]
WAITING = PlacementCondition("False", "MigUnschedulable", "no GPU has 200000 MiB")


class FakePods:
    """Records `patch_status` calls; raises `error` when one is given."""

    def __init__(self, error: ApiError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str, Mapping[str, Any]]] = []

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JsonDict:
        self.calls.append((namespace, name, patch))
        if self.error is not None:
            raise self.error
        return {}


async def condition_write(
    fake: FakePods, body: JsonDict, wanted: PlacementCondition, only_if_present: bool = False
) -> None:
    async with client.ApiClient() as api:
        operator = Operator(api, OperatorOptions(), OperatorMetrics(), wall=lambda: 0.0)
        operator.pods = fake  # type: ignore[assignment]
        await operator._condition(body, wanted, only_if_present=only_if_present)


async def test_the_patch_goes_to_the_pods_status() -> None:
    fake = FakePods()
    await condition_write(fake, pod("huge"), WAITING)
    ((namespace, name, patch),) = fake.calls
    assert (namespace, name) == ("default", "huge")
    (written,) = patch["status"]["conditions"]
    assert written == {
        "type": CONDITION_TYPE,
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
                "type": CONDITION_TYPE,
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
