"""Errors and warnings of a configuration, each with the path of the key it is about.

`IssueCollector` gathers them while a configuration is loaded and checked; new checks
report through it with a `Loc` (the key path as a tuple), never by raising.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from migweaver.core.config.schema import CONFIG_KEY, DeviceConfig

__all__ = ["ConfigIssue", "ConfigResult", "IssueCollector", "Loc", "format_loc"]

_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

Loc = tuple[str | int, ...]
"""A key path: `("nvidia", "knownMigGeometries", 0, "models")`."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One error or warning: where (`nvidia.defaultMemory`, or the file) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def in_file(self, source: str) -> str:
        """The issue after the name of its file, said once: an issue about the file as a
        whole (invalid YAML, an empty document) already has it as its path."""
        return str(self) if self.path == source else f"{source}: {self}"


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """The outcome of loading a configuration; `config` is None whenever there are errors."""

    config: DeviceConfig | None
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    source: str = CONFIG_KEY

    @property
    def ok(self) -> bool:
        """True when the configuration may be used."""
        return self.config is not None and not self.errors


class IssueCollector:
    """Collects errors and warnings once each, in the order found."""

    def __init__(self) -> None:
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self._seen: set[tuple[bool, str, str]] = set()
        self.flat: Mapping[int, list[list[int]]] = {}
        """Per flat `allowedGeometries` entry: geometry -> indices into the user's list."""

    def _add(self, is_error: bool, loc: Loc | str, message: str) -> None:
        path = loc if isinstance(loc, str) else format_loc(self._source_loc(loc))
        key = (is_error, path, message)
        if key in self._seen:
            return
        self._seen.add(key)
        (self.errors if is_error else self.warnings).append(ConfigIssue(path, message))

    def error(self, loc: Loc | str, message: str) -> None:
        self._add(True, loc, message)

    def warn(self, loc: Loc | str, message: str) -> None:
        self._add(False, loc, message)

    def _source_loc(self, loc: Loc) -> Loc:
        """Point into the user's flat list (`allowedGeometries[4]`), not the grouped form."""
        if (
            len(loc) >= 6
            and loc[:2] == ("nvidia", "knownMigGeometries")
            and loc[3] == "allowedGeometries"
            and isinstance(loc[2], int)
            and loc[2] in self.flat
            and isinstance(loc[4], int)
            and isinstance(loc[5], int)
        ):
            groups = self.flat[loc[2]]
            if loc[4] < len(groups) and loc[5] < len(groups[loc[4]]):
                return (*loc[:4], groups[loc[4]][loc[5]], *loc[6:])
        return loc

    def result(self, config: DeviceConfig | None, source: str) -> ConfigResult:
        return ConfigResult(
            config=None if self.errors else config,
            errors=self.errors,
            warnings=self.warnings,
            source=source,
        )


def format_loc(loc: Loc) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _PLAIN_KEY.match(part):
            parts.append(f".{part}" if parts else part)
        else:
            parts.append(f"[{part!r}]")
    return "".join(parts)
