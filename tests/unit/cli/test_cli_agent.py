"""`migweaver agent`: flags, defaults and refused values (nothing is started)."""

from __future__ import annotations

import pytest

from migweaver.cli import build_parser, cmd_agent


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-node-1")
    args = build_parser().parse_args(["agent"])
    assert args.func is cmd_agent
    assert (args.node_name, args.backend, args.resync) == ("gpu-node-1", "nvml", 30)
    assert (args.device_plugin, args.device_list_strategy, args.device_split_count) == (
        True,
        "cdi",
        10,
    )


@pytest.mark.parametrize(
    ("argv", "directory"),
    [
        pytest.param(["--cdi"], "/var/run/cdi", id="default-dir"),
        pytest.param(["--cdi", "/etc/cdi"], "/etc/cdi", id="own-dir"),
    ],
)
def test_cdi_takes_an_optional_directory(argv: list[str], directory: str) -> None:
    args = build_parser().parse_args(["agent", "--node-name", "n1", *argv])
    assert args.cdi == directory


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["agent", "--node-name", ""], "--node-name", id="no-node"),
        pytest.param(
            ["agent", "--node-name", "n1", "--device-split-count", "0"],
            "--device-split-count",
            id="zero-split-count",
        ),
        pytest.param(["agent", "--node-name", "n1", "--resync", "0"], "--resync", id="zero-resync"),
    ],
)
def test_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err
