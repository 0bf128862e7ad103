"""Fixtures of the real kubelet tier: tests/e2e's cluster fixtures, plus a real node.

The tier runs only when told where its node is (`make e2e-node` starts everything and
sets these); otherwise every test is skipped with the reason:

- `MIGWEAVER_E2E_KUBECONFIG`: the cluster (as for tests/e2e);
- `MIGWEAVER_E2E_NODE`: the name of a real kubelet node of that cluster, on this host
  (its device plugin directory is this host's `/var/lib/kubelet/device-plugins`);
- `MIGWEAVER_E2E_NODE_KIT`, `MIGWEAVER_E2E_NODE_STATE`: the directory of the node's
  `up-node.sh` and the node's state directory (the kubelet restart test needs them).

The agent (fake backend, two A30 GPUs with MIG on, serving the kubelet's device plugin)
and the operator (standalone, no webhook: pods are created carrying the placement gate,
as the webhook leaves them) run as processes for the whole session; a NodeConfig puts
the node in `mig` mode. The tests share them and leave no pod behind.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from tests.e2e.conftest import KUBECONFIG_ENV, _isolated, kube
from tests.e2e.kube_api import MIGLAYOUTS, NODECONFIGS, NODES, Kube, KubeError, meta
from tests.e2e_node.processes import Component, NodeKit, free_port
from tests.e2e_node.workloads import (
    GPU_MODEL,
    GPUS,
    HAMI_CORE_STAND_IN,
    MIG_NODE_OFFERS,
    layouts_ready,
    node_selector,
)

__all__ = ["_isolated", "kube"]

NODE_ENV = "MIGWEAVER_E2E_NODE"
KIT_ENV = "MIGWEAVER_E2E_NODE_KIT"
STATE_ENV = "MIGWEAVER_E2E_NODE_STATE"
TIER_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    missing = [name for name in (KUBECONFIG_ENV, NODE_ENV) if not os.environ.get(name)]
    skip = pytest.mark.skip(
        reason=f"the real kubelet tier needs {' and '.join(missing)} (run it: make e2e-node)"
    )
    for item in items:
        if TIER_DIR not in Path(str(item.path)).parents:
            continue
        if is_async_test(item):
            item.add_marker(session_loop, append=False)
        if missing:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failing test shows the end of the agent's and the operator's logs."""
    outcome: Any = yield
    report: Any = outcome.get_result()
    if report.failed and TIER_DIR in Path(str(item.path)).parents:
        for component in _COMPONENTS.values():
            report.sections.append((f"{component.name} log", component.log_tail()))


_COMPONENTS: dict[str, Component] = {}


@pytest.fixture(scope="session")
def node_kit() -> NodeKit:
    name = os.environ.get(NODE_ENV, "")
    scripts = Path(os.environ.get(KIT_ENV, "."))
    state = Path(os.environ.get(STATE_ENV, "."))
    return NodeKit(name, scripts, state)


@dataclass
class Cluster:
    """What the tests act on: the API, the node, the agent and the operator."""

    kube: Kube
    kit: NodeKit
    agent: Component
    operator: Component
    fake_state: Path
    """The fake GPUs' state file: their instances and the calls that changed them."""

    @property
    def node(self) -> str:
        return self.kit.node


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster(
    kube: Kube, node_kit: NodeKit, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    node = node_kit.node
    logs = tmp_path_factory.mktemp("logs")
    fake_state = logs / "fake-gpus.json"
    # A stand-in for HAMi-core's libvgpu.so: the tests check it is what containers see.
    hami_core_lib = logs / "libvgpu.so"
    hami_core_lib.write_text(f"{HAMI_CORE_STAND_IN}\n")
    found = await kube.get(NODES, node)
    assert found is not None, f"no Node {node}"
    config_name = kube.name(f"{node}-mig")
    await kube.request(
        "POST",
        NODECONFIGS.path(),
        {
            "apiVersion": "migweaver.io/v1alpha1",
            "kind": "NodeConfig",
            "metadata": {"name": config_name},
            "spec": {"nodeName": node, "operatingMode": "mig"},
        },
    )
    agent_probe, operator_probe = free_port(), free_port()
    agent = Component(
        "agent",
        [
            "agent",
            "--backend=fake",
            f"--fake-gpus={GPU_MODEL}:{GPUS}",
            "--fake-mig-enabled",
            f"--fake-state={fake_state}",
            f"--hami-core-dir={logs / 'vgpu'}",
            f"--hami-core-lib={hami_core_lib}",
            # The kit's containerd (1.6) ignores the CDI devices the kubelet passes on, so
            # the default strategy (CDI names) would start containers with no device to
            # show: here devices travel as NVIDIA_VISIBLE_DEVICES, which the container
            # prints. The CDI answer itself is checked by the device plugin's component
            # tests and the tenant-attack e2e tests.
            "--device-list-strategy=envvar",
            f"--node-name={node}",
            f"--kubeconfig={kube.kubeconfig}",
            "--resync=2",
            "--probe-address=127.0.0.1",
            f"--probe-port={agent_probe}",
        ],
        logs / "agent.log",
        agent_probe,
    )
    operator = Component(
        "operator",
        [
            "operator",
            f"--kubeconfig={kube.kubeconfig}",
            f"--namespace={kube.namespace}",
            "--standalone",
            "--no-webhook",
            "--batch-idle=0.1",
            "--batch-max=0.5",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={free_port()}",
            "--probe-address=127.0.0.1",
            f"--probe-port={operator_probe}",
        ],
        logs / "operator.log",
        operator_probe,
    )
    _COMPONENTS.update(agent=agent, operator=operator)
    try:
        agent.start()
        operator.start()
        await agent.wait_ready()
        await operator.wait_ready()
        await kube.wait_for_list(
            MIGLAYOUTS,
            lambda items: len(items) == GPUS and layouts_ready(items, mig=True),
            label_selector=node_selector(node),
            timeout_s=START_TIMEOUT_S,
        )
        await wait_allocatable(kube, node, lambda found: found == MIG_NODE_OFFERS)
        yield Cluster(kube, node_kit, agent, operator, fake_state)
    finally:
        assert operator.stop() == 0, operator.log_tail()
        assert agent.stop() == 0, agent.log_tail()
        _COMPONENTS.clear()
        for layout in await kube.list(MIGLAYOUTS, label_selector=node_selector(node)):
            await kube.request("DELETE", MIGLAYOUTS.path(name=meta(layout)["name"]))
        try:
            await kube.request("DELETE", NODECONFIGS.path(name=config_name))
        except KubeError as exc:
            if exc.status != 404:
                raise


GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores")


def gpu_allocatable(node: dict[str, Any] | None) -> dict[str, str]:
    """The node's allocatable GPU resources: `nvidia.com/gpu` from the kubelet (the device
    plugin's devices), the others written by the agent."""
    allocatable = ((node or {}).get("status") or {}).get("allocatable") or {}
    return {name: str(allocatable[name]) for name in GPU_RESOURCES if name in allocatable}


async def wait_allocatable(
    kube: Kube, node: str, check: Any, timeout_s: float = START_TIMEOUT_S
) -> dict[str, str]:
    """The node's GPU allocatable once `check(it)` holds."""
    found = await kube.wait_for(
        NODES, node, lambda n: check(gpu_allocatable(n)), timeout_s=timeout_s
    )
    return gpu_allocatable(found)
