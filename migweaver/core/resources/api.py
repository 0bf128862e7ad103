"""Every `migweaver.io/*` name migweaver writes on API objects, and the few helpers for
reading raw API objects (dicts as the API server returns them).

One place for the names, so the webhook, the operator, the agent and the tests can never
disagree about a spelling:

- API group `migweaver.io/v1alpha1` (MigLayout, NodeConfig) and label `migweaver.io/node`
  on every MigLayout;
- the scheduling gate `migweaver.io/placement` (added by the webhook, removed on release);
- the pod condition `migweaver.io/Placement` (why a gated pod waits, or where it went);
- pod annotations `migweaver.io/reservation` (the operator's own bookkeeping while a pod
  waits), `migweaver.io/allocation`, `bind-phase`, `bind-time` and `bind-error` (the
  hand-off to the agent's device plugin, see `core.resources.allocation`).

The helpers never raise on malformed input: a missing or mistyped field reads as absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "ANNOTATION_ALLOCATION",
    "ANNOTATION_BIND_ERROR",
    "ANNOTATION_BIND_PHASE",
    "ANNOTATION_BIND_TIME",
    "ANNOTATION_RESERVATION",
    "API_VERSION",
    "GROUP",
    "HOSTNAME_LABEL",
    "LABEL_NODE",
    "PLACEMENT_CONDITION",
    "PLACEMENT_GATE",
    "VERSION",
    "annotations_of",
    "describe_kind",
    "escape_pointer",
    "format_timestamp",
    "json_text",
    "json_type",
    "metadata_of",
    "parse_timestamp",
    "short_repr",
]

GROUP: Final = "migweaver.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

LABEL_NODE: Final = "migweaver.io/node"
"""Label on every MigLayout: its node (see `node_label_value`), so an agent lists only its own."""
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
"""The node label a pod's node affinity names when the operator pins it (Kubernetes')."""

PLACEMENT_GATE: Final = "migweaver.io/placement"
"""The scheduling gate the webhook adds to GPU pods and the operator removes on release."""
PLACEMENT_CONDITION: Final = "migweaver.io/Placement"
"""The pod condition type that says why a gated pod waits, or where it went."""

ANNOTATION_RESERVATION: Final = "migweaver.io/reservation"
"""JSON: the devices the operator set aside for a waiting pod (`core.operator.pod_reservation`)."""
ANNOTATION_ALLOCATION: Final = "migweaver.io/allocation"
"""JSON: every GPU container's devices, written on release (`core.resources.allocation`)."""
ANNOTATION_BIND_PHASE: Final = "migweaver.io/bind-phase"
"""`allocating`, then `success` or `failed` (the agent's device plugin)."""
ANNOTATION_BIND_TIME: Final = "migweaver.io/bind-time"
"""Unix seconds when the operator released the pod."""
ANNOTATION_BIND_ERROR: Final = "migweaver.io/bind-error"
"""Why the agent could not hand out the devices (with bind-phase `failed`)."""

# Long inputs (a whole mapping pasted where a name belongs) would drown a message.
_MAX_SHOWN: Final = 80
_MAX_JSON_TEXT: Final = 100


# ------------------------------------------------------------------------ raw objects


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's `metadata`, `{}` when absent or malformed."""
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's annotations, `{}` when absent or malformed."""
    annotations = metadata_of(obj).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def escape_pointer(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901): `nvidia.com/gpu` -> `nvidia.com~1gpu`."""
    return token.replace("~", "~0").replace("/", "~1")


def parse_timestamp(text: str | None) -> float:
    """RFC 3339 (`2024-05-01T12:00:00Z`) to epoch seconds; +inf when absent or bad.

    A time without an offset is UTC, as Kubernetes' times are, never the machine's zone:
    the same input must give the same plan everywhere.
    """
    if not text:
        return math.inf
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return math.inf
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def format_timestamp(seconds: float) -> str:
    """Epoch seconds as the API writes times (`2024-05-01T12:00:00Z`, UTC, whole seconds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------ values in messages


def short_repr(value: Any) -> str:
    """`repr(value)`, cut to a length a one-line message can carry."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def describe_kind(value: Any) -> str:
    """What a YAML value is, for `expected ..., got <this>`: `a mapping`, `a list`,
    `nothing`, or its type and short repr (`int 5`)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {short_repr(value)}"


def json_type(value: object) -> str:
    """The JSON type of a value from an API object: object, list, boolean, number, string."""
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def json_text(value: object) -> str:
    """A value from an API object as short JSON-like text, whatever its type and size."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        # str() of a very large int raises ValueError (int_max_str_digits) in 3.11+.
        text = str(value) if value.bit_length() <= 128 else f"<{value.bit_length()}-bit integer>"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, Mapping):
        text = "{...}"
    elif isinstance(value, list | tuple):
        text = "[...]"
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_JSON_TEXT else text[: _MAX_JSON_TEXT - 1] + "…"
