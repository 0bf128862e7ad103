"""Pods that really run: the agent as the real kubelet's device plugin, on fake GPUs.

Every scenario checks what the container was given (its printed environment, read from
its log through the kubelet), then what the API says (annotations, MigLayouts, Events).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from migweaver.core.resources.api import ANNOTATION_ALLOCATION, ANNOTATION_BIND_PHASE
from tests.e2e.kube_api import EVENTS, MIGLAYOUTS, NODECONFIGS, PODS, Kube, meta
from tests.e2e_node.conftest import Cluster, wait_allocatable
from tests.e2e_node.workloads import (
    GPUS,
    HAMI_CORE_CACHE,
    HAMI_CORE_STAND_IN,
    MIG_NODE_OFFERS,
    ONE_G_PER_GPU,
    POD_TIMEOUT_S,
    allocation_of,
    busybox_pod,
    container_env,
    container_report,
    layout_instances,
    layouts_ready,
    node_selector,
    visible_devices,
    wait_running,
)

JsonDict = dict[str, Any]
FREED_WITHIN_S = 10.0  # "within seconds": the agent's pod watch, not its resync


async def layouts(cluster: Cluster) -> list[JsonDict]:
    return await cluster.kube.list(MIGLAYOUTS, label_selector=node_selector(cluster.node))


async def wait_instances(
    cluster: Cluster, check: Any, timeout_s: float = FREED_WITHIN_S
) -> dict[str, JsonDict]:
    """MIG UUID -> status instance, once `check(that mapping)` holds."""
    found = await cluster.kube.wait_for_list(
        MIGLAYOUTS,
        lambda items: check(layout_instances(items)),
        label_selector=node_selector(cluster.node),
        timeout_s=timeout_s,
    )
    return layout_instances(found)


def held_by(instances: dict[str, JsonDict], uuids: set[str], pod: str) -> bool:
    """Every instance of `uuids` is in use by `pod` (`namespace/name`)."""
    return all(
        uuid in instances and instances[uuid].get("inUse") and instances[uuid].get("pod") == pod
        for uuid in uuids
    )


async def run_pods(kube: Kube, names: list[str], limits: dict[str, int], mode: str) -> None:
    """Create the pods one after the other, each Running before the next is created.

    Not all at once: two pods that wait on one node for the same number of devices at the
    same time may get each other's devices (Allocate does not say which pod the kubelet
    admits; docs/operations.md, "Testing on a real kubelet"). This tier found that.
    """
    for name in names:
        await kube.create(PODS, busybox_pod(name, limits, mode))
        await wait_running(kube, name)


async def mig_devices_seen(kube: Kube, name: str) -> list[str]:
    devices = visible_devices(await container_env(kube, name))
    assert devices, f"pod {name} sees no device"
    assert all(d.startswith("MIG-") for d in devices), devices
    return devices


# ------------------------------------------------------------------ 4. fill both GPUs
# First: on fresh GPUs (an idle 2g left by another test would take a 1g pod, and the
# eighth pod would find no room).


async def test_eight_1g_pods_fill_both_gpus_and_new_pods_reuse_freed_instances(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    one_g = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}
    names = [f"fill-{i}" for i in range(GPUS * ONE_G_PER_GPU)]
    await run_pods(kube, names, one_g, "mig")

    seen = {name: await mig_devices_seen(kube, name) for name in names}
    assert all(len(devices) == 1 for devices in seen.values()), seen
    uuids = [devices[0] for devices in seen.values()]
    assert len(set(uuids)) == len(uuids), f"a MIG instance in two containers: {seen}"
    for name in names:
        pod = await kube.get(PODS, name)
        assert [d.mig_uuid for d in allocation_of(pod).containers[0].devices] == seen[name]
    instances = await wait_instances(
        cluster,
        lambda found: all(held_by(found, set(seen[n]), f"{kube.namespace}/{n}") for n in names),
    )
    assert all(instances[u]["profile"].startswith("1g.") for u in uuids)

    gone = names[:3]
    freed = {seen[name][0] for name in gone}
    for name in gone:
        await kube.delete(PODS, name)
    await wait_instances(cluster, lambda found: not any(found[u].get("inUse") for u in freed))

    newcomers = [f"refill-{i}" for i in range(len(gone))]
    await run_pods(kube, newcomers, one_g, "mig")
    reused = {(await mig_devices_seen(kube, name))[0] for name in newcomers}
    assert reused == freed
    still = {(await mig_devices_seen(kube, name))[0] for name in names[3:]}
    assert not reused & still


# --------------------------------------------------------------------------- 1. the seed


async def test_the_seed_pod_runs_with_exactly_its_two_mig_instances(cluster: Cluster) -> None:
    kube = cluster.kube
    limits = {"nvidia.com/gpu": 2, "nvidia.com/gpumem": 8000}
    await kube.create(PODS, busybox_pod("gpu-pod", limits, "mig", container="ubuntu-container"))
    pod = await wait_running(kube, "gpu-pod")

    env, files = await container_report(kube, "gpu-pod", "ubuntu-container")
    assert files == {}, "HAMi-core is for hami-core containers only"
    seen = visible_devices(env)
    (container,) = allocation_of(pod).containers
    allocated = {d.mig_uuid or "": d for d in container.devices}
    assert sorted(seen) == sorted(allocated), (env, allocated)
    assert len(set(seen)) == 2
    assert all(allocated[uuid].memory_mib >= 8000 for uuid in seen)
    assert pod["spec"]["nodeName"] == cluster.node
    assert meta(pod)["annotations"][ANNOTATION_BIND_PHASE] == "success"

    instances = await wait_instances(
        cluster, lambda found: held_by(found, set(seen), f"{kube.namespace}/gpu-pod")
    )
    for uuid in seen:
        assert instances[uuid]["profile"] == allocated[uuid].profile


# ------------------------------------------------------------------ 6. deletion frees


async def test_deleting_a_pod_frees_its_instances_in_the_layout_within_seconds(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    await run_pods(kube, ["short-lived"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    (uuid,) = await mig_devices_seen(kube, "short-lived")
    await wait_instances(
        cluster, lambda found: held_by(found, {uuid}, f"{kube.namespace}/short-lived")
    )

    await kube.delete(PODS, "short-lived")

    instances = await wait_instances(
        cluster, lambda found: uuid in found and not found[uuid].get("inUse")
    )
    assert not instances[uuid].get("pod")


# ------------------------------------------------------- 3. no allocation: refused


async def test_a_gpu_pod_without_an_allocation_fails_at_the_kubelet_and_others_still_run(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    # What a pod looks like after an administrator removed its gate with the webhook
    # off: it asks for nvidia.com/gpu, kube-scheduler binds it, migweaver never placed it.
    rogue = busybox_pod("ungated", {"nvidia.com/gpu": 1}, "mig", gated=False)
    rogue["spec"]["nodeSelector"] = {"kubernetes.io/hostname": cluster.node}
    created = await kube.create(PODS, rogue)

    failed = await kube.wait_for(
        PODS,
        "ungated",
        lambda p: (p or {}).get("status", {}).get("phase") == "Failed",
        timeout_s=POD_TIMEOUT_S,
    )
    assert failed is not None
    status = failed["status"]
    assert status["reason"] == "UnexpectedAdmissionError", status
    assert "Allocate failed" in status["message"]
    assert "no pod on node" in status["message"], status["message"]
    assert not (status.get("containerStatuses") or [{}])[0].get("state", {}).get("running")
    assert ANNOTATION_ALLOCATION not in (meta(failed).get("annotations") or {})
    events = await kube.wait_for_list(
        EVENTS,
        lambda items: any(e["reason"] == "UnexpectedAdmissionError" for e in items),
        field_selector=f"involvedObject.uid={meta(created)['uid']}",
        timeout_s=POD_TIMEOUT_S,
    )
    event = next(e for e in events if e["reason"] == "UnexpectedAdmissionError")
    assert "no pod on node" in event["message"]
    for found in events:
        kube.track(EVENTS, meta(found)["name"])

    # The agent serves the next pod as before.
    await run_pods(kube, ["after-rogue"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    (uuid,) = await mig_devices_seen(kube, "after-rogue")
    pod = await kube.get(PODS, "after-rogue")
    assert [d.mig_uuid for d in allocation_of(pod).containers[0].devices] == [uuid]


# ------------------------------------------------------------- a forged allocation


async def test_a_pod_forging_another_pods_allocation_never_starts_with_its_device(
    cluster: Cluster,
) -> None:
    """A tenant copies a running pod's `migweaver.io/allocation` onto a pod of its own
    (bind-phase `allocating`, no gate, the node named): the kubelet admits it and calls
    Allocate, which must refuse it. The admission policies that refuse such a pod at
    creation are not installed on this tier, so this is the device plugin's own defence:
    the copied allocation names the victim's UID, not the forger's, and holds nothing."""
    kube = cluster.kube
    await run_pods(kube, ["victim"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    (uuid,) = await mig_devices_seen(kube, "victim")
    victim = await kube.get(PODS, "victim")
    forged = busybox_pod("forger", {"nvidia.com/gpu": 1}, "mig", gated=False)
    forged["metadata"]["annotations"].update(
        {
            ANNOTATION_ALLOCATION: meta(victim)["annotations"][ANNOTATION_ALLOCATION],
            ANNOTATION_BIND_PHASE: "allocating",
        }
    )
    forged["spec"]["nodeSelector"] = {"kubernetes.io/hostname": cluster.node}
    created = await kube.create(PODS, forged)

    failed = await kube.wait_for(
        PODS,
        "forger",
        lambda p: (p or {}).get("status", {}).get("phase") == "Failed",
        timeout_s=POD_TIMEOUT_S,
    )
    assert failed is not None
    status = failed["status"]
    assert status["reason"] == "UnexpectedAdmissionError", status
    assert f"podUID: names {meta(victim)['uid']}, not this pod" in status["message"]
    assert "not written by the operator for this pod" in status["message"]
    assert not any(
        "running" in (s.get("state") or {}) for s in status.get("containerStatuses") or []
    )
    # Allocate could not tell the forger's call from any pod's (its allocation holds
    # nothing), so the agent wrote nothing on it: the kubelet's Event says why it failed.
    assert meta(failed)["annotations"][ANNOTATION_BIND_PHASE] == "allocating"
    events = await kube.wait_for_list(
        EVENTS,
        lambda items: "UnexpectedAdmissionError" in {e["reason"] for e in items},
        field_selector=f"involvedObject.uid={meta(created)['uid']}",
        timeout_s=POD_TIMEOUT_S,
    )
    for event in events:
        kube.track(EVENTS, meta(event)["name"])

    # The victim keeps its instance, alone.
    assert await mig_devices_seen(kube, "victim") == [uuid]
    await wait_instances(cluster, lambda found: held_by(found, {uuid}, f"{kube.namespace}/victim"))


# ------------------------------------------------------------------ 2. hami-core


async def test_a_hami_core_pod_sees_its_gpu_and_its_memory_and_core_limits(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    config = kube.name(f"{cluster.node}-mig")
    await kube.patch(NODECONFIGS, config, {"spec": {"operatingMode": "hami-core"}})
    try:
        await kube.wait_for_list(
            MIGLAYOUTS,
            lambda items: len(items) == GPUS and layouts_ready(items, mig=False),
            label_selector=node_selector(cluster.node),
            timeout_s=POD_TIMEOUT_S,
        )
        limits = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 3000, "nvidia.com/gpucores": 30}
        await run_pods(kube, ["shared"], limits, "hami-core")

        env, files = await container_report(kube, "shared")
        pod = await kube.get(PODS, "shared")
        (device,) = allocation_of(pod).containers[0].devices
        assert device.mode == "hami-core"
        assert visible_devices(env) == [device.gpu_uuid]
        assert device.gpu_uuid.startswith("GPU-")
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
        assert env["CUDA_DEVICE_SM_LIMIT"] == "30"
        # HAMi-core's library, preloaded into every process, and its cache directory.
        assert files == {
            "/etc/ld.so.preload": "/usr/local/vgpu/libvgpu.so",
            "/usr/local/vgpu/libvgpu.so": HAMI_CORE_STAND_IN,
            HAMI_CORE_CACHE: "writable",
        }
        assert env["CUDA_DEVICE_MEMORY_SHARED_CACHE"].startswith(f"{HAMI_CORE_CACHE}/")
        gpu_uuids = {layout["spec"]["gpuUUID"] for layout in await layouts(cluster)}
        assert device.gpu_uuid in gpu_uuids
    finally:
        await kube.cleanup()  # the pod first: a GPU in use keeps its mode
        await kube.patch(NODECONFIGS, config, {"spec": {"operatingMode": "mig"}})
        await kube.wait_for_list(
            MIGLAYOUTS,
            lambda items: len(items) == GPUS and layouts_ready(items, mig=True),
            label_selector=node_selector(cluster.node),
            timeout_s=POD_TIMEOUT_S,
        )
        await wait_allocatable(kube, cluster.node, lambda found: found == MIG_NODE_OFFERS)


# ------------------------------------------------------------------ 5. restarts


async def test_after_a_kubelet_restart_the_agent_registers_again_and_pods_keep_devices(
    cluster: Cluster,
) -> None:
    kube = cluster.kube
    await run_pods(kube, ["survivor"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    before = await wait_running(kube, "survivor")
    (uuid,) = await mig_devices_seen(kube, "survivor")
    container_id = before["status"]["containerStatuses"][0]["containerID"]
    await wait_allocatable(kube, cluster.node, lambda found: found == MIG_NODE_OFFERS)

    await asyncio.to_thread(cluster.kit.restart_kubelet)

    # The kubelet wiped the device plugin directory: the agent must register again for
    # the node to offer nvidia.com/gpu at all.
    await wait_allocatable(kube, cluster.node, lambda found: found == MIG_NODE_OFFERS)
    after = await wait_running(kube, "survivor")
    status = after["status"]["containerStatuses"][0]
    assert status["containerID"] == container_id
    assert status["restartCount"] == 0
    assert await mig_devices_seen(kube, "survivor") == [uuid]
    await wait_instances(
        cluster, lambda found: held_by(found, {uuid}, f"{kube.namespace}/survivor")
    )

    # A new pod is admitted through the re-registered plugin.
    await run_pods(kube, ["newcomer"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    (fresh,) = await mig_devices_seen(kube, "newcomer")
    assert fresh != uuid


async def test_an_agent_restart_destroys_nothing_in_use(cluster: Cluster) -> None:
    kube = cluster.kube
    names = ["steady-0", "steady-1"]
    await run_pods(kube, names, {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    held = {name: (await mig_devices_seen(kube, name))[0] for name in names}
    instances = await wait_instances(
        cluster,
        lambda found: all(held_by(found, {u}, f"{kube.namespace}/{n}") for n, u in held.items()),
    )
    history_before = len(json.loads(cluster.fake_state.read_text())["history"])
    in_use = {(instances[u]["gpuIndex"], instances[u]["gpuInstanceId"]) for u in held.values()}
    await wait_allocatable(kube, cluster.node, lambda found: found == MIG_NODE_OFFERS)

    await asyncio.to_thread(cluster.agent.restart)
    await cluster.agent.wait_ready()
    # A clean stop takes the agent's resources off the node; the new agent puts them back.
    await wait_allocatable(kube, cluster.node, lambda found: found == MIG_NODE_OFFERS)

    for name, uuid in held.items():
        pod = await wait_running(kube, name)
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        assert await mig_devices_seen(kube, name) == [uuid]
    after = await wait_instances(
        cluster,
        lambda found: all(held_by(found, {u}, f"{kube.namespace}/{n}") for n, u in held.items()),
    )
    for uuid in held.values():
        assert after[uuid]["gpuInstanceId"] == instances[uuid]["gpuInstanceId"]
    calls = json.loads(cluster.fake_state.read_text())["history"][history_before:]
    destroyed = {
        (c["args"][0], c["args"][1])
        for c in calls
        if c["call"] in ("destroy_gpu_instance", "destroy_compute_instance")
    }
    assert not destroyed & in_use, calls

    # The new agent serves the kubelet: a new pod gets a device of its own.
    await run_pods(kube, ["after-restart"], {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 5000}, "mig")
    (fresh,) = await mig_devices_seen(kube, "after-restart")
    assert fresh not in held.values()
