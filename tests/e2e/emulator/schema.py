"""Custom resources against their CRD's `openAPIV3Schema`: prune, default, validate.

In the apiserver's order: unknown fields are pruned (unless the schema says
`x-kubernetes-preserve-unknown-fields`), `null` is dropped where the schema is not
`nullable`, `default`s fill missing properties, then the object is validated. Covered
keywords: `type`, `properties`, `additionalProperties`, `items`, `required`, `enum`,
`minimum`/`maximum` (and `exclusive*`), `minLength`/`maxLength`, `pattern`,
`minItems`/`maxItems`, `nullable`, `x-kubernetes-int-or-string`,
`x-kubernetes-list-type: map|set` uniqueness. Not covered (documented limits): CEL
`x-kubernetes-validations`, `format`, `oneOf`/`anyOf`/`allOf`/`not`, `multipleOf`.
Messages follow kube-openapi's wording (`spec.x in body should be greater than or
equal to 0`).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .errors import (
    Cause,
    field_duplicate,
    field_invalid,
    field_not_supported,
    field_required,
)

JsonDict = dict[str, Any]

# Top-level fields every object keeps, whatever its schema says.
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def apply_schema(obj: JsonDict, schema: JsonDict | None) -> list[Cause]:
    """Prune and default `obj` in place; return the validation errors (empty: valid)."""
    if not schema:
        return []
    rest = {k: v for k, v in obj.items() if k not in _ROOT_FIELDS}
    pruned = _prune_and_default(rest, schema)
    for key in list(obj):
        if key not in _ROOT_FIELDS:
            del obj[key]
    obj.update(pruned)
    causes: list[Cause] = []
    _validate(rest_view(obj), schema, "", causes)
    return causes


def rest_view(obj: JsonDict) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in _ROOT_FIELDS}


def _type_of(schema: JsonDict) -> str | None:
    return schema.get("type")


def _prune_and_default(value: Any, schema: JsonDict) -> Any:
    """Drop unknown fields and non-nullable nulls, fill in defaults (a new value)."""
    kind = _type_of(schema)
    if isinstance(value, dict) and (kind == "object" or "properties" in schema):
        properties: JsonDict = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        result: JsonDict = {}
        for key, item in value.items():
            sub = properties.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is None:
                if preserve or additional is True:
                    result[key] = copy.deepcopy(item)
                continue  # pruned: the apiserver silently drops unknown fields
            if item is None and not sub.get("nullable"):
                continue
            result[key] = _prune_and_default(item, sub)
        for key, sub in properties.items():
            if key not in result and "default" in sub:
                result[key] = _prune_and_default(copy.deepcopy(sub["default"]), sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_and_default(item, schema["items"]) for item in value]
    return copy.deepcopy(value)


def _body_path(path: str) -> str:
    return path or "<root>"


def _validate(value: Any, schema: JsonDict, path: str, causes: list[Cause]) -> None:
    if value is None:
        if not schema.get("nullable"):
            causes.append(field_invalid(path, None, f"{_body_path(path)} in body must not be null"))
        return
    kind = _type_of(schema)
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            causes.append(
                field_invalid(path, value, f"{path} in body must be of type integer-or-string")
            )
            return
    elif kind and not _has_type(value, kind):
        causes.append(
            field_invalid(
                path, value, f"{path} in body must be of type {kind}: {_type_name(value)}"
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        causes.append(field_not_supported(path, value, list(schema["enum"])))
    if isinstance(value, dict):
        _validate_object(value, schema, path, causes)
    elif isinstance(value, list):
        _validate_array(value, schema, path, causes)
    elif isinstance(value, str):
        _validate_string(value, schema, path, causes)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, causes)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate_object(value: JsonDict, schema: JsonDict, path: str, causes: list[Cause]) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            causes.append(field_required(_join(path, key)))
    properties: JsonDict = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None and isinstance(additional, dict):
            sub = additional
        if sub is not None:
            _validate(item, sub, _join(path, key), causes)


def _validate_array(value: list[Any], schema: JsonDict, path: str, causes: list[Cause]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            field_invalid(
                path, value, f"{path} in body should have at least {schema['minItems']} items"
            )
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            Cause(
                path,
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(item, items, f"{path}[{index}]", causes)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[str] = set()
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            identity = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
            if identity in seen:
                causes.append(field_duplicate(f"{path}[{index}]", {k: item.get(k) for k in keys}))
            seen.add(identity)
    elif list_type == "set":
        seen_items: set[str] = set()
        for index, item in enumerate(value):
            identity = json.dumps(item, sort_keys=True)
            if identity in seen_items:
                causes.append(field_duplicate(f"{path}[{index}]", item))
            seen_items.add(identity)


def _validate_string(value: str, schema: JsonDict, path: str, causes: list[Cause]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            field_invalid(
                path, value, f"{path} in body should be at least {schema['minLength']} chars long"
            )
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            Cause(
                path,
                "FieldValueTooLong",
                f"Too long: may not be more than {schema['maxLength']} bytes",
            )
        )
    if "pattern" in schema and not re.search(schema["pattern"], value):
        causes.append(
            field_invalid(path, value, f"{path} in body should match '{schema['pattern']}'")
        )


def _validate_number(value: float, schema: JsonDict, path: str, causes: list[Cause]) -> None:
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if minimum is not None:
        if schema.get("exclusiveMinimum") and value <= minimum:
            causes.append(
                field_invalid(path, value, f"{path} in body should be greater than {minimum}")
            )
        elif value < minimum:
            causes.append(
                field_invalid(
                    path, value, f"{path} in body should be greater than or equal to {minimum}"
                )
            )
    if maximum is not None:
        if schema.get("exclusiveMaximum") and value >= maximum:
            causes.append(
                field_invalid(path, value, f"{path} in body should be less than {maximum}")
            )
        elif value > maximum:
            causes.append(
                field_invalid(
                    path, value, f"{path} in body should be less than or equal to {maximum}"
                )
            )


def _has_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _type_name(value: Any) -> str:
    """The JSON type name kube-openapi puts in its message."""
    if isinstance(value, bool):
        return '"boolean"'
    if isinstance(value, int):
        return '"integer"'
    if isinstance(value, float):
        return '"number"'
    if isinstance(value, str):
        return '"string"'
    if isinstance(value, list):
        return '"array"'
    return '"object"'
