"""Every setting of the operator in one place: the command's options and kopf's settings."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import kopf

DEFAULT_NAMESPACE = "migweaver-system"
COMPONENT = "migweaver-operator"


def default_namespace() -> str:
    """Where the geometry ConfigMap lives: the operator's own namespace."""
    return os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """`migweaver operator`'s flags (docs/operator.md)."""

    kubeconfig: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    batch_idle: float = 1.0
    """Plan when no new gated pod arrived for this long (seconds)..."""
    batch_max: float = 5.0
    """...or when the oldest pod of the batch has waited this long."""
    resync_s: float = 30.0
    """A full round at least this often, even without any event (ended pods, starvation)."""
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 31993
    webhook: bool = True
    webhook_address: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_tls_dir: str | None = None
    webhook_self_signed: bool = False
    probe_address: str = "0.0.0.0"
    probe_port: int = 8080
    peering: str = "migweaver"
    standalone: bool = False
    priority: int | None = None
    """Kopf peering priority; None: a random one, so two replicas never tie (kopf pauses
    every replica of the same priority)."""
    standby_poll_s: float = 5.0
    """How often a standby replica reads the peering object to see whether it leads now."""


def peering_priority(options: OperatorOptions) -> int:
    if options.priority is not None:
        return options.priority
    # Not security-relevant: only breaks ties between replicas.
    return random.randint(1, 2**31 - 1)


def kopf_settings(options: OperatorOptions) -> kopf.OperatorSettings:
    """Kopf's settings for the operator: peering, quiet Events, bounded timeouts."""
    settings = kopf.OperatorSettings()
    settings.peering.name = options.peering
    settings.peering.clusterwide = True
    settings.peering.standalone = options.standalone
    settings.peering.mandatory = not options.standalone
    settings.peering.priority = peering_priority(options)
    # Kopf would post an Event for every handler's log line; migweaver posts its own.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = COMPONENT
    # Watches end and resume regularly, so a silently broken connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings
