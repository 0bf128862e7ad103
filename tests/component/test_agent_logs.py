"""A failed layout's log line, as the agent writes it in a pod (JSON), selected by node and
GPU with `jq` (the command docs/operations.md shows)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from migweaver import logs
from migweaver.agent.backends.fake import FakeBackend
from migweaver.agent.backends.protocol import NvmlError
from tests.component.test_node_agent import NODE, make_agent

# The command of docs/operations.md, "Logs".
JQ_FILTER = 'select(.node == "n1" and .gpu == 0 and .event == "layout failed")'


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.use_stdlib_defaults()


def jq_select(output: str) -> list[str]:
    """The lines `jq -c JQ_FILTER` selects from `output`."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed: the JSON line was checked, not the jq command")
    done = subprocess.run(
        [jq, "-c", JQ_FILTER], input=output, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


async def test_a_failed_layout_is_one_json_line_with_node_gpu_and_layout(
    capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure("INFO", "json")
    backend = FakeBackend.from_spec("A100-SXM4-80GB:2", seed=NODE)
    agent, layouts, _ = make_agent(backend)
    await agent.sync()
    capfd.readouterr()
    # Both GPUs are lost: the filter must pick GPU 0's line, not GPU 1's.
    backend.fail_call("list_processes", NvmlError.GPU_IS_LOST, times=100)
    await agent.handle(layouts.objects[f"{NODE}-gpu0"])
    await agent.handle(layouts.objects[f"{NODE}-gpu1"])
    output = capfd.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["event"] == "layout failed"]
    assert [(f["node"], f["gpu"], f["layout"], f["reason"]) for f in failed] == [
        (NODE, 0, f"{NODE}-gpu0", "NvmlError"),
        (NODE, 1, f"{NODE}-gpu1", "NvmlError"),
    ]
    assert "GPU_IS_LOST" in failed[0]["detail"]
    selected = jq_select(output)
    assert [json.loads(line)["layout"] for line in selected] == [f"{NODE}-gpu0"]
