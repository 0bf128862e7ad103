"""docs/configuration.md lists every flag of the long-running commands, and no flag they
do not have: the reference an operator of a cluster reads must not drift from the CLI."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from migweaver.cli import build_parser

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def flags_of(command: str) -> set[str]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = sub.choices[command]
    return {a.option_strings[-1] for a in parser._actions if a.option_strings} - {"--help"}


def documented(command: str) -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"`migweaver {command}` (")
    table = text[start:].split("\n\n")[1]
    return set(re.findall(r"^\| `(--[a-z-]+)`", table, flags=re.MULTILINE))


@pytest.mark.parametrize("command", ["agent", "operator"])
def test_every_flag_is_documented(command: str) -> None:
    assert documented(command) == flags_of(command)
