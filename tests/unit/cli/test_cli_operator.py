"""`migweaver operator`: flags, defaults and refused combinations (nothing is started)."""

from __future__ import annotations

import pytest

from migweaver.cli import build_parser, cmd_operator


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    args = build_parser().parse_args(["operator", "--webhook-tls-dir", "tls"])
    assert args.func is cmd_operator
    assert (args.namespace, args.batch_idle, args.batch_max) == ("migweaver-system", 1.0, 5.0)
    assert (args.metrics_address, args.metrics_port) == ("0.0.0.0", 31993)
    assert (args.webhook_address, args.webhook_port) == ("0.0.0.0", 9443)
    assert (args.probe_address, args.probe_port) == ("0.0.0.0", 8080)
    assert (args.lease, args.lease_duration, args.standalone, args.no_webhook) == (
        "migweaver-operator",
        15,
        False,
        False,
    )


def test_namespace_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "gpu-system")
    assert build_parser().parse_args(["operator"]).namespace == "gpu-system"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["operator"], "--webhook-tls-dir", id="webhook-without-certificate"),
        pytest.param(
            ["operator", "--no-webhook", "--batch-idle", "0"], "--batch-idle", id="zero-idle"
        ),
        pytest.param(
            ["operator", "--no-webhook", "--batch-idle", "3", "--batch-max", "2"],
            "--batch-max",
            id="max-below-idle",
        ),
    ],
)
def test_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args([*argv, "--log-level", "ERROR"])
    assert args.func(args) == 2
    assert message in capsys.readouterr().err
