"""Every shipped example parses with the models and parser a cluster would use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from migweaver.core.config import load_device_config
from migweaver.core.mig.catalog import get_model
from migweaver.core.mig.geometry import PlacedInstance, layout_problems
from migweaver.core.resources.models import MigLayout, NodeConfig
from migweaver.core.resources.requests import PodDemand, VgpuMode, parse_pod

ROOT = Path(__file__).resolve().parents[3]


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]


def test_example_nodeconfigs_parse() -> None:
    configs = [NodeConfig.from_api(d) for d in documents("nodeconfig-mig.yaml")]
    assert [c.spec.operating_mode for c in configs] == ["mig", "mig"]
    assert configs[0].spec.node_name == "MIG-NODE-A"
    assert configs[1].spec.filter_devices.index == [3]


def test_example_static_layout_is_valid_on_its_gpu() -> None:
    (doc,) = documents("miglayout-static.yaml")
    layout = MigLayout.from_api(doc)
    assert layout.spec.policy == "static"
    model = get_model("A100-SXM4-80GB")
    assert model is not None
    placed = [PlacedInstance(i.profile, i.placement.to_placement()) for i in layout.spec.instances]
    assert layout_problems(model.table, placed) == []


def test_example_seed_pod_asks_for_two_mig_devices_of_8000_mib() -> None:
    (doc,) = documents("pod-seed.yaml")
    demand = parse_pod(doc)
    assert isinstance(demand, PodDemand)
    assert demand.mode is VgpuMode.MIG
    (container,) = demand.containers
    assert (container.count, container.memory_mib) == (2, 8000)


@pytest.mark.parametrize("path", ["examples/device-config.yaml", "manifests/device-config.yaml"])
def test_shipped_device_configs_are_valid(path: str) -> None:
    result = load_device_config((ROOT / path).read_text(), source=path)
    assert result.errors == []
    assert result.config is not None
