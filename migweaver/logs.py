"""Logging for the long-running commands: structlog, JSON in a cluster, console on a TTY.

Every log call names what it is about in fields (`node`, `gpu`, `pod`, `layout`,
`profile`, ...) next to a short message, so a line can be selected with `jq` on the JSON
output (`jq 'select(.node == "gpu-1" and .gpu == 0)'`) and still reads as a sentence on
a console. Standard-library loggers (kopf, aiohttp) go through the same renderer, so one
process writes one format; kopf's per-handler success lines are DEBUG, not INFO.

`Repeated` logs a failure that a loop retries every second once, then with a backoff and
a count (the decision is `migweaver.core.repeats.Repeats`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import structlog

from migweaver.core.repeats import Repeats

__all__ = [
    "LOG_FORMATS",
    "KopfSuccessToDebug",
    "Repeated",
    "configure",
    "get_logger",
    "use_stdlib_defaults",
]

LogFormat = Literal["json", "console"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "console")

# kopf says "Handler 'x' succeeded." and "Creation is processed: 1 succeeded; 0 failed."
# at INFO for every handler call: one line per pod event on a busy cluster.
_KOPF_ROUTINE: Final = re.compile(
    r"^(Handler|Activity|Webhook|Indexer) '.*' succeeded\.$|^\w+ is processed: "
)


class KopfSuccessToDebug(logging.Filter):
    """Lowers kopf's routine success lines to DEBUG, and drops them below `level`."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        routine = record.name.startswith("kopf") and record.levelno == logging.INFO
        if routine and _KOPF_ROUTINE.search(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("message", node=..., gpu=...)`."""
    return structlog.stdlib.get_logger(name)


# Attributes of a LogRecord: fields with these names cannot travel as `extra`.
_RECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _to_stdlib(_: Any, __: str, event_dict: structlog.types.EventDict) -> dict[str, Any]:
    """Hand a line to the standard logging module as `message key=value ...`, the fields
    also as record attributes (what pytest's caplog and plain handlers show)."""
    exc_info = event_dict.pop("exc_info", None)
    message = str(event_dict.pop("event", ""))
    fields = " ".join(f"{key}={value}" for key, value in event_dict.items())
    extra = {k: v for k, v in event_dict.items() if k not in _RECORD_ATTRIBUTES}
    return {"msg": f"{message} {fields}".strip(), "extra": extra, "exc_info": exc_info}


def use_stdlib_defaults() -> None:
    """Before `configure` (tests, migweaver used as a library): lines go to the standard
    logging module, which shows them wherever its handlers do."""
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


if not structlog.is_configured():
    use_stdlib_defaults()


def configure(level: str = "INFO", fmt: LogFormat | None = None) -> None:
    """Set up structlog and the standard logging module once for the process.

    `fmt=None` picks JSON unless stderr is a terminal (a container's log is not).
    """
    use_json = (not sys.stderr.isatty()) if fmt is None else fmt == "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    threshold = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.processors.format_exc_info],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(KopfSuccessToDebug(threshold))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)


class Repeated:
    """Logs repeated failures once, then with backoff and a `count` field (see module doc)."""

    def __init__(
        self,
        log: Any,
        *,
        interval: float = 10.0,
        max_interval: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._repeats = Repeats(interval, max_interval)
        self._clock = clock

    def warning(self, key: str, message: str, **fields: Any) -> None:
        """Log `message` (with `fields`) unless the same one under `key` was said lately."""
        # The same message with other fields (another error) is news, not a repeat.
        identity = f"{message} {sorted(fields.items())!r}"
        count = self._repeats.occurred(key, identity, self._clock())
        if count is not None:
            self._log.warning(message, **fields, **({"count": count} if count > 1 else {}))

    def clear(self, key: str | None = None) -> None:
        """The failure under `key` is over (every key when None)."""
        self._repeats.clear(key)
