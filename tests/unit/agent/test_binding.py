"""The pure Allocate decision: which pod and container, which checks, which environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from migweaver.core.agent.binding import (
    BindError,
    BindErrorCode,
    ContainerGrant,
    ContainerMatch,
    Mount,
    ObservedGpu,
    ObservedInstance,
    container_env,
    decide,
    gpu_containers,
    match_container,
)
from migweaver.core.mig.profiles import Placement
from migweaver.core.resources.allocation import AllocatedDevice
from migweaver.core.resources.api import (
    ANNOTATION_ALLOCATION,
    ANNOTATION_BIND_PHASE,
    ANNOTATION_BIND_TIME,
)
from tests import builders

NODE = "n1"
GPU = "GPU-aaaa"


def mig(uuid: str, start: int, size: int = 1, profile: str = "1g.10gb") -> dict[str, Any]:
    return {
        "gpuUUID": GPU,
        "gpuIndex": 0,
        "mode": "mig",
        "profile": profile,
        "placement": {"start": start, "size": size},
        "migUUID": uuid,
        "memoryMiB": 9728,
        "cores": 14,
    }


def share(gpu: str = "GPU-bbbb", memory: int = 8000, cores: int = 30) -> dict[str, Any]:
    return {"gpuUUID": gpu, "gpuIndex": 1, "mode": "hami-core", "memoryMiB": memory, "cores": cores}


def pod(
    name: str,
    containers: dict[str, list[dict[str, Any]]],
    *,
    counts: dict[str, int] | None = None,
    phase: str = "allocating",
    bind_time: str | None = "1000",
    node: str = NODE,
    created: str = "2026-01-01T00:00:00Z",
    status: dict[str, Any] | None = None,
    **extra_meta: Any,
) -> dict[str, Any]:
    counts = counts or {c: len(d) for c, d in containers.items()}
    annotations = {
        ANNOTATION_BIND_PHASE: phase,
        ANNOTATION_ALLOCATION: json.dumps(
            {
                "node": node,
                "podUID": f"uid-{name}",
                "containers": [{"name": c, "devices": d} for c, d in containers.items()],
            }
        ),
    }
    if bind_time is not None:
        annotations[ANNOTATION_BIND_TIME] = bind_time
    meta = builders.metadata(
        name, "ns", uid=f"uid-{name}", annotations=annotations, created=created
    )
    return builders.pod(
        meta={**meta, **extra_meta},
        node_name=NODE,
        containers=[
            builders.container(c, limits=builders.gpu_limits(str(n))) for c, n in counts.items()
        ],
        status=status or {"phase": "Pending"},
    )


def gpu(*instances: tuple[str, int, int], mig_enabled: bool = True) -> dict[str, ObservedGpu]:
    return {
        GPU: ObservedGpu(
            uuid=GPU,
            index=0,
            mig_enabled=mig_enabled,
            instances=tuple(
                ObservedInstance(u, "1g.10gb", Placement(start, size))
                for u, start, size in instances
            ),
        ),
        "GPU-bbbb": ObservedGpu(uuid="GPU-bbbb", index=1, mig_enabled=False),
    }


GPUS = gpu(("MIG-1", 0, 1), ("MIG-2", 1, 1), ("MIG-3", 2, 1))


def error_of(result: object) -> BindError:
    assert isinstance(result, BindError), result
    return result


# ------------------------------------------------------------------------------ match


def test_gpu_containers_read_limits_then_requests_in_spec_order() -> None:
    manifest = {
        "spec": {
            "containers": [
                {"name": "a", "resources": {"limits": {"nvidia.com/gpu": 2}}},
                {"name": "none"},
                {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1"}}},
                {"name": "zero", "resources": {"limits": {"nvidia.com/gpu": 0}}},
                {"name": "bad", "resources": {"limits": {"nvidia.com/gpu": "x"}}},
            ]
        }
    }
    assert gpu_containers(manifest) == [("a", 2), ("b", 1)]
    assert gpu_containers({"spec": "nonsense"}) == []


def test_the_count_must_match_the_next_container() -> None:
    pods = [
        pod("one", {"main": [mig("MIG-1", 0)]}),
        pod("two", {"main": [mig("MIG-2", 1), mig("MIG-3", 2)]}),
    ]
    match = match_container(pods, node=NODE, device_count=2)
    assert isinstance(match, ContainerMatch)
    assert (match.pod.key, match.container, match.remaining) == ("ns/two", "main", ())


def scheduled(at: str) -> dict[str, Any]:
    """The scheduler's condition on a bound pod (pods/status: no tenant writes it)."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}],
    }


