"""The geometry ConfigMap (`migweaver-device-config`, key `config.yaml`) in the operator's
namespace, watched by name with kubernetes_asyncio (kopf would watch every ConfigMap of
the cluster). Each version goes to `Operator.reload_config`, which keeps the last valid
configuration when a new one is invalid (`core.config.reload`).

The watch starts from the resourceVersion of its own list, never from none or from an
older one: a real API server answers those from a watch cache that may lag (504 "Too large
resource version") or has forgotten them (410 Gone). Either answer, and the server ending
the watch, lead to a new list and a watch from it.
"""

from __future__ import annotations

import asyncio
import contextlib

from migweaver.core.config import CONFIGMAP_NAME
from migweaver.k8s.client import ApiError
from migweaver.logs import get_logger
from migweaver.operator.rounds import Operator

log = get_logger("migweaver.operator")

RELIST_STATUSES = frozenset({410, 504})
"""Answers that say "this resourceVersion cannot be watched from": list again."""


async def watch_config(
    operator: Operator, stop: asyncio.Event, timeout_s: int = 300, retry_s: float = 2.0
) -> None:
    """List, then watch, the ConfigMap until `stop`; a broken watch lists again."""
    configmaps = operator.configmaps
    while not stop.is_set():
        try:
            resource_version = await operator.refresh_config()
            async for kind, obj in configmaps.watch(CONFIGMAP_NAME, resource_version, timeout_s):
                if kind in {"ADDED", "MODIFIED", "DELETED"}:
                    await operator.reload_config(None if kind == "DELETED" else obj)
            continue  # the server ended the watch: list again
        except ApiError as exc:
            if exc.status in RELIST_STATUSES:
                log.info(
                    "the geometry ConfigMap watch expired: listing again",
                    configmap=CONFIGMAP_NAME,
                    error=str(exc),
                )
                pause = 0.2  # not a retry of the same watch: the next one has a new list
            else:
                log.warning(
                    "cannot watch the geometry ConfigMap", configmap=CONFIGMAP_NAME, error=str(exc)
                )
                pause = retry_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
