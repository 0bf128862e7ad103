"""The HTTP side: routes a request to discovery, the store, admission or a watch.

URL shapes, as on a real apiserver:
  /api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]
  /apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]
  /api/v1/namespaces/<name>[/status]      (the Namespace objects themselves)
A namespaced kind listed without a namespace (`/api/v1/pods`) lists across namespaces.
Not supported (400): `dryRun`. Ignored: `limit`/`continue` (a server may return
everything at once), `fieldManager`, `pretty`, `propagationPolicy`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from aiohttp import web

from . import discovery
from .admission import Admission
from .errors import StatusError, bad_request, method_not_allowed, not_found
from .identity import ADMIN, Tokens, current_user
from .patches import apply_patch
from .resources import Registry, ResourceType
from .selectors import FieldSelector, LabelSelector, object_filter
from .store import Store
from .watch import WatchRequest, parse_bool

JsonDict = dict[str, Any]

log = logging.getLogger("emulator")

_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True, slots=True)
class Target:
    """What a resource URL names."""

    group: str
    version: str
    namespace: str | None
    plural: str
    name: str | None
    subresource: str | None


def parse_path(path: str) -> tuple[str, str, list[str]] | None:
    """(group, version, the rest) of a resource URL; None for anything else."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        return "", parts[1], parts[2:]
    if len(parts) >= 3 and parts[0] == "apis":
        return parts[1], parts[2], parts[3:]
    return None


def parse_target(group: str, version: str, rest: list[str]) -> Target | None:
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    else:
        namespace = None
    if not 1 <= len(rest) <= 3:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return Target(group, version, namespace, rest[0], name, subresource)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        if "yaml" in request.content_type and "patch" not in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


