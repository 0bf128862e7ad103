"""The geometry ConfigMap (`migweaver-device-config`, key `config.yaml`) in the operator's
namespace, watched by name with kubernetes_asyncio (kopf would watch every ConfigMap of
the cluster). Each version goes to `Operator.reload_config`, which keeps the last valid
configuration when a new one is invalid (`core.config.reload`)."""

from __future__ import annotations

import asyncio
import contextlib

from migweaver.core.config import CONFIGMAP_NAME
from migweaver.k8s.client import ApiError
from migweaver.logs import get_logger
from migweaver.operator.rounds import Operator

log = get_logger("migweaver.operator")


async def watch_config(operator: Operator, stop: asyncio.Event, timeout_s: int = 300) -> None:
    """Read, then watch, the ConfigMap until `stop`; a broken watch starts over."""
    configmaps = operator.configmaps
    while not stop.is_set():
        try:
            await operator.refresh_config()
            async for kind, obj in configmaps.watch(CONFIGMAP_NAME, timeout_s):
                await operator.reload_config(None if kind == "DELETED" else obj)
        except ApiError as exc:
            log.warning(
                "cannot watch the geometry ConfigMap", configmap=CONFIGMAP_NAME, error=str(exc)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
