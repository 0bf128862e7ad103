"""A real Kubernetes control plane for `make bench`, when the workspace has one.

The benchmark runs against any cluster (`bench_operator --kubeconfig FILE`). For the
report, `make bench` looks for the test kit's control-plane scripts (`up.sh`, `down.sh`)
in the directory `K8S_KIT` names (the Makefile's default: the kit beside the repository,
as for `make e2e-node`, docs/operations.md) and, when they are there, starts a control
plane of its own in a temporary state directory on free loopback ports, and stops it
afterwards. Without them, the report has the emulator's figures only.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

PORTS = 5
"""Ports the control plane takes from its base: apiserver, etcd (2), scheduler, manager."""


def scripts() -> Path | None:
    """The directory holding `up.sh` and `down.sh`, or None."""
    named = os.environ.get("K8S_KIT")
    if not named:
        return None
    found = Path(named)
    return found if (found / "up.sh").is_file() and (found / "down.sh").is_file() else None


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(rng: random.Random | None = None, tries: int = 50) -> int:
    """The first of `PORTS` consecutive free loopback ports."""
    rng = rng or random.Random()
    for _ in range(tries):
        base = rng.randrange(20_000, 60_000)
        if all(_free(base + n) for n in range(PORTS)):
            return base
    raise RuntimeError("no free loopback ports for a control plane")


@contextlib.contextmanager
def control_plane(timeout_s: float = 600) -> Iterator[Path | None]:
    """The kubeconfig of a control plane started for this run (stopped on exit), or None
    when there are no scripts to start one."""
    found = scripts()
    if found is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="migweaver-bench-k8s-") as state:
        env = {**os.environ, "K8S_STATE": state, "K8S_PORT_BASE": str(free_port_base())}
        try:
            started = subprocess.run(
                [str(found / "up.sh")],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=timeout_s,
            )
            yield Path(started.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(
                [str(found / "down.sh")], check=False, env=env, capture_output=True, timeout=120
            )
