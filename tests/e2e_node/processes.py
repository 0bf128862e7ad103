"""The agent and the operator as the processes a node runs, and the real kubelet's restart.

Both run `python -m migweaver ...` with the test cluster's kubeconfig, logging to a file
of the test run (printed when a test fails). They bind their probes and metrics to
127.0.0.1 and stop on SIGTERM as the DaemonSet and the Deployment stop them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

STOP_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Component:
    """One `migweaver COMMAND ...` process; `start`, `stop` (SIGTERM) and `restart`."""

    name: str
    args: list[str]
    log_path: Path
    probe_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        with self.log_path.open("ab") as log:
            log.write(f"---- start: migweaver {' '.join(self.args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "migweaver", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> int:
        """SIGTERM and wait; the exit status (SIGKILL and an error after the timeout)."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S}s") from None
        return process.returncode

    def restart(self) -> None:
        assert self.stop() == 0, f"{self.name} did not stop cleanly; log {self.log_path}"
        self.start()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until its `/readyz` answers 200 (the agent: its first sync is done)."""
        url = f"http://127.0.0.1:{self.probe_port}/readyz"
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as session:
            while True:
                assert self.running(), f"{self.name} exited:\n{self.log_tail()}"
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass  # not listening yet
                await asyncio.sleep(0.2)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class NodeKit:
    """The real kubelet node the tier runs on, and the scripts that started it.

    `restart_kubelet` stops only the kubelet process (by its pid file: containerd and the
    pods' containers keep running, as on a node whose kubelet is restarted) and starts it
    again with `up-node.sh`, which returns once the Node is Ready again.
    """

    node: str
    scripts: Path  # the directory of up-node.sh
    state: Path  # the node's state directory (its run/kubelet.pid)

    def kubelet_pid(self) -> int:
        pid = int((self.state / "run" / "kubelet.pid").read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert command.endswith("/kubelet"), f"pid {pid} is {command}, not the node's kubelet"
        return pid

    def restart_kubelet(self) -> None:
        pid = self.kubelet_pid()
        os.kill(pid, signal.SIGTERM)
        _wait_exit(pid, STOP_TIMEOUT_S)
        subprocess.run(
            [str(self.scripts / "up-node.sh"), self.node],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=180,
        )


def _wait_exit(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the kubelet (pid {pid}) did not stop within {timeout_s}s")
