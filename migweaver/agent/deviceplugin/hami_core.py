"""HAMi-core on the host: installing the library, checking it, and per-container directories.

The agent sees the host directory at the same path (a hostPath mount in the DaemonSet),
so the paths it checks and creates are the paths `Allocate` hands the kubelet. What the
container gets is decided in `migweaver.core.agent.hami_core`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

from migweaver.core.agent.binding import HamiCoreSetup
from migweaver.core.agent.hami_core import (
    LIBRARY,
    LOCK_DIR,
    PRELOAD,
    PRELOAD_CONTENT,
    cache_dir,
    containers_dir,
)
from migweaver.logs import get_logger

__all__ = ["DEFAULT_HAMI_CORE_DIR", "HamiCoreHost"]

log = get_logger("migweaver.agent.hami_core")

DEFAULT_HAMI_CORE_DIR = "/usr/local/vgpu"
"""Where HAMi's own device plugin puts the library on the host (`HOOK_PATH/vgpu`)."""


class HamiCoreHost:
    """HAMi-core's files under `host_dir` (and the lock directory) on this node."""

    def __init__(self, host_dir: str, *, lock_dir: str = LOCK_DIR) -> None:
        self.setup = HamiCoreSetup(host_dir.rstrip("/") or "/", lock_dir)
        self._dir = Path(self.setup.host_dir)

    @property
    def library(self) -> Path:
        return self._dir / LIBRARY

    def install(self, source: str | os.PathLike[str]) -> None:
        """Copy the library from the image (`source`) into the host directory and write
        `ld.so.preload`; each file replaced atomically, so a container starting meanwhile
        never maps half a library. Raises OSError."""
        self._dir.mkdir(parents=True, exist_ok=True)
        src = Path(source)
        if not self.library.exists() or self.library.read_bytes() != src.read_bytes():
            self._replace(self.library, lambda out: out.write(src.read_bytes()))
            log.info("installed HAMi-core", library=str(self.library), source=str(src))
        self.ensure_preload()

    def ensure_preload(self) -> None:
        """`<dir>/ld.so.preload` naming the library as containers see it."""
        preload = self._dir / PRELOAD
        if not preload.exists() or preload.read_text() != PRELOAD_CONTENT:
            self._replace(preload, lambda out: out.write(PRELOAD_CONTENT.encode()))

    def problem(self) -> str | None:
        """Why limits could not be enforced now (the library or the preload file is
        missing), or None."""
        missing = [p for p in (self.library, self._dir / PRELOAD) if not p.is_file()]
        if missing:
            return (
                f"HAMi-core is not installed on this node ({', '.join(map(str, missing))} "
                "missing): hami-core limits cannot be enforced"
            )
        return None

    def prepare(self, pod_uid: str, container: str) -> None:
        """A fresh, world-writable cache directory for the container (its processes run
        as whatever user the image says), and the shared lock directory. Raises OSError."""
        directory = Path(cache_dir(self.setup.host_dir, pod_uid, container))
        shutil.rmtree(directory, ignore_errors=True)
        for path in (directory, Path(self.setup.lock_dir)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)

    def prune(self, live_pod_uids: Collection[str]) -> None:
        """Remove the cache directories of pods that no longer exist on the node."""
        root = Path(containers_dir(self.setup.host_dir))
        if not root.is_dir():
            return
        for entry in root.iterdir():
            uid = entry.name.partition("_")[0]
            if uid not in live_pod_uids:
                shutil.rmtree(entry, ignore_errors=True)

    def _replace(self, target: Path, write: Callable[[BinaryIO], object]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
