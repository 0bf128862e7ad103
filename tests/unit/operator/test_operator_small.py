"""Small decisions of the operator: config reload, leadership, the reservation annotation."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.config.reload import DEFAULT_CONFIG, ConfigInForce, reload
from migweaver.core.mig.profiles import Placement
from migweaver.core.operator.pod_reservation import (
    parse_reservation,
    pod_reservation,
    reservation_from_assignment,
)
from migweaver.core.planning.plan import Assignment, ContainerAssignment, Device
from tests.unit.operator_helpers import reservation

VALID = "nvidia:\n  defaultMemory: 1000\n"
INVALID = "nvidia:\n  defaultGPUNum: 0\n"


def configmap(text: str | None, rv: str) -> dict[str, Any]:
    data = {} if text is None else {"config.yaml": text}
    return {"metadata": {"name": "migweaver-device-config", "resourceVersion": rv}, "data": data}


def test_config_reload_sequence() -> None:
    current = ConfigInForce()
    current, outcome = reload(current, None)
    assert outcome.outcome == "unchanged"
    current, outcome = reload(current, configmap(VALID, "1"))
    assert outcome.outcome == "loaded"
    assert current.config.nvidia.default_memory == 1000
    good = current.config
    current, outcome = reload(current, configmap(VALID, "1"))
    assert outcome.outcome == "unchanged"
    current, outcome = reload(current, configmap(INVALID, "2"))
    assert outcome.outcome == "invalid"
    assert any("defaultGPUNum" in e for e in outcome.errors)
    assert current.config == good  # the last valid one stays
    current, outcome = reload(current, configmap(INVALID, "2"))
    assert outcome.outcome == "unchanged"  # reported once per version
    current, outcome = reload(current, configmap(None, "3"))
    assert outcome.outcome == "invalid"
    assert current.config == good
    current, outcome = reload(current, None)
    assert outcome.outcome == "removed"
    assert current.config == DEFAULT_CONFIG


def test_reservation_annotation_roundtrip() -> None:
    reserved = reservation("n", (0, "1g.10gb", 6, 1), (0, "1g.10gb", 4, 1))
    text = reserved.to_annotation()
    assert parse_reservation(text) == reserved
    assert '"migUUID"' not in text
    pod = {"metadata": {"annotations": {"migweaver.io/reservation": text}}}
    assert pod_reservation(pod) == reserved


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="absent"),
        pytest.param("{", id="not-json"),
        pytest.param("[]", id="not-an-object"),
        pytest.param('{"containers": []}', id="no-node"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_unusable_reservation_reads_as_none(text: object) -> None:
    assert parse_reservation(text) is None


def test_reservation_from_assignment() -> None:
    device = Device("n", 0, "GPU-1", "mig", "3g.40gb", Placement(4, 4), 40192, 42)
    assignment = Assignment("default/p", "n", (ContainerAssignment("main", (device,)),))
    found = reservation_from_assignment(assignment)
    assert found is not None
    (reserved,) = found.devices
    assert (reserved.profile, reserved.placement and reserved.placement.start) == ("3g.40gb", 4)
    assert reservation_from_assignment(Assignment("default/q", None, ())) is None
