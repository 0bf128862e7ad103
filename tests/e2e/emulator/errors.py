"""Kubernetes `Status` errors, with the codes, reasons and message shapes of a real apiserver.

Every failure the emulator reports is a `StatusError`; the HTTP layer turns it into the
JSON body a real server sends (`kind: Status`, `status: Failure`, `reason`, `code`,
`message`, `details`), so a client's error handling is exercised as in production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of `details.causes`: which field is wrong and why (a 422's detail)."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    message: str

    def text(self) -> str:
        """The cause as the apiserver spells it in the overall message."""
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass
class StatusError(Exception):
    """An API failure: becomes a `Status` body with HTTP status `code`."""

    code: int
    reason: str
    message: str
    details: JsonDict = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, f"{self.code} {self.reason}: {self.message}")

    def body(self) -> JsonDict:
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status

    def json(self) -> str:
        return json.dumps(self.body())


def gr(group: str, plural: str) -> str:
    """`pods` or `miglayouts.migweaver.io`: how messages name a group-resource."""
    return f"{plural}.{group}" if group else plural


def _details(group: str, plural: str, name: str) -> JsonDict:
    details: JsonDict = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def not_found(group: str, plural: str, name: str) -> StatusError:
    return StatusError(
        404, "NotFound", f'{gr(group, plural)} "{name}" not found', _details(group, plural, name)
    )


def already_exists(group: str, plural: str, name: str) -> StatusError:
    return StatusError(
        409,
        "AlreadyExists",
        f'{gr(group, plural)} "{name}" already exists',
        _details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str, why: str | None = None) -> StatusError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {gr(group, plural)} "{name}": {why}',
        _details(group, plural, name),
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> StatusError:
    """422 Invalid: `Kind.group "name" is invalid: <cause>` or `[<cause>, <cause>]`."""
    texts = [c.text() for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details: JsonDict = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes],
    }
    if group:
        details["group"] = group
    return StatusError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def forbidden(message: str) -> StatusError:
    return StatusError(403, "Forbidden", message)


def method_not_allowed(message: str = "the server does not allow this method") -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def gone(message: str) -> StatusError:
    """410 Expired: a watch from a resourceVersion older than the retained history."""
    return StatusError(410, "Expired", message)


def unsupported_media_type(content_type: str, accepted: list[str]) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)} (got {content_type})",
    )


def internal_error(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}")


# Cause constructors, in the wording of k8s.io/apimachinery field errors.


def _show(value: Any) -> str:
    """A value as Go's %#v shows it in field errors (strings quoted, the rest JSON)."""
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def field_invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}")


def field_required(path: str, detail: str = "") -> Cause:
    return Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def field_not_supported(path: str, value: Any, allowed: list[Any]) -> Cause:
    supported = ", ".join(_show(v) for v in allowed)
    return Cause(
        path,
        "FieldValueNotSupported",
        f"Unsupported value: {_show(value)}: supported values: {supported}",
    )


def field_forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def field_duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {_show(value)}")
