"""A real Prometheus server for the e2e tests: Debian's `prometheus` binary on 127.0.0.1.

`running_prometheus` writes a scrape configuration for the given targets (1 s scrape and
rule evaluation), starts the server on a free loopback port with its data in a temporary
directory, waits until it is ready and stops it afterwards (SIGTERM, then SIGKILL).
`Prometheus` asks its HTTP API (`/api/v1/query`, `/api/v1/query_range`, `/api/v1/rules`).

`prometheus_binary` finds the binary, or says why the tests cannot run: missing outside
CI is a skip, missing in CI (the Makefile installs it there) a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

JsonDict = dict[str, Any]


def prometheus_binary() -> str:
    """The `prometheus` binary; skips (not in CI) or fails (in CI) when it is missing."""
    found = shutil.which("prometheus")
    if found is not None:
        return found
    reason = "the prometheus binary is not installed (Debian: apt-get install prometheus)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (make prometheus)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusError(Exception):
    pass


class Prometheus:
    """The HTTP API of one running server."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def _get(self, path: str, params: Mapping[str, str]) -> Any:
        async with self._session.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {body.get('error', body)}")
        return body["data"]

    async def query(self, expr: str) -> list[JsonDict]:
        """The series an instant query returns now."""
        data = await self._get("/api/v1/query", {"query": expr})
        result = data["result"]
        return result if isinstance(result, list) else [{"value": result}]

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[JsonDict]:
        data = await self._get(
            "/api/v1/query_range",
            {"query": expr, "start": str(start), "end": str(end), "step": str(step)},
        )
        result: list[JsonDict] = data["result"]
        return result

    async def rules(self) -> list[JsonDict]:
        """Every rule Prometheus evaluates, with its health and (alerts) state."""
        data = await self._get("/api/v1/rules", {})
        return [rule for group in data["groups"] for rule in group["rules"]]

    async def targets_up(self) -> dict[str, bool]:
        """Scrape URL -> whether its last scrape worked."""
        data = await self._get("/api/v1/targets", {})
        return {t["scrapeUrl"]: t["health"] == "up" for t in data["activeTargets"]}


@contextlib.asynccontextmanager
async def running_prometheus(
    directory: Path, targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = ()
) -> AsyncIterator[Prometheus]:
    """A server scraping `targets` (job name -> `host:port`s) every second."""
    binary = prometheus_binary()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in targets.items()
        ],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (directory / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _until_ready(session, url, process, directory / "prometheus.log")
            yield Prometheus(url, session)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def _until_ready(
    session: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process, log: Path
) -> None:
    for _ in range(300):
        if process.returncode is not None:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            raise PrometheusError(f"prometheus exited: {text[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/-/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise PrometheusError("prometheus did not become ready in 30 s")


def draw_chart(series: list[JsonDict], label: str, title: str, path: Path) -> None:
    """A line chart of a range query's answer (one line per series, by `label`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    start = min(float(s["values"][0][0]) for s in series)
    for item in sorted(series, key=lambda s: s["metric"].get(label, "")):
        times = [float(t) - start for t, _ in item["values"]]
        values = [float(v) for _, v in item["values"]]
        axes.step(times, values, where="post", label=item["metric"].get(label, "?"))
    axes.set_title(title)
    axes.set_xlabel("seconds into the test")
    axes.set_ylabel("instances")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