def test_the_first_bound_pod_wins_then_creation_then_uid() -> None:
    pods = [
        pod("late", {"main": [mig("MIG-1", 0)]}, status=scheduled("2026-01-01T00:00:09Z")),
        pod("early", {"main": [mig("MIG-2", 1)]}, status=scheduled("2026-01-01T00:00:05Z")),
        pod("unbound", {"main": [mig("MIG-3", 2)]}, created="2026-01-01T00:00:07Z"),
    ]
    first = match_container(pods, node=NODE, device_count=1)
    assert isinstance(first, ContainerMatch)
    assert first.pod.key == "ns/early"
    second = match_container(pods[::2], node=NODE, device_count=1)
    assert isinstance(second, ContainerMatch)
    assert second.pod.key == "ns/unbound"  # created 00:07, before the other was bound


def test_a_forged_bind_time_does_not_jump_the_queue() -> None:
    # migweaver.io/bind-time is an annotation: a tenant may write it. It decides nothing.
    honest = pod("honest", {"main": [mig("MIG-1", 0)]}, created="2026-01-01T00:00:01Z")
    forger = pod(
        "forger", {"main": [mig("MIG-2", 1)]}, bind_time="0", created="2026-01-01T00:00:02Z"
    )
    match = match_container([forger, honest], node=NODE, device_count=1)
    assert isinstance(match, ContainerMatch)
    assert match.pod.key == "ns/honest"


def test_only_waiting_pods_are_candidates() -> None:
    done = pod("done", {"main": [mig("MIG-1", 0)]}, phase="success")
    failed = pod("failed", {"main": [mig("MIG-1", 0)]}, phase="failed")
    deleting = pod(
        "deleting", {"main": [mig("MIG-1", 0)]}, deletionTimestamp="2026-01-01T00:00:00Z"
    )
    ended = pod("ended", {"main": [mig("MIG-1", 0)]})
    ended["status"]["phase"] = "Failed"
    error = error_of(match_container([done, failed, deleting, ended], node=NODE, device_count=1))
    assert error.code is BindErrorCode.NOT_FOUND
    assert error.pod is None
    assert "no pod is waiting" in error.message


def test_progress_moves_on_to_the_next_container() -> None:
    two = pod("two", {"first": [mig("MIG-1", 0)], "second": [mig("MIG-2", 1), mig("MIG-3", 2)]})
    first = match_container([two], node=NODE, device_count=1)
    assert isinstance(first, ContainerMatch)
    assert (first.container, first.remaining) == ("first", ("second",))
    # Before "first" is answered, a request for 2 matches no pod: kubelet goes in order.
    assert isinstance(match_container([two], node=NODE, device_count=2), BindError)
    second = match_container(
        [two], node=NODE, device_count=2, progress={"uid-two": frozenset({"first"})}
    )
    assert isinstance(second, ContainerMatch)
    assert (second.container, second.remaining) == ("second", ())


def test_no_match_lists_what_waits() -> None:
    error = error_of(
        match_container([pod("one", {"main": [mig("MIG-1", 0)]})], node=NODE, device_count=3)
    )
    assert error.message == (
        "no pod on node n1 with migweaver.io/bind-phase=allocating waits for 3 nvidia.com/gpu "
        "in its next container; waiting: ns/one (container main asks 1)"
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["metadata"]["annotations"].update({ANNOTATION_ALLOCATION: "{"}), "not JSON"),
        (lambda p: p["metadata"]["annotations"].pop(ANNOTATION_ALLOCATION), "missing"),
        (
            lambda p: p["metadata"]["annotations"].update(
                {
                    ANNOTATION_ALLOCATION: json.dumps(
                        {"node": "n2", "podUID": "uid-p", "containers": []}
                    )
                }
            ),
            "is for node n2, but the pod runs on n1",
        ),
        (
            lambda p: p["spec"]["containers"][0].update({"name": "renamed"}),
            "has no devices for container renamed",
        ),
        (
            lambda p: p["spec"]["containers"][0]["resources"]["limits"].update(
                {"nvidia.com/gpu": "2"}
            ),
            "lists 1 devices, the container asks 2",
        ),
    ],
    ids=[
        "allocation-not-json",
        "allocation-missing",
        "allocation-for-another-node",
        "container-renamed",
        "more-devices-asked-than-listed",
    ],
)
def test_a_matched_pod_with_an_unusable_allocation_is_that_pods_error(
    mutate: Any, expected: str
) -> None:
    manifest = pod("p", {"main": [mig("MIG-1", 0)]})
    mutate(manifest)
    count = 2 if "asks 2" in expected else 1
    error = error_of(match_container([manifest], node=NODE, device_count=count))
    assert error.code is BindErrorCode.FAILED_PRECONDITION
    assert error.pod is not None
    assert error.pod.key == "ns/p"
    assert expected in error.message
    assert "ns/p" in error.message


