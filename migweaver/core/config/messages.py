"""Plain-language messages for what pydantic found wrong, and short renderings of the
values a user wrote, so a message never drowns in a pasted mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from migweaver.core.resources.api import short_repr

__all__ = ["pydantic_message"]


_TYPE_MESSAGES: Final = {
    "model_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "missing": "required key is missing",
}


_BOUND_MESSAGES: Final = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be greater than"),
    "less_than_equal": ("le", "must be at most"),
}


def pydantic_message(err: Mapping[str, Any]) -> str:
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return _TYPE_MESSAGES[kind]
    if kind in {"too_short", "string_too_short"} and ctx.get("min_length") == 1:
        message = "must not be empty"
    elif kind in _BOUND_MESSAGES and _BOUND_MESSAGES[kind][0] in ctx:
        key, text = _BOUND_MESSAGES[kind]
        bound = ctx[key]
        message = f"{text} {bound:g}" if isinstance(bound, float) else f"{text} {bound}"
    else:
        message = _TYPE_MESSAGES.get(kind, str(err["msg"]))
    return f"{message} (got {short_repr(err.get('input'))})"
