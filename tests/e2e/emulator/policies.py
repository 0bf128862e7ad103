"""ValidatingAdmissionPolicies and their bindings, evaluated with cel-python.

For each CREATE and UPDATE (of an object or its status) the emulator runs every
ValidatingAdmissionPolicyBinding whose policy matches the request, as the apiserver
does: `matchConstraints.resourceRules` (apiGroups, apiVersions, operations, resources
with `*`, `pods/*` and `pods/status`), then `matchConditions`, then `variables` in order,
then `validations`; the first failing validation of a binding with `Deny` refuses the
request with the apiserver's message:

    pods "p" is forbidden: ValidatingAdmissionPolicy 'x' with binding 'y' denied
    request: <message or messageExpression>

(403 when the validation's reason is Forbidden, else 422 Invalid). An expression that
cannot be evaluated counts under the policy's `failurePolicy` (Fail: refused).

Kubernetes' CEL adds type checking and libraries (strings, lists, regex, quantity); the
migweaver policies use only standard CEL (has, in, all, exists, filter, map, size,
string(), startsWith, endsWith, ternaries), which cel-python evaluates alike. Not
emulated: paramKind/paramRef, binding matchResources, auditAnnotations, `Warn`/`Audit`
actions, DELETE and CONNECT (never admitted here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from .errors import StatusError
from .resources import ResourceType

JsonDict = dict[str, Any]

POLICY_KEY = ("admissionregistration.k8s.io", "validatingadmissionpolicies")
BINDING_KEY = ("admissionregistration.k8s.io", "validatingadmissionpolicybindings")


class Denied(Exception):
    """A validation failed: `message` as the policy words it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def _celpy() -> Any:
    import celpy  # cel-python, a dev dependency: only needed once a policy is installed

    return celpy


@lru_cache(maxsize=4096)
def _program(expression: str) -> Any:
    celpy = _celpy()
    env = celpy.Environment()
    return env.program(env.compile(expression))


class Evaluation:
    """One policy's spec evaluated against one request."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.celpy = _celpy()

    def run(self, expression: str, activation: Mapping[str, Any]) -> Any:
        result = _program(expression).evaluate(dict(activation))
        if isinstance(result, self.celpy.CELEvalError):
            raise result
        return result

    def admit(self, request: Mapping[str, Any], obj: Any, old: Any) -> tuple[bool, str, str]:
        """(allowed, message, reason); `not matched` when a matchCondition is false."""
        to_cel = self.celpy.json_to_cel
        activation: dict[str, Any] = {
            "request": to_cel(dict(request)),
            "object": to_cel(obj),
            "oldObject": to_cel(old),
        }
        try:
            for condition in self.spec.get("matchConditions") or []:
                if not bool(self.run(condition["expression"], activation)):
                    return True, "not matched", ""
            variables: dict[Any, Any] = {}
            for variable in self.spec.get("variables") or []:
                activation["variables"] = self.celpy.celtypes.MapType(variables)
                value = self.run(variable["expression"], activation)
                variables[self.celpy.celtypes.StringType(variable["name"])] = value
            activation["variables"] = self.celpy.celtypes.MapType(variables)
        except self.celpy.CELEvalError as exc:
            return self._failed(exc)
        for validation in self.spec.get("validations") or []:
            try:
                ok = self.run(validation["expression"], activation)
            except self.celpy.CELEvalError as exc:
                return self._failed(exc)
            if not bool(ok):
                message = validation.get("message") or (
                    f"failed expression: {validation['expression']}"
                )
                if "messageExpression" in validation:
                    with contextlib.suppress(self.celpy.CELEvalError):
                        message = str(self.run(validation["messageExpression"], activation))
                return False, str(message).strip(), str(validation.get("reason") or "Invalid")
        return True, "allowed", ""

    def _failed(self, exc: Exception) -> tuple[bool, str, str]:
        if self.spec.get("failurePolicy", "Fail") == "Ignore":
            return True, "ignored", ""
        return False, f"expression evaluation failed: {exc}", "Invalid"


def conditions_hold(
    conditions: list[JsonDict], request: Mapping[str, Any], obj: Any, old: Any
) -> bool:
    """Whether every matchCondition (a webhook's, CEL) is true; raises on an error."""
    if not conditions:
        return True
    evaluation = Evaluation({})
    to_cel = evaluation.celpy.json_to_cel
    activation = {
        "request": to_cel(dict(request)),
        "object": to_cel(obj),
        "oldObject": to_cel(old),
    }
    return all(bool(evaluation.run(c["expression"], activation)) for c in conditions)


def rule_matches(rule: Mapping[str, Any], rt: ResourceType, operation: str, sub: str) -> bool:
    resource = f"{rt.plural}/{sub}" if sub else rt.plural

    def hit(values: Any, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    resources = rule.get("resources") or []
    resource_hit = (
        resource in resources
        or "*" in resources
        or (bool(sub) and f"{rt.plural}/*" in resources)
        or (bool(sub) and f"*/{sub}" in resources)
    )
    return (
        hit(rule.get("apiGroups"), rt.group)
        and hit(rule.get("apiVersions"), rt.version)
        and hit(rule.get("operations"), operation)
        and resource_hit
    )


def check(
    policies: Mapping[str, JsonDict],
    bindings: list[JsonDict],
    *,
    rt: ResourceType,
    operation: str,
    namespace: str | None,
    name: str,
    subresource: str | None,
    obj: JsonDict | None,
    old: JsonDict | None,
    user: JsonDict,
) -> None:
    """Raise the apiserver's refusal when a binding with `Deny` denies the request."""
    sub = subresource or ""
    request = {
        "operation": operation,
        "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
        "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "name": name,
        "namespace": namespace or "",
        "userInfo": {
            "username": user.get("username", ""),
            "groups": list(user.get("groups") or []),
            "extra": {k: list(v) for k, v in (user.get("extra") or {}).items()},
        },
    }
    if sub:  # left out for the object itself, as the apiserver does
        request["subResource"] = sub
    for binding in sorted(bindings, key=lambda b: str(b["metadata"]["name"])):
        spec = binding.get("spec") or {}
        policy = policies.get(str(spec.get("policyName") or ""))
        if policy is None or "Deny" not in (spec.get("validationActions") or []):
            continue
        pspec = policy.get("spec") or {}
        rules = (pspec.get("matchConstraints") or {}).get("resourceRules") or []
        if not any(rule_matches(r, rt, operation, sub) for r in rules):
            continue
        allowed, message, reason = Evaluation(pspec).admit(request, obj, old)
        if allowed:
            continue
        text = (
            f'{rt.plural} "{name}" is forbidden: ValidatingAdmissionPolicy '
            f"'{policy['metadata']['name']}' with binding '{binding['metadata']['name']}' "
            f"denied request: {message}"
        )
        if reason == "Forbidden":
            raise StatusError(403, "Forbidden", text)
        raise StatusError(422, "Invalid", text)
