"""What a person at a terminal sees: `--version`, defaults in `--help`, a pipe closed early
(`migweaver catalog | head`), and `simulate`'s progress line (on a terminal only)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from migweaver import __version__
from migweaver.cli import EXIT_BROKEN_PIPE, main

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "examples" / "scenarios" / "burst.yaml"
COMMAND = [sys.executable, "-m", "migweaver"]


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"migweaver {__version__}"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        pytest.param("operator", "(default: 31993)", id="operator-metrics-port"),
        pytest.param("operator", "(default: 1.0)", id="operator-batch-idle"),
        pytest.param("agent", "(default: 30)", id="agent-resync"),
        pytest.param("agent", "(default: nvml)", id="agent-backend"),
        pytest.param("simulate", "default)", id="simulate-policy-says-it-itself"),
    ],
)
def test_help_shows_defaults(capsys: pytest.CaptureFixture[str], command: str, shown: str) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert shown in help_text
    # A default is said once, never twice (help texts that name it keep their words).
    assert "(default: (default" not in help_text
    assert "default: in-cluster, then ~/.kube) (default" not in help_text


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # `migweaver catalog | head`: the reader is gone before the output is written (its
    # end of the pipe closed before the command starts), deterministically, whatever the
    # size of the output and the pipe's buffer.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [*COMMAND, "catalog", "--json"],
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr.decode() == ""


def run_simulate(*, on_terminal: bool) -> tuple[int, str, str]:
    """`migweaver simulate` with stdout and stderr on a pseudo-terminal, or on pipes."""
    if not on_terminal:
        done = subprocess.run(
            [*COMMAND, "simulate", str(SCENARIO)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
        )
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*COMMAND, "simulate", str(SCENARIO)], stdout=terminal, stderr=terminal, cwd=ROOT
    )
    os.close(terminal)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    text = b"".join(chunks).decode(errors="replace")
    return process.wait(timeout=300), text, text


def test_simulate_shows_progress_on_a_terminal() -> None:
    code, out, _ = run_simulate(on_terminal=True)
    assert code == 0
    assert "migweaver: t=" in out
    assert "arrived" in out
    # The line is wiped before the report.
    assert "\r\033[K" in out
    assert "107 of 107 placed" in out.split("\r\033[K")[-1]


def test_simulate_prints_no_progress_into_a_pipe() -> None:
    code, out, err = run_simulate(on_terminal=False)
    assert code == 0
    assert "arrived" not in err
    assert "\033[K" not in out + err
