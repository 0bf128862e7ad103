"""`/healthz` and `/readyz` of the operator.

`/healthz` answers 200 while the work loop, the ConfigMap watch and kopf run (a dead one
means a restart is due); `/readyz` once kopf is ready (its startup done) and, with the
webhook, its server listens (`main._when_ready`). A standby replica is ready too: it serves
the webhook and takes over when the active one goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from migweaver.k8s.serving import probe_app as _probe_app
from migweaver.k8s.serving import serving

__all__ = ["probe_app", "serving"]


def probe_app(alive: Callable[[], bool], ready: asyncio.Event) -> web.Application:
    return _probe_app(
        alive,
        ready.is_set,
        dead="the operator's work loop stopped",
        unready="not started yet",
    )
