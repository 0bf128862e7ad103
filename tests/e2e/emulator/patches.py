"""PATCH bodies: JSON merge patch, JSON patch, and a strategic merge patch for built-ins.

- `application/merge-patch+json` (RFC 7386): maps merge, `null` deletes, lists replace.
- `application/json-patch+json` (RFC 6902) through the `jsonpatch` package (a kopf
  dependency). A malformed patch is a 400; an operation that cannot apply (a failed
  `test`, a missing path) is a 422, as on the apiserver.
- `application/strategic-merge-patch+json` (built-in kinds only; custom resources answer
  415 as a real server does). Simplification: the merge keys come from a table of list
  field *names* (`containers` by `name`, `conditions` by `type`, ...) instead of the
  Go struct tags per path; `metadata.finalizers` merges as a set of strings; the
  directives `$patch: delete` (list items), `$patch: replace` (maps and lists) and
  `$deleteFromPrimitiveList/<field>` are honoured; `$setElementOrder` and `$retainKeys`
  are dropped. Lists not in the table are replaced, as Kubernetes does for atomic lists.
- `application/apply-patch+yaml` (server-side apply) is not emulated: 415.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

from .errors import StatusError, bad_request, unsupported_media_type

JsonDict = dict[str, Any]

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

# List field name -> merge key, for the strategic merge patch of built-in kinds.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "schedulingGates": "name",
    "imagePullSecrets": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "taints": "key",
    "hostAliases": "ip",
}
# Lists of strings that a strategic merge patch unions instead of replacing.
PRIMITIVE_MERGE = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the result of applying `patch` to `target` (neither is modified)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: JsonDict, operations: Any) -> JsonDict:
    """RFC 6902 operations applied to a copy of `target`."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise bad_request(f"invalid JSON patch: {exc}") from exc
    try:
        return dict(patch.apply(copy.deepcopy(target)))
    except jsonpatch.InvalidJsonPatch as exc:
        raise bad_request(f"invalid JSON patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise StatusError(422, "Invalid", f"the server rejected our request: {exc}") from exc


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch (see the module docstring for what is covered)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(("$setElementOrder/", "$retainKeys")) or key == "$patch":
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE:
            current = list(result.get(key) or [])
            result[key] = current + [v for v in value if v not in current]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(i, Mapping) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, Mapping) and "$patch" in i)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, Mapping) or merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next(
            (i for i, old in enumerate(result) if old.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def apply_patch(target: JsonDict, body: Any, content_type: str, custom: bool) -> JsonDict:
    """Dispatch on the Content-Type of a PATCH request."""
    media = content_type.split(";", 1)[0].strip().lower()
    accepted = [JSON, MERGE] if custom else [JSON, MERGE, STRATEGIC]
    if media == MERGE:
        if not isinstance(body, Mapping):
            raise bad_request("a merge patch must be a JSON object")
        return dict(merge_patch(target, body))
    if media == JSON:
        return json_patch(target, body)
    if media == STRATEGIC and not custom:
        if not isinstance(body, Mapping):
            raise bad_request("a strategic merge patch must be a JSON object")
        return dict(strategic_merge_patch(target, body))
    raise unsupported_media_type(media, accepted)
