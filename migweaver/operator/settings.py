"""Every setting of the operator in one place: the command's options and kopf's settings."""

from __future__ import annotations

import logging
import os
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
    lease: str = "migweaver-operator"
    """The Lease (in `namespace`) the replicas elect the leader in."""
    lease_duration_s: int = 15
    """A killed leader's Lease expires after this long; then another replica leads."""
    lease_renew_s: float = 2.0
    """How often each replica looks at the Lease (the leader renews it)."""
    node_vanished_grace_s: float = 30.0
    """A pod released to a Node that no longer exists is evicted (or, without a controller,
    reported) once it has been so for this long: a re-registered Node costs nothing."""
    standalone: bool = False
    """No leader election: this replica always leads (a single replica)."""
    standby_poll_s: float = 1.0
    """How often a standby replica's work loop asks whether it leads now (no API call)."""
    write_concurrency: int = 32
    """API writes a round has in flight at once (releases, reservations, layout specs):
    enough to hide the round trip, few enough not to crowd out other clients (the API
    server's priority and fairness queues answer 429 beyond their share, which is retried
    with backoff)."""


def kopf_settings(options: OperatorOptions) -> kopf.OperatorSettings:
    """Kopf's settings for the operator: no peering, quiet Events, bounded timeouts.

    Kopf runs standalone on every replica: its handlers only notify the work loop, which
    makes no round unless its replica holds the Lease (`operator/leader.py`), and the
    webhook must answer on every replica the Service sends requests to.
    """
    del options  # every setting below is the same for every replica
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # Kopf would post an Event for every handler's log line; migweaver posts its own.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = COMPONENT
    # Watches end and resume regularly, so a silently broken connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings
