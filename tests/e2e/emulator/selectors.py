"""Label and field selectors, with the apiserver's grammar and matching rules.

Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined
by commas (AND). As in Kubernetes, `k!=v` and `k notin (...)` also match objects without
the label. Field selectors: `f=v`, `f==v`, `f!=v` over the fields the kind supports; an
unsupported field is a 400, as on a real server (so a test cannot rely on a field
selector that a real cluster would refuse).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import StatusError, bad_request
from .resources import ResourceType

JsonDict = dict[str, Any]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQUALITY = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


def _split_outside_parens(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the `labelSelector` query parameter; a syntax error is a 400."""
        if not text or not text.strip():
            return cls()
        requirements = []
        for term in _split_outside_parens(text):
            requirements.append(_parse_term(term))
        return cls(tuple(requirements))

    @classmethod
    def from_object(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A metav1.LabelSelector (`matchLabels`, `matchExpressions`), as webhooks use."""
        selector = selector or {}
        requirements = [
            Requirement(str(k), "In", frozenset({str(v)}))
            for k, v in (selector.get("matchLabels") or {}).items()
        ]
        for expression in selector.get("matchExpressions") or []:
            requirements.append(
                Requirement(
                    str(expression["key"]),
                    str(expression["operator"]),
                    frozenset(str(v) for v in expression.get("values") or []),
                )
            )
        return cls(tuple(requirements))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels"))


def _parse_term(term: str) -> Requirement:
    if match := _SET.match(term):
        key, op, raw = match.groups()
        values = [v.strip() for v in raw.split(",")]
        if any(not re.fullmatch(_VALUE, v) for v in values):
            raise _unparsable(term)
        return Requirement(key, "In" if op == "in" else "NotIn", frozenset(values))
    if match := _EQUALITY.match(term):
        key, op, value = match.groups()
        return Requirement(key, "NotIn" if op == "!=" else "In", frozenset({value}))
    if match := _EXISTS.match(term):
        bang, key = match.groups()
        return Requirement(key, "DoesNotExist" if bang else "Exists")
    raise _unparsable(term)


def _unparsable(term: str) -> StatusError:
    return bad_request(f"unable to parse requirement: found '{term.strip()}', expected: a label")


# ------------------------------------------------------------------ field selectors

# Field labels whose value lives elsewhere in the object.
_FIELD_PATHS = {"source": "source.component"}


def field_value(obj: Mapping[str, Any], label: str) -> str:
    """The value a field selector compares: missing is "", booleans are true/false."""
    node: Any = obj
    for part in _FIELD_PATHS.get(label, label).split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _unescape_split(text: str, separator: str) -> list[str]:
    """Split on `separator` except where backslash-escaped; unescape the parts."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None, rt: ResourceType) -> FieldSelector:
        if not text or not text.strip():
            return cls()
        terms = []
        for term in _unescape_split(text, ","):
            match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)(.*)$", term)
            if not match:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
            label, op, value = match.groups()
            if label not in rt.field_labels:
                if rt.custom:
                    known = ", ".join(f'"{f}"' for f in sorted(rt.field_labels))
                    raise bad_request(f'"{label}" is not a known field selector: only {known}')
                raise bad_request(f"field label not supported: {label}")
            terms.append((label, op != "!=", value.strip()))
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, f) == v) == equal for f, equal, v in self.terms)


def object_filter(labels: LabelSelector, fields: FieldSelector) -> Callable[[JsonDict], bool]:
    """One predicate for both selectors of a list or watch."""

    def matches(obj: JsonDict) -> bool:
        return labels.matches_object(obj) and fields.matches(obj)

    return matches