class Emulator:
    """An in-process Kubernetes API server for tests, on 127.0.0.1 and a free port.

    Use as `async with Emulator() as api: ... api.url ...`; `stop()` ends every watch
    and closes the listening socket.
    """

    def __init__(self, *, history_size: int = 10_000, bookmark_interval: float = 60.0) -> None:
        self.registry = Registry()
        self.store = Store(self.registry, history_size=history_size)
        self.admission = Admission(self.store)
        self.tokens = Tokens()
        self.bookmark_interval = bookmark_interval
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a watch whose client disconnects stops at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.host, self.port = host, int(sockets[0].getsockname()[1])
        log.debug("API emulator listening on %s", self.url)

    async def stop(self) -> None:
        self.store.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kubeconfig(self) -> JsonDict:
        """A kubeconfig for this server: plain HTTP, no credentials."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}
            ],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig()))
        return path

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            current_user.set(self._authenticate(request))
            return await self._route(request)
        except StatusError as exc:
            return _json(exc.body(), exc.code)
        except Exception as exc:
            log.exception("emulator failure on %s %s", request.method, request.path)
            error = StatusError(500, "InternalError", f"emulator failure: {exc!r}")
            return _json(error.body(), 500)

    def _authenticate(self, request: web.Request) -> JsonDict:
        """The caller (`identity`): the administrator without credentials."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ADMIN
        user = self.tokens.user(token.strip())
        if user is None:
            raise StatusError(401, "Unauthorized", "Unauthorized")
        return user

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET":
            document = self._discovery(path)
            if document is not None:
                return _json(document)
        parsed = parse_path(path)
        if parsed is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        group, version, rest = parsed
        target = parse_target(group, version, rest)
        rt = self.registry.lookup(group, version, target.plural) if target else None
        if target is None or rt is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        if target.namespace is not None and not rt.namespaced:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        if "dryRun" in request.query:
            raise bad_request("dryRun is not supported by the migweaver API emulator")
        if target.name is None:
            return await self._collection(request, rt, target)
        if target.subresource is None:
            return await self._item(request, rt, target)
        return await self._subresource(request, rt, target)

    def _token_request(self, namespace: str, account: str, body: Any) -> JsonDict:
        """TokenRequest (`identity`): a token for the ServiceAccount, bound to a pod if
        `spec.boundObjectRef` names one."""
        accounts = self.registry.lookup("", "v1", "serviceaccounts")
        assert accounts is not None
        self.store.get(accounts, namespace, account)  # 404 when there is no such account
        spec = (body or {}).get("spec") or {} if isinstance(body, dict) else {}
        pod = _bound_pod(self.store, self.registry, namespace, spec.get("boundObjectRef"))
        if (
            pod is not None
            and (pod.get("spec") or {}).get("serviceAccountName", "default") != account
        ):
            raise bad_request(
                f'cannot bind token for serviceaccount "{account}" to pod running with '
                "different serviceaccount name."
            )
        token = self.tokens.issue(namespace, account, pod)
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": account, "namespace": namespace},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"},
        }

    def _discovery(self, path: str) -> JsonDict | None:
        if path == "/version":
            return discovery.VERSION_INFO
        if path == "/api":
            return discovery.api_versions(f"{self.host}:{self.port}")
        if path == "/apis":
            return discovery.api_group_list(self.registry)
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "api":
            return discovery.resource_list(self.registry, "", parts[1]) or _missing()
        if len(parts) == 2 and parts[0] == "apis":
            return discovery.api_group(self.registry, parts[1]) or _missing()
        if len(parts) == 3 and parts[0] == "apis":
            return discovery.resource_list(self.registry, parts[1], parts[2]) or _missing()
        return None

    def _filter(self, request: web.Request, rt: ResourceType) -> Any:
        labels = LabelSelector.parse(request.query.get("labelSelector"))
        fields = FieldSelector.parse(request.query.get("fieldSelector"), rt)
        return object_filter(labels, fields)

    async def _collection(
        self, request: web.Request, rt: ResourceType, target: Target
    ) -> web.StreamResponse:
        namespace = target.namespace
        if request.method == "GET":
            match = self._filter(request, rt)
            if parse_bool(request.query.get("watch")):
                watch = WatchRequest(
                    self.store, rt, namespace, match, dict(request.query), self.bookmark_interval
                )
                return await watch.stream(request)
            items, rv = self.store.select(rt, namespace, match)
            if not rt.custom:
                # Typed lists of built-in kinds carry no kind/apiVersion per item.
                for item in items:
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
            return _json(
                {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            )
        if request.method == "POST":
            if rt.namespaced and namespace is None:
                raise method_not_allowed()
            obj = self.store.prepare_create(rt, namespace, await _body(request))
            obj = await self.admission.mutate_create(rt, namespace, obj)
            return _json(self.store.create(rt, namespace, obj), 201)
        if request.method == "DELETE":
            deleted = self.store.delete_collection(rt, namespace, self._filter(request, rt))
            return _json(
                {
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self.store.rv)},
                    "items": deleted,
                }
            )
        raise method_not_allowed()

    async def _item(
        self, request: web.Request, rt: ResourceType, target: Target
    ) -> web.StreamResponse:
        assert target.name is not None
        namespace, name = target.namespace, target.name
        if rt.namespaced and namespace is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        if request.method == "GET":
            return _json(self.store.get(rt, namespace, name))
        if request.method == "PUT":
            return _json(self.store.replace(rt, namespace, name, await _body(request)))
        if request.method == "PATCH":
            return _json(await self._patch(request, rt, target, None))
        if request.method == "DELETE":
            options = await _body(request)
            query_options = {}
            if "preconditions.resourceVersion" in request.query:
                query_options["resourceVersion"] = request.query["preconditions.resourceVersion"]
            if isinstance(options, dict) and options.get("preconditions"):
                query_options.update(options["preconditions"])
            return _json(self.store.delete(rt, namespace, name, {"preconditions": query_options}))
        raise method_not_allowed()

    async def _patch(
        self, request: web.Request, rt: ResourceType, target: Target, subresource: str | None
    ) -> JsonDict:
        assert target.name is not None
        body = await _body(request)
        content_type = request.headers.get("Content-Type", "")
        return self.store.patch(
            rt,
            target.namespace,
            target.name,
            lambda current: apply_patch(current, body, content_type, rt.custom),
            subresource,
        )

    async def _subresource(
        self, request: web.Request, rt: ResourceType, target: Target
    ) -> web.StreamResponse:
        assert target.name is not None
        if target.subresource == "status" and rt.status_subresource:
            if request.method == "GET":
                return _json(self.store.get(rt, target.namespace, target.name))
            if request.method == "PUT":
                body = await _body(request)
                return _json(self.store.replace(rt, target.namespace, target.name, body, "status"))
            if request.method == "PATCH":
                return _json(await self._patch(request, rt, target, "status"))
            raise method_not_allowed()
        if target.subresource == "token" and rt.key == ("", "serviceaccounts"):
            if request.method != "POST" or target.namespace is None:
                raise method_not_allowed()
            return _json(
                self._token_request(target.namespace, target.name, await _body(request)), 201
            )
        if target.subresource == "binding" and rt.key == ("", "pods"):
            if request.method != "POST" or target.namespace is None:
                raise method_not_allowed()
            self.store.bind(target.namespace, target.name, await _body(request))
            return _json(_SUCCESS, 201)
        if target.subresource == "eviction" and rt.key == ("", "pods"):
            if request.method != "POST" or target.namespace is None:
                raise method_not_allowed()
            self.store.evict(target.namespace, target.name, await _body(request))
            return _json(_SUCCESS, 201)
        raise not_found(rt.group, f"{rt.plural}/{target.subresource}", target.name)


_SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
"""The answer to a binding or an eviction."""


def _bound_pod(store: Store, registry: Registry, namespace: str, ref: Any) -> JsonDict | None:
    if not isinstance(ref, dict) or ref.get("kind") != "Pod":
        return None
    rt = registry.lookup("", "v1", "pods")
    assert rt is not None
    pod = store.get(rt, namespace, str(ref.get("name") or ""))
    if ref.get("uid") and (pod.get("metadata") or {}).get("uid") != ref["uid"]:
        raise StatusError(
            409,
            "Conflict",
            f"the UID in the bound object reference ({ref['uid']}) does not match "
            "the UID in record",
        )
    return pod


def _missing() -> NoReturn:
    raise StatusError(404, "NotFound", "the server could not find the requested resource")
