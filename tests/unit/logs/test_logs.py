"""Log lines carry fields a `jq` filter selects on, and read as sentences on a console."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from migweaver import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.use_stdlib_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_the_fields(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logs.get_logger("migweaver.agent").warning(
        "layout failed", node="gpu-1", gpu=0, layout="gpu-1-gpu0", reason="GpuNotFound"
    )
    (line,) = lines(capfd.readouterr().err)
    assert line["event"] == "layout failed"
    assert (line["node"], line["gpu"], line["layout"]) == ("gpu-1", 0, "gpu-1-gpu0")
    assert line["level"] == "warning"


def test_console_lines_show_message_and_fields(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "console")
    logs.get_logger("migweaver.agent").info("layout applied", node="gpu-1", gpu=0)
    err = capfd.readouterr().err
    assert "layout applied" in err
    assert "node=gpu-1" in err
    assert "gpu=0" in err


@pytest.mark.parametrize(
    ("message", "level", "shown"),
    [
        pytest.param(
            "Handler 'migweaver-pods' succeeded.", "INFO", False, id="handler-success-hidden"
        ),
        pytest.param("Handler 'migweaver-pods' succeeded.", "DEBUG", True, id="shown-at-debug"),
        pytest.param(
            "Creation is processed: 1 succeeded; 0 failed.", "INFO", False, id="processed"
        ),
        pytest.param("Handler 'x' failed temporarily: boom", "INFO", True, id="failures-stay"),
    ],
)
def test_kopf_routine_success_is_debug(
    capfd: pytest.CaptureFixture[str], message: str, level: str, shown: bool
) -> None:
    logs.configure(level, "json")
    logging.getLogger("kopf.objects").info(message)
    found = lines(capfd.readouterr().err)
    assert bool(found) is shown
    if shown and "succeeded" in message:
        assert found[0]["level"] == "debug"


def test_stdlib_extra_fields_are_kept(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("aiohttp.server").warning("odd request", extra={"node": "n1"})
    (line,) = lines(capfd.readouterr().err)
    assert line["node"] == "n1"


def test_repeated_failure_is_logged_once_then_with_a_count(
    capfd: pytest.CaptureFixture[str],
) -> None:
    logs.configure("INFO", "json")
    now = [0.0]
    repeated = logs.Repeated(logs.get_logger("t"), interval=10.0, clock=lambda: now[0])
    for second in range(12):
        now[0] = float(second)
        repeated.warning("bind", "cannot serve the device plugin", node="n1")
    found = lines(capfd.readouterr().err)
    assert [(line["event"], line.get("count")) for line in found] == [
        ("cannot serve the device plugin", None),
        ("cannot serve the device plugin", 10),
    ]
    assert all(line["node"] == "n1" for line in found)


def test_before_configure_lines_reach_standard_logging(caplog: pytest.LogCaptureFixture) -> None:
    logs.use_stdlib_defaults()
    with caplog.at_level(logging.INFO, logger="migweaver.agent"):
        logs.get_logger("migweaver.agent").info("layout applied", node="n1", gpu=0)
    (record,) = caplog.records
    assert record.getMessage() == "layout applied node=n1 gpu=0"
    assert (record.node, record.gpu) == ("n1", 0)  # type: ignore[attr-defined]