# ------------------------------------------------------------------------------ verify


def test_decide_grants_existing_free_instances() -> None:
    result = decide(
        [pod("p", {"main": [mig("MIG-1", 0), mig("MIG-3", 2)]})],
        node=NODE,
        device_count=2,
        gpus=GPUS,
    )
    assert isinstance(result, ContainerGrant)
    assert result.envs == {}
    assert result.cdi_devices == ("nvidia.com/gpu=MIG-1", "nvidia.com/gpu=MIG-3")
    assert result.last


@pytest.mark.parametrize(
    ("devices", "gpus", "code", "expected"),
    [
        (
            [mig("MIG-9", 0)],
            GPUS,
            BindErrorCode.NOT_FOUND,
            "MIG-9 (1g.10gb at 0:1) on GPU GPU-aaaa: no longer exists",
        ),
        ([mig("MIG-1", 4)], GPUS, BindErrorCode.NOT_FOUND, "that UUID is now a 1g.10gb at 0:1"),
        (
            [mig("MIG-1", 0)],
            gpu(("MIG-1", 0, 1), mig_enabled=False),
            BindErrorCode.NOT_FOUND,
            "not in MIG mode",
        ),
        (
            [mig("MIG-1", 0) | {"gpuUUID": "GPU-zzzz"}],
            GPUS,
            BindErrorCode.NOT_FOUND,
            "not one this agent manages",
        ),
        (
            [mig("MIG-1", 0), mig("MIG-1", 0)],
            GPUS,
            BindErrorCode.FAILED_PRECONDITION,
            "listed twice",
        ),
        (
            [mig("MIG-1", 0), share()],
            GPUS,
            BindErrorCode.FAILED_PRECONDITION,
            "mixes mig and hami-core",
        ),
        ([share(GPU)], GPUS, BindErrorCode.FAILED_PRECONDITION, "in MIG mode, not hami-core"),
    ],
    ids=[
        "instance-gone",
        "uuid-now-elsewhere",
        "gpu-not-in-mig-mode",
        "gpu-not-managed",
        "device-listed-twice",
        "mig-mixed-with-hami-core",
        "share-on-a-mig-gpu",
    ],
)
def test_devices_that_are_not_as_allocated_are_refused(
    devices: list[dict[str, Any]], gpus: dict[str, ObservedGpu], code: BindErrorCode, expected: str
) -> None:
    error = error_of(
        decide([pod("p", {"main": devices})], node=NODE, device_count=len(devices), gpus=gpus)
    )
    assert error.code is code
    assert expected in error.message
    assert error.message.startswith("pod ns/p container main")
    assert error.pod is not None


def test_an_instance_another_pod_got_is_refused() -> None:
    owner = pod("owner", {"main": [mig("MIG-2", 1)]}, phase="success")
    waiting_too = pod("also-waiting", {"main": [mig("MIG-1", 0)]}, created="2026-01-02T00:00:00Z")
    wanting = pod("p", {"main": [mig("MIG-2", 1)]})
    error = error_of(decide([owner, waiting_too, wanting], node=NODE, device_count=1, gpus=GPUS))
    assert error.code is BindErrorCode.FAILED_PRECONDITION
    assert "already allocated to pod ns/owner" in error.message
    assert error.device == "MIG-2"
    # A pod released with the same instance (bind-phase allocating) holds it too: two pods
    # named one instance only through a bug or a forgery, and neither takes it.
    error = error_of(
        decide(
            [waiting_too, pod("q", {"main": [mig("MIG-1", 0)]}, created="2020-01-01T00:00:00Z")],
            node=NODE,
            device_count=1,
            gpus=GPUS,
        )
    )
    assert "MIG-1" in error.message
    assert "already allocated to pod ns/also-waiting" in error.message
    # Nor does an owner that has ended.
    owner["status"]["phase"] = "Succeeded"
    assert isinstance(
        decide([owner, wanting], node=NODE, device_count=1, gpus=GPUS), ContainerGrant
    )


def test_an_instance_with_a_process_of_no_pod_is_refused() -> None:
    busy = {
        GPU: ObservedGpu(
            GPU, 0, True, (ObservedInstance("MIG-1", "1g.10gb", Placement(0, 1), (4242,)),)
        )
    }
    error = error_of(
        decide([pod("p", {"main": [mig("MIG-1", 0)]})], node=NODE, device_count=1, gpus=busy)
    )
    assert "in use by process 4242 of no pod" in error.message


