"""A failed Event names its object in the log, never dumps it (docs/security.md)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from migweaver.k8s.client import ApiError
from migweaver.k8s.events import EventRecorder


class RefusingCore:
    async def create_event(self, namespace: str, body: Any) -> Any:
        raise ApiError(403, "Forbidden", "create event")


async def test_a_failed_event_logs_the_objects_name_not_the_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train",
            "namespace": "team-a",
            "uid": "u-1",
            "annotations": {"secret-ish": "do-not-log-me"},
            "labels": {"team": "a"},
        },
        "spec": {"containers": [{"name": "main", "env": [{"name": "TOKEN", "value": "x"}]}]},
    }
    with caplog.at_level(logging.WARNING, logger="migweaver.k8s.events"):
        await EventRecorder(RefusingCore(), "test").record(pod, "MigReady", "released")  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if "could not record" in r.getMessage()]
    message = record.getMessage()
    assert "MigReady" in message
    assert "Pod team-a/train" in message
    assert "HTTP 403 Forbidden" in message
    assert "do-not-log-me" not in caplog.text
    assert "TOKEN" not in caplog.text
