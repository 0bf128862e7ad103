"""List, then watch: every object of a kind, as plain dicts, to whoever keeps them.

What client-go calls an informer, in its simplest form: `inform` lists the objects (the
caller's `on_list`), watches from the list's resourceVersion (`on_event` per event),
resumes from the last version seen when the server ends the watch, and lists again after
410 Gone or any failure (after `retry_s`). It runs until cancelled.

Used by the operator for pods and MigLayouts, the two kinds a burst changes by the
thousand: kopf's per-object machinery (a worker, a log line and a handler call for each
event) lagged seconds behind a 500-pod burst on a loaded machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from migweaver.k8s.client import ApiError, JsonDict, Listing
from migweaver.logs import get_logger

log = get_logger(__name__)

GONE = 410


def _version(obj: JsonDict) -> str | None:
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return str(version) if version else None


async def inform(
    name: str,
    list_objects: Callable[[], Awaitable[Listing]],
    watch: Callable[[str], AsyncIterator[tuple[str, JsonDict]]],
    on_list: Callable[[Listing], None],
    on_event: Callable[[str, JsonDict], None],
    *,
    retry_s: float = 1.0,
) -> None:
    """Feed `on_list` and `on_event` with `name`'s objects until cancelled (see above)."""
    version: str | None = None
    while True:
        try:
            if version is None:
                listing = await list_objects()
                on_list(listing)
                version = listing.resource_version
            async for kind, obj in watch(version):
                version = _version(obj) or version
                if kind != "BOOKMARK":
                    on_event(kind, obj)
        except ApiError as exc:
            version = None
            if exc.status != GONE:
                log.warning(
                    "watch failed: listing again", kind=name, error=str(exc), after_s=retry_s
                )
                await asyncio.sleep(retry_s)
