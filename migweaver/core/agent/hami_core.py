"""What a hami-core container gets so that HAMi-core's library enforces its limits.

`CUDA_DEVICE_MEMORY_LIMIT_<i>` and `CUDA_DEVICE_SM_LIMIT` mean nothing unless HAMi-core's
`libvgpu.so` is loaded into the container's processes. As HAMi's own device plugin does,
`Allocate` mounts, for every container with a hami-core share:

- `/usr/local/vgpu/libvgpu.so` <- `<dir>/libvgpu.so`, read-only: the library;
- `/etc/ld.so.preload` <- `<dir>/ld.so.preload`, read-only: names the library, so the
  dynamic loader loads it into every process of the container;
- `/usr/local/vgpu` <- `<dir>/containers/<pod uid>_<container>`, read-write: the
  per-container directory holding HAMi-core's shared cache;
- `/tmp/vgpulock` <- `/tmp/vgpulock`, read-write: HAMi-core's lock directory, shared by
  the node's containers;

and sets `CUDA_DEVICE_MEMORY_SHARED_CACHE` to a file in that per-container directory,
which HAMi-core uses to account the container's processes together. `<dir>` is the host
directory the agent DaemonSet installs the library into (`/usr/local/vgpu` by default,
docs/agent.md). Pure: the shell creates the directories and checks the files exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTAINER_DIR",
    "ENV_SHARED_CACHE",
    "LIBRARY",
    "LOCK_DIR",
    "PRELOAD",
    "PRELOAD_CONTENT",
    "Mount",
    "cache_dir",
    "containers_dir",
    "hami_core_env",
    "hami_core_mounts",
]

CONTAINER_DIR: Final = "/usr/local/vgpu"
LIBRARY: Final = "libvgpu.so"
PRELOAD: Final = "ld.so.preload"
PRELOAD_CONTENT: Final = f"{CONTAINER_DIR}/{LIBRARY}\n"
"""The host's `<dir>/ld.so.preload`: the library's path as the container sees it."""
LOCK_DIR: Final = "/tmp/vgpulock"
ENV_SHARED_CACHE: Final = "CUDA_DEVICE_MEMORY_SHARED_CACHE"
_CONTAINERS: Final = "containers"


@dataclass(frozen=True, slots=True)
class Mount:
    """One bind mount of an `Allocate` answer (the device plugin API's `Mount`)."""

    container_path: str
    host_path: str
    read_only: bool


def _entry(pod_uid: str, container: str) -> str:
    # Pod uids and container names are DNS labels: no '/' can escape the directory.
    return f"{pod_uid}_{container}"


def cache_dir(host_dir: str, pod_uid: str, container: str) -> str:
    """The host directory mounted read-write at `/usr/local/vgpu` for one container."""
    return f"{host_dir.rstrip('/')}/{_CONTAINERS}/{_entry(pod_uid, container)}"


def containers_dir(host_dir: str) -> str:
    """The host directory holding every container's cache directory."""
    return f"{host_dir.rstrip('/')}/{_CONTAINERS}"


def hami_core_mounts(
    host_dir: str, pod_uid: str, container: str, *, lock_dir: str = LOCK_DIR
) -> tuple[Mount, ...]:
    """The mounts of one hami-core container (see the module docstring), in mount order:
    the directory before the library mounted inside it. `lock_dir` is the host's lock
    directory (`/tmp/vgpulock`; tests use their own)."""
    base = host_dir.rstrip("/")
    return (
        Mount(CONTAINER_DIR, cache_dir(host_dir, pod_uid, container), read_only=False),
        Mount(f"{CONTAINER_DIR}/{LIBRARY}", f"{base}/{LIBRARY}", read_only=True),
        Mount("/etc/ld.so.preload", f"{base}/{PRELOAD}", read_only=True),
        Mount(LOCK_DIR, lock_dir, read_only=False),
    )


def hami_core_env(pod_uid: str, container: str) -> dict[str, str]:
    """The variables HAMi-core needs besides the limits."""
    return {ENV_SHARED_CACHE: f"{CONTAINER_DIR}/{_entry(pod_uid, container)}.cache"}
