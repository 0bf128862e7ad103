"""MutatingWebhookConfigurations: the server-side defaults, validation and matching rules.

Defaults and validation are those of admissionregistration.k8s.io/v1 (failurePolicy
Fail, timeoutSeconds 10, empty selectors; a `name` with three dot-separated segments,
exactly one of `url`/`service`, `https` URLs, `sideEffects` None or NoneOnDryRun,
`admissionReviewVersions` required). Matching: `rules` (operations, apiGroups,
apiVersions, resources incl. `*` and `pods/*`, scope), `namespaceSelector` (on the
namespace's labels; for a Namespace on its own labels; never skips other cluster-scoped
objects) and `objectSelector` (on the object's labels).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from .errors import Cause, field_duplicate, field_invalid, field_not_supported, field_required
from .resources import ResourceType
from .selectors import LabelSelector

JsonDict = dict[str, Any]

MUTATING_KEY = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
SIDE_EFFECTS = ["None", "NoneOnDryRun"]


def apply_defaults(config: JsonDict) -> None:
    for webhook in config.get("webhooks") or []:
        webhook.setdefault("failurePolicy", "Fail")
        webhook.setdefault("matchPolicy", "Equivalent")
        webhook.setdefault("namespaceSelector", {})
        webhook.setdefault("objectSelector", {})
        webhook.setdefault("timeoutSeconds", 10)
        webhook.setdefault("reinvocationPolicy", "Never")
        for rule in webhook.get("rules") or []:
            rule.setdefault("scope", "*")


def validate(config: JsonDict) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for index, webhook in enumerate(config.get("webhooks") or []):
        path = f"webhooks[{index}]"
        name = str(webhook.get("name") or "")
        if not name:
            causes.append(field_required(f"{path}.name"))
        elif len(name.split(".")) < 3:
            causes.append(
                field_invalid(
                    f"{path}.name",
                    name,
                    "should be a domain with at least three segments separated by dots",
                )
            )
        elif name in names:
            causes.append(field_duplicate(f"{path}.name", name))
        names.add(name)
        client = webhook.get("clientConfig") or {}
        if bool(client.get("url")) == bool(client.get("service")):
            causes.append(
                field_required(f"{path}.clientConfig", "exactly one of url or service is required")
            )
        elif client.get("url") and urlparse(str(client["url"])).scheme != "https":
            causes.append(
                field_invalid(
                    f"{path}.clientConfig.url",
                    client["url"],
                    "'https' is the only allowed URL scheme",
                )
            )
        side_effects = webhook.get("sideEffects")
        if side_effects is None:
            causes.append(field_required(f"{path}.sideEffects"))
        elif side_effects not in SIDE_EFFECTS:
            causes.append(field_not_supported(f"{path}.sideEffects", side_effects, SIDE_EFFECTS))
        if not webhook.get("admissionReviewVersions"):
            causes.append(field_required(f"{path}.admissionReviewVersions"))
        if webhook.get("failurePolicy") not in ("Fail", "Ignore"):
            causes.append(
                field_not_supported(
                    f"{path}.failurePolicy", webhook.get("failurePolicy"), ["Fail", "Ignore"]
                )
            )
        timeout = webhook.get("timeoutSeconds")
        if not isinstance(timeout, int) or not 1 <= timeout <= 30:
            causes.append(
                field_invalid(
                    f"{path}.timeoutSeconds",
                    timeout,
                    "the timeout value must be between 1 and 30 seconds",
                )
            )
    return causes


def _matches(pattern_list: list[str] | None, value: str) -> bool:
    return any(p in ("*", value) for p in pattern_list or [])


def rule_matches(rule: JsonDict, operation: str, rt: ResourceType, subresource: str) -> bool:
    """One RuleWithOperations against a request."""
    if not _matches(rule.get("operations"), operation):
        return False
    if not _matches(rule.get("apiGroups"), rt.group):
        return False
    if not _matches(rule.get("apiVersions"), rt.version):
        return False
    resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
    resources = rule.get("resources") or []
    wanted = any(
        r in ("*/*", resource)
        or (r == "*" and not subresource)
        or (r == f"{rt.plural}/*" and subresource)
        or (r == f"*/{subresource}" and subresource)
        for r in resources
    )
    if not wanted:
        return False
    scope = str(rule.get("scope", "*"))
    return scope == "*" or (scope == "Namespaced") == rt.namespaced


def webhook_applies(
    webhook: JsonDict,
    operation: str,
    rt: ResourceType,
    obj: JsonDict,
    namespace_labels: dict[str, str] | None,
) -> bool:
    """Whether a webhook is called for this request (rules, then both selectors)."""
    if not any(rule_matches(r, operation, rt, "") for r in webhook.get("rules") or []):
        return False
    if not LabelSelector.from_object(webhook.get("objectSelector")).matches_object(obj):
        return False
    namespace_selector = LabelSelector.from_object(webhook.get("namespaceSelector"))
    if rt.key == ("", "namespaces"):
        return namespace_selector.matches_object(obj)
    if rt.namespaced:
        return namespace_selector.matches(namespace_labels or {})
    return True
