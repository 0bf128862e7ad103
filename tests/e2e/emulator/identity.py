"""Who is asking: bearer tokens, the TokenRequest API, and the caller of each request.

A real apiserver authenticates every request; the emulator, by default, treats a request
without credentials as its administrator (`system:masters`), which is what every test
that does not care gets. Tests that act as someone else (a tenant's ServiceAccount, the
node agent with its pod-bound token) ask the TokenRequest API for a token, as on a real
cluster:

    POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token
    {"spec": {"boundObjectRef": {"kind": "Pod", "name": "...", "uid": "..."}}}

and send it as `Authorization: Bearer <token>`. The user is
`system:serviceaccount:<ns>:<name>` with the groups `system:serviceaccounts`,
`system:serviceaccounts:<ns>` and `system:authenticated`; a token bound to a pod carries
`authentication.kubernetes.io/pod-name`, `pod-uid` and, for a pod bound to a node,
`authentication.kubernetes.io/node-name` in `extra`, as Kubernetes >= 1.30 does. An
unknown token is 401 Unauthorized.

Not emulated: RBAC (every caller may do everything it asks; what the admission policies
refuse is refused), token expiry and audiences.
"""

from __future__ import annotations

import secrets
from contextvars import ContextVar
from typing import Any

JsonDict = dict[str, Any]

ADMIN: JsonDict = {
    "username": "migweaver-emulator",
    "groups": ["system:masters", "system:authenticated"],
    "extra": {},
}
NODE_KEY = "authentication.kubernetes.io/node-name"

current_user: ContextVar[JsonDict] = ContextVar("emulator_user", default=ADMIN)
"""The caller of the request being served (each aiohttp request runs in its own task)."""


class Tokens:
    """Tokens handed out by the TokenRequest API and the users they stand for."""

    def __init__(self) -> None:
        self._users: dict[str, JsonDict] = {}

    def user(self, token: str) -> JsonDict | None:
        return self._users.get(token)

    def issue(self, namespace: str, account: str, pod: JsonDict | None) -> str:
        extra: dict[str, list[str]] = {}
        if pod is not None:
            meta = pod.get("metadata") or {}
            extra["authentication.kubernetes.io/pod-name"] = [str(meta.get("name") or "")]
            extra["authentication.kubernetes.io/pod-uid"] = [str(meta.get("uid") or "")]
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                extra[NODE_KEY] = [str(node)]
        token = secrets.token_urlsafe(24)
        self._users[token] = {
            "username": f"system:serviceaccount:{namespace}:{account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "extra": extra,
        }
        return token
