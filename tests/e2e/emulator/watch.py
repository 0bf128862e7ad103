"""Watch streams: newline-delimited JSON events, as the apiserver's watch cache sends them.

- Start: without `resourceVersion` (or with "0") a synthetic ADDED for every current
  object, then changes; with one, every retained change after it, or a single ERROR
  event carrying a 410 Expired Status when the history no longer reaches back that far
  (the client must re-list). `sendInitialEvents=true` (with
  `resourceVersionMatch=NotOlderThan`) sends the ADDEDs, then a BOOKMARK annotated
  `k8s.io/initial-events-end`.
- Selectors filter as the watch cache does: an object that starts matching arrives as
  ADDED, one that stops matching as DELETED carrying its state *before* the change (the
  last one the watch matched) with the change's resourceVersion.
- `timeoutSeconds` closes the stream (default 1800 s, the apiserver's minimum request
  timeout); with `allowWatchBookmarks` the watch cache's rule for BOOKMARKs: one every
  `bookmark_interval` (a minute) and one 2 s before the deadline, each sent only when
  the current resourceVersion is past the last one the watch sent (a quiet watch gets
  none, as a Kubernetes v1.36 apiserver's).
- A client that disconnects ends the stream; so does the emulator stopping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import StatusError, bad_request
from .resources import ResourceType
from .store import Change, Store, present

JsonDict = dict[str, Any]

DEFAULT_TIMEOUT_S = 1800.0


def visible(change: Change, match: Callable[[JsonDict], bool]) -> str | None:
    """The event type a watch with this filter reports for a change (None: nothing)."""
    now = match(change.obj)
    if change.type != "MODIFIED":
        return change.type if now else None
    before = change.old is not None and match(change.old)
    if before and now:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


class WatchRequest:
    """One watch: its start point, filter, and stream parameters."""

    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        match: Callable[[JsonDict], bool],
        query: dict[str, str],
        bookmark_interval: float,
    ) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.match = match
        self.rv = query.get("resourceVersion", "")
        self.bookmarks = parse_bool(query.get("allowWatchBookmarks"))
        self.initial_events = parse_bool(query.get("sendInitialEvents"))
        if self.initial_events and query.get("resourceVersionMatch") != "NotOlderThan":
            raise bad_request(
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
            )
        try:
            self.timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
            start = int(self.rv) if self.rv else 0
        except ValueError as exc:
            raise bad_request(f"invalid watch parameter: {exc}") from exc
        self.start = start
        self.bookmark_interval = bookmark_interval
        self.sent_rv = start
        """The newest resourceVersion this watch has sent (events or bookmarks)."""

    def _in_scope(self, obj: JsonDict) -> bool:
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        return self.namespace is None or namespace == self.namespace

    def _filter(self, obj: JsonDict) -> bool:
        return self._in_scope(obj) and self.match(obj)

    def _event(self, type_: str, obj: JsonDict) -> JsonDict:
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv.isdigit():
            self.sent_rv = max(self.sent_rv, int(rv))
        return {"type": type_, "object": present(self.rt, obj)}

    def _change_event(self, kind: str, change: Change) -> JsonDict:
        """The event of a change; an object that left the selector is sent as it was."""
        if kind == "DELETED" and change.type == "MODIFIED" and change.old is not None:
            old = json.loads(json.dumps(change.old))
            old.setdefault("metadata", {})["resourceVersion"] = (
                change.obj.get("metadata") or {}
            ).get("resourceVersion")
            return self._event(kind, old)
        return self._event(kind, change.obj)

    def _bookmark(self, initial_end: bool = False) -> JsonDict:
        self.sent_rv = max(self.sent_rv, self.store.rv)
        meta: JsonDict = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta},
        }

    async def stream(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        key = self.rt.key

        def listen(change: Change | None) -> None:
            if change is None or change.key == key:
                queue.put_nowait(change)

        # Read the starting point and subscribe in one synchronous step: no change can
        # fall between them.
        first: list[JsonDict] = []
        try:
            if self.rv in ("", "0") or self.initial_events:
                items = [o for o in self.store.items(key, self.namespace) if self.match(o)]
                first = [self._event("ADDED", o) for o in items]
                if self.initial_events:
                    first.append(self._bookmark(initial_end=True))
            else:
                for change in self.store.changes_after(self.start, key):
                    kind = visible(change, self._filter)
                    if kind:
                        first.append(self._change_event(kind, change))
        except StatusError as exc:
            if exc.code != 410:
                raise
            first = [{"type": "ERROR", "object": exc.body()}]
            unsubscribe: Callable[[], None] | None = None
        else:
            unsubscribe = self.store.subscribe(listen)

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for event in first:
                await _send(response, event)
            if unsubscribe is not None:
                await self._follow(request, response, queue)
            await response.write_eof()
        except ConnectionResetError:
            # The client went away mid-write (aiohttp's ClientConnectionResetError is one):
            # the stream is over, nothing to report.
            pass
        finally:
            if unsubscribe is not None:
                unsubscribe()
        return response

    async def _follow(
        self,
        request: web.Request,
        response: web.StreamResponse,
        queue: asyncio.Queue[Change | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        next_bookmark = self._next_bookmark(loop.time(), deadline)
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                return
            wait = remaining if next_bookmark is None else max(0.0, next_bookmark - now)
            try:
                change = await asyncio.wait_for(queue.get(), timeout=min(wait, remaining))
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                now = loop.time()
                if next_bookmark is not None and now >= next_bookmark and now < deadline:
                    if self.store.rv > self.sent_rv:
                        await _send(response, self._bookmark())
                    next_bookmark = self._next_bookmark(now, deadline)
                continue
            if change is None:
                return  # the emulator is stopping
            kind = visible(change, self._filter)
            if kind:
                await _send(response, self._change_event(kind, change))

    def _next_bookmark(self, now: float, deadline: float) -> float | None:
        """When the next BOOKMARK is due (the watch cache's `nextBookmarkTime`)."""
        if not self.bookmarks:
            return None
        at = min(now + self.bookmark_interval, deadline - 2.0)
        return at if at > now else None


async def _send(response: web.StreamResponse, event: JsonDict) -> None:
    await response.write((json.dumps(event, separators=(",", ":")) + "\n").encode())


def parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the apiserver uses for query flags."""
    return (value or "").strip() in {"1", "t", "T", "true", "TRUE", "True"}
