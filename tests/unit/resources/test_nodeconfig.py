"""Which NodeConfig governs a node (most specific, then oldest) and which GPUs it skips."""

from __future__ import annotations

from typing import Any

import pytest

from migweaver.core.resources.models import NodeConfig
from migweaver.core.resources.nodeconfig import settings_for


def config(name: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> NodeConfig:
    return NodeConfig.from_api(
        {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "NodeConfig",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": spec,
        }
    )


POOL = config("pool", nodeSelector={"matchLabels": {"pool": "a"}}, operatingMode="mig")
NODE_A = config("node-a", nodeName="node-a", operatingMode="hami-core")
OLDER_POOL = config(
    "older", "2025-01-01T00:00:00Z", nodeSelector={"matchLabels": {"pool": "a"}},
    operatingMode="hami-core",
)  # fmt: skip

CASES = [
    ("no-config-means-hami-core", "n1", {}, [], ("hami-core", None, ())),
    ("selector-matches", "n1", {"pool": "a"}, [POOL], ("mig", "pool", ())),
    ("selector-misses", "n1", {"pool": "b"}, [POOL], ("hami-core", None, ())),
    ("node-name-beats-selector", "node-a", {"pool": "a"}, [POOL, NODE_A],
     ("hami-core", "node-a", ("pool",))),
    ("older-selector-wins", "n1", {"pool": "a"}, [POOL, OLDER_POOL],
     ("hami-core", "older", ("pool",))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("node", "labels", "configs", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_the_most_specific_then_oldest_config_wins(
    node: str,
    labels: dict[str, str],
    configs: list[NodeConfig],
    expected: tuple[str, str | None, tuple[str, ...]],
) -> None:
    settings = settings_for(node, labels, configs)
    assert (settings.mode, settings.source, settings.conflicts) == expected


def test_a_config_being_deleted_no_longer_applies() -> None:
    doomed = config("doomed", nodeName="n1", operatingMode="mig")
    doomed.metadata["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    assert settings_for("n1", {}, [doomed]).mode == "hami-core"


def test_filter_devices_by_index_and_case_insensitive_uuid() -> None:
    cfg = config(
        "n1",
        nodeName="n1",
        operatingMode="mig",
        filterDevices={"index": [3], "uuid": ["GPU-ABC"]},
    )
    settings = settings_for("n1", {}, [cfg])
    assert settings.manages(0, "GPU-def")
    assert not settings.manages(3, "GPU-def")
    assert not settings.manages(1, "gpu-abc")
