"""Mutating admission: the emulator calls webhooks as the apiserver does, over HTTPS.

For a CREATE that a MutatingWebhookConfiguration matches (configurations in name order,
webhooks in their order), it POSTs an `admission.k8s.io/v1` AdmissionReview to
`clientConfig.url` (plus `?timeout=Ns`), verifying the server certificate against
`caBundle` (the system trust store when empty), within `timeoutSeconds`. An `allowed`
answer's base64 `JSONPatch` is applied to the object; a denial becomes the webhook's
status (`admission webhook "x" denied the request: ...`, code >= 400); a failure to call
(refused, timeout, TLS, non-200, malformed review) rejects with 500 InternalError under
`failurePolicy: Fail` and admits the object unchanged under `Ignore`.

`matchConditions` (CEL, with cel-python: `policies.conditions_hold`) decide after the
rules and selectors; an evaluation error counts under the failurePolicy.

Not emulated: admission of UPDATE and DELETE (matching webhooks are only called for
CREATE), `clientConfig.service` (no cluster DNS here: a service reference counts as a
failure to call), `reinvocationPolicy`, validating webhooks.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
import uuid
from typing import Any

import aiohttp

from .errors import StatusError, internal_error
from .identity import current_user
from .patches import json_patch
from .policies import conditions_hold
from .resources import ResourceType
from .store import Store
from .webhooks import MUTATING_KEY, webhook_applies

JsonDict = dict[str, Any]

log = logging.getLogger("emulator.admission")


class CallFailed(Exception):
    """The webhook could not be called or answered nonsense: failurePolicy decides.
    `prefix`: the message follows "failed to call webhook: Post URL:" (a call was made)."""

    def __init__(self, message: str, *, prefix: bool = True) -> None:
        super().__init__(message)
        self.prefix = prefix


class Admission:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def mutate_create(
        self, rt: ResourceType, namespace: str | None, obj: JsonDict
    ) -> JsonDict:
        """Run every matching mutating webhook over a new object; the admitted object."""
        configs = sorted(self._store.items(MUTATING_KEY), key=lambda c: str(c["metadata"]["name"]))
        labels = self._store.namespace_labels(namespace) if namespace else None
        for config in configs:
            for webhook in list(config.get("webhooks") or []):
                if webhook_applies(webhook, "CREATE", rt, obj, labels) and self._conditions_hold(
                    webhook, rt, namespace, obj
                ):
                    obj = await self._call(webhook, rt, namespace, obj)
        return obj

    def _conditions_hold(
        self, webhook: JsonDict, rt: ResourceType, namespace: str | None, obj: JsonDict
    ) -> bool:
        """matchConditions (CEL): all true to call; an error counts under failurePolicy."""
        conditions = list(webhook.get("matchConditions") or [])
        if not conditions:
            return True
        request = _review("", rt, namespace, obj)["request"]
        try:
            return conditions_hold(conditions, request, obj, None)
        except Exception as exc:  # a CEL error: the apiserver applies the failurePolicy
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return False
            raise internal_error(
                f'failed calling webhook "{webhook["name"]}": matchCondition failed: {exc}'
            ) from exc

    async def _call(
        self, webhook: JsonDict, rt: ResourceType, namespace: str | None, obj: JsonDict
    ) -> JsonDict:
        name = str(webhook["name"])
        client = webhook.get("clientConfig") or {}
        timeout = int(webhook.get("timeoutSeconds") or 10)
        url = str(client.get("url") or "")
        call_url = f"{url}?timeout={timeout}s"
        uid = str(uuid.uuid4())
        try:
            if not url:
                raise CallFailed("only clientConfig.url is supported by the emulator")
            review = _review(uid, rt, namespace, obj)
            answer = await _post(call_url, review, str(client.get("caBundle") or ""), timeout)
            response = answer.get("response") or {}
            if response.get("uid") != uid:
                raise CallFailed(f"expected response.uid={uid!r}, got {response.get('uid')!r}")
        except CallFailed as exc:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                log.warning("webhook %s failed, ignored by its failurePolicy: %s", name, exc)
                return obj
            called = f'failed to call webhook: Post "{call_url}": ' if exc.prefix else ""
            raise internal_error(f'failed calling webhook "{name}": {called}{exc}') from exc
        if not response.get("allowed"):
            raise _denied(name, response.get("status") or {})
        patch = response.get("patch")
        if not patch:
            return obj
        if response.get("patchType") != "JSONPatch":
            patch_type = response.get("patchType")
            raise internal_error(f'webhook "{name}": unsupported patchType {patch_type!r}')
        try:
            operations = json.loads(base64.b64decode(patch))
        except (binascii.Error, ValueError) as exc:
            raise internal_error(f'webhook "{name}": invalid patch: {exc}') from exc
        try:
            return json_patch(obj, operations)
        except StatusError as exc:
            raise internal_error(f'webhook "{name}": JSON patch failed: {exc.message}') from exc


def _review(uid: str, rt: ResourceType, namespace: str | None, obj: JsonDict) -> JsonDict:
    kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    resource = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    request: JsonDict = {
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": (obj.get("metadata") or {}).get("name", ""),
        "operation": "CREATE",
        "userInfo": current_user.get(),
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if namespace:
        request["namespace"] = namespace
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def _post(url: str, review: JsonDict, ca_bundle: str, timeout_s: int) -> JsonDict:
    try:
        context = ssl.create_default_context()
        if ca_bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
    except (ValueError, ssl.SSLError, binascii.Error) as exc:
        # Kubernetes' wording: the client for the webhook cannot even be built.
        raise CallFailed(
            "could not get REST client: unable to load root certificates: "
            f"unable to parse bytes as PEM block ({exc})",
            prefix=False,
        ) from exc
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, json=review, ssl=context) as response,
        ):
            if response.status != 200:
                raise CallFailed(f"the server answered HTTP {response.status}")
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = "context deadline exceeded" if isinstance(exc, TimeoutError) else str(exc)
        raise CallFailed(reason) from exc
    if not isinstance(answer, dict):
        raise CallFailed("the answer is not an AdmissionReview")
    return answer


def _denied(name: str, status: JsonDict) -> StatusError:
    """A denial, as the apiserver's webhookerrors.ToStatusErr shapes it."""
    denied_by = f'admission webhook "{name}" denied the request'
    code = max(int(status.get("code") or 0), 400)
    if status.get("message"):
        message = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied_by}: {status['reason']}"
    else:
        message = f"{denied_by} without explanation"
    return StatusError(code, str(status.get("reason") or ""), message)
