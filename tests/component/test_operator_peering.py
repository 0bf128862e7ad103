"""The operator creates its Kopf peering object when it is missing (the manifests do not
ship it, so that one `kubectl apply -k manifests/` installs everything)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import pytest

from migweaver.k8s.client import ApiError, Conflict, JsonDict
from migweaver.k8s.cluster import AnyClusterObjects
from migweaver.operator.main import ensure_peering, peering_body


class Peerings:
    def __init__(self, existing: JsonDict | None = None, fail: ApiError | None = None) -> None:
        self.existing = existing
        self.fail = fail
        self.created: list[JsonDict] = []

    async def get(self, name: str) -> JsonDict | None:
        return self.existing

    async def create(self, body: Mapping[str, Any]) -> JsonDict:
        if self.fail is not None:
            raise self.fail
        self.created.append(dict(body))
        return dict(body)


async def ensure(peerings: Peerings) -> None:
    await ensure_peering(cast(AnyClusterObjects, peerings), "migweaver")


async def test_a_missing_peering_object_is_created() -> None:
    peerings = Peerings()
    await ensure(peerings)
    assert peerings.created == [peering_body("migweaver")]
    assert peerings.created[0]["kind"] == "ClusterKopfPeering"


async def test_an_existing_peering_object_is_left_alone() -> None:
    peerings = Peerings(existing=peering_body("migweaver"))
    await ensure(peerings)
    assert peerings.created == []


async def test_another_replica_creating_it_first_is_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peerings = Peerings(fail=Conflict(409, "AlreadyExists", "create"))
    with caplog.at_level(logging.WARNING, logger="migweaver.operator"):
        await ensure(peerings)
    assert peerings.created == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_no_right_to_create_it_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="migweaver.operator"):
        await ensure(Peerings(fail=ApiError(403, "Forbidden", "create clusterkopfpeerings")))
    assert "no replica plans until it exists" in caplog.text
    assert "403" in caplog.text