# ---------------------------------------------------------------------------- answer


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        pytest.param(
            "cdi", ({}, ("nvidia.com/gpu=MIG-1", "nvidia.com/gpu=MIG-2"), ()), id="cdi-default"
        ),
        pytest.param(
            "volume-mounts",
            (
                {"NVIDIA_VISIBLE_DEVICES": "/var/run/nvidia-container-devices"},
                (),
                (
                    Mount("/var/run/nvidia-container-devices/MIG-1", "/dev/null", read_only=True),
                    Mount("/var/run/nvidia-container-devices/MIG-2", "/dev/null", read_only=True),
                ),
            ),
            id="volume-mounts",
        ),
        pytest.param("envvar", ({"NVIDIA_VISIBLE_DEVICES": "MIG-1,MIG-2"}, (), ()), id="envvar"),
    ],
)
def test_mig_devices_by_each_strategy(strategy: Any, expected: Any) -> None:
    devices = [AllocatedDevice.model_validate(mig(u, i)) for i, u in enumerate(["MIG-1", "MIG-2"])]
    assert container_env(devices, strategy) == expected
    if strategy == "cdi":
        assert container_env(devices) == expected  # the default


def test_hami_core_environment_has_hami_cores_variables() -> None:
    devices = [
        AllocatedDevice.model_validate(share("GPU-1", 8000, 30)),
        AllocatedDevice.model_validate(share("GPU-2", 4000, 30)),
    ]
    assert container_env(devices) == (
        {
            "CUDA_DEVICE_MEMORY_LIMIT_0": "8000m",
            "CUDA_DEVICE_MEMORY_LIMIT_1": "4000m",
            "CUDA_DEVICE_SM_LIMIT": "30",
        },
        ("nvidia.com/gpu=GPU-1", "nvidia.com/gpu=GPU-2"),
        (),
    )
    uneven = [
        AllocatedDevice.model_validate(share("GPU-1", 0, 0)),
        AllocatedDevice.model_validate(share("GPU-2", 100, 50)),
    ]
    envs, _, _ = container_env(uneven, "envvar")
    assert envs == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-1,GPU-2",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "100m",
        "CUDA_DEVICE_SM_LIMIT": "0",
        "CUDA_DEVICE_SM_LIMIT_1": "50",
    }


# ------------------------------------------------------------------- bound to their pod


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param(
            lambda p: p["metadata"].update(uid="uid-someone-else"),
            "names uid-p, not this pod (uid-someone-else)",
            id="allocation-written-for-another-pod",
        ),
        pytest.param(
            lambda p: p["metadata"]["annotations"].update(
                {ANNOTATION_ALLOCATION: json.dumps({"node": NODE, "containers": []})}
            ),
            "names no pod",
            id="allocation-without-pod-uid",
        ),
    ],
)
def test_an_allocation_not_bound_to_its_pod_is_never_served(change: Any, why: str) -> None:
    forged = pod("p", {"main": [mig("MIG-1", 0)]})
    change(forged)
    error = error_of(decide([forged], node=NODE, device_count=1, gpus=GPUS))
    assert error.code is BindErrorCode.NOT_FOUND
    assert error.pod is None  # no pod matched: nothing is written on the forged pod
    assert why in error.message


def test_a_forged_pod_never_stands_in_for_the_pod_being_admitted() -> None:
    # Older, same count, but its allocation names another UID: the honest pod is matched.
    forged = pod("aaa", {"main": [mig("MIG-2", 1)]}, created="2020-01-01T00:00:00Z")
    forged["metadata"]["uid"] = "uid-stolen"
    honest = pod("honest", {"main": [mig("MIG-1", 0)]})
    grant = decide([forged, honest], node=NODE, device_count=1, gpus=GPUS)
    assert isinstance(grant, ContainerGrant)
    assert grant.match.pod.key == "ns/honest"
    assert [d.mig_uuid for d in grant.devices] == ["MIG-1"]


def test_a_forged_holder_does_not_block_the_owner() -> None:
    # A pod that copied another's allocation (bind-phase success) holds nothing.
    squatter = pod("squatter", {"main": [mig("MIG-1", 0)]}, phase="success")
    squatter["metadata"]["uid"] = "uid-squatter-real"
    owner = pod("owner", {"main": [mig("MIG-1", 0)]})
    assert isinstance(
        decide([squatter, owner], node=NODE, device_count=1, gpus=GPUS), ContainerGrant
    )
