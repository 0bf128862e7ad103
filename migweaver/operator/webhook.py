"""The mutating admission webhook, served by the operator through kopf.

`register(registry)` adds the handler `gate-gpu-pods`, which kopf serves at
`/gate-gpu-pods` (kopf routes `POST <server path>/<handler id>` to that handler). On a
pod's CREATE it asks `migweaver.core.operator.admission.mutate_pod` what to change: the
scheduling gate `migweaver.io/placement` for a pod that asks for a GPU, and
`nvidia.com/gpu: <defaultGPUNum>` for containers that name only memory or cores.

How the change reaches the apiserver: kopf answers admission reviews with a JSON patch
that it computes itself, as the difference between the object it received and that
object after the handler's `patch` (a merge-style dict, then the callables in
`patch.fns`) has been applied. The merge-style dict replaces lists whole, so the
handler appends a callable that applies the core's `add` operations to kopf's copy of
the pod; kopf's diff then yields `add /spec/schedulingGates` (or `.../schedulingGates/1`
after existing gates) and `add .../limits/nvidia.com~1gpu`, computed against the very
object under review.

`configure_server(settings, ...)` sets kopf's webhook server: HTTPS on `address:port`
with `tls.crt` / `tls.key` from `tls_dir` (the keys of a `kubernetes.io/tls` Secret
mounted as a volume; kopf re-reads them when they change), or a self-signed certificate
for development (needs the `cryptography` package: `pip install 'migweaver[webhook-dev]'`).
Kopf never creates or patches the MutatingWebhookConfiguration: the manifests ship it
(`manifests/webhook.yaml`), with its selectors, failure policy and CA bundle.
"""

from __future__ import annotations

import base64
import datetime
import importlib.util
import ipaddress
import logging
import socket
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Final

import kopf

from migweaver.core.operator.admission import Mutation, apply_operations, mutate_pod
from migweaver.core.resources.requests import DEFAULTS, RequestDefaults
from migweaver.logs import get_logger

__all__ = [
    "HANDLER_ID",
    "TLS_CA",
    "TLS_CERT",
    "TLS_KEY",
    "WEBHOOK_PATH",
    "SelfSignedWebhookServer",
    "configure_server",
    "handle_review",
    "register",
    "self_signed_certificate",
]

HANDLER_ID: Final = "gate-gpu-pods"
WEBHOOK_PATH: Final = f"/{HANDLER_ID}"
"""The URL path of the handler on the webhook server (kopf: `/<handler id>`)."""

# The keys of a `kubernetes.io/tls` Secret (cert-manager adds `ca.crt`).
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
TLS_CA: Final = "ca.crt"

SELF_SIGNED_DAYS: Final = 30

log = get_logger(__name__)


def register(
    registry: kopf.OperatorRegistry,
    *,
    defaults: Callable[[], RequestDefaults] | None = None,
) -> None:
    """Register the mutating handler `gate-gpu-pods` for pod CREATE in `registry`.

    `defaults` returns the resource names and `defaultGPUNum` in force (the geometry
    ConfigMap can change them at run time); without it, HAMi's stock defaults apply.
    """
    current = defaults if defaults is not None else _stock_defaults

    @kopf.on.mutate("v1", "pods", id=HANDLER_ID, operations=["CREATE"], registry=registry)
    async def gate_gpu_pods(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        warnings: list[str],
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **kwargs: Any,
    ) -> None:
        handle_review(body, patch, kwargs.get("operation"), warnings, current, logger)


def handle_review(
    body: kopf.Body,
    patch: kopf.Patch,
    operation: str | None,
    warnings: list[str],
    defaults: Callable[[], RequestDefaults],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> Mutation | None:
    """Put the pod's mutation into kopf's `patch`; never raises.

    An exception from a kopf admission handler becomes a denial, which would refuse the
    pod: any failure here is logged and the pod admitted unchanged instead, as the
    webhook's `failurePolicy: Ignore` does when the operator cannot be reached.
    """
    if operation != "CREATE":
        return None  # the shipped configuration sends CREATE only
    try:
        mutation = mutate_pod(body, defaults())
        if mutation.changed:
            operations = mutation.operations

            def apply(raw: Any) -> None:
                apply_operations(raw, operations)

            patch.fns.append(apply)
        if mutation.warning:
            warnings.append(mutation.warning)
    except Exception:
        logger.exception("webhook: the pod is admitted unchanged after an unexpected error")
        return None
    if mutation.changed:
        logger.info(f"webhook: {mutation.reason}")
    elif mutation.asks_gpu:
        logger.info(f"webhook: unchanged: {mutation.reason}")
    else:
        logger.debug(f"webhook: unchanged: {mutation.reason}")
    return mutation


def _stock_defaults() -> RequestDefaults:
    return DEFAULTS


# --- the server ---------------------------------------------------------------------------


def configure_server(
    settings: kopf.OperatorSettings,
    *,
    address: str,
    port: int,
    tls_dir: str | None,
    self_signed: bool,
    extra_sans: Sequence[str] = (),
) -> None:
    """Serve the webhook over HTTPS on `address:port`; kopf does not manage its configuration.

    Exactly one of `tls_dir` (holding `tls.crt` and `tls.key`, as a mounted
    `kubernetes.io/tls` Secret) and `self_signed` (development: a certificate made at
    start-up for `address`, `localhost`, this host's name and `extra_sans`, logged with
    its `caBundle`). Raises `ValueError` or `FileNotFoundError` at once for a setting that
    could not serve, rather than in kopf's server task later.
    """
    if self_signed and tls_dir:
        raise ValueError("the webhook takes a TLS directory or a self-signed certificate, not both")
    server: kopf.WebhookServer
    if tls_dir:
        directory = Path(tls_dir)
        cert, key, ca = directory / TLS_CERT, directory / TLS_KEY, directory / TLS_CA
        missing = [str(p) for p in (cert, key) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"webhook TLS: {', '.join(missing)} not found; mount a kubernetes.io/tls "
                f"Secret (keys {TLS_CERT}, {TLS_KEY}) at {tls_dir}"
            )
        server = kopf.WebhookServer(
            addr=address,
            port=port,
            certfile=str(cert),
            pkeyfile=str(key),
            cafile=str(ca) if ca.is_file() else None,
        )
    elif self_signed:
        if importlib.util.find_spec("cryptography") is None:
            raise ValueError(
                "a self-signed webhook certificate needs the cryptography package: "
                "pip install 'migweaver[webhook-dev]'"
            )
        sans = ["localhost", socket.gethostname(), *extra_sans]
        server = SelfSignedWebhookServer(addr=address, port=port, extra_sans=sans)
    else:
        raise ValueError("the webhook needs a TLS directory (tls_dir) or self_signed=True")
    settings.admission.server = server
    # The manifests ship the MutatingWebhookConfiguration; kopf must not create or patch it.
    settings.admission.managed = None


class SelfSignedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server with a self-signed certificate made by `cryptography`.

    kopf generates one only with its `certbuilder`/`oscrypto` extra; this replaces that
    generator (kopf calls `build_certificate` with the address and the extra names, and
    keeps the result in temporary files only while it loads them).
    """

    @staticmethod
    def build_certificate(
        hostnames: Collection[str], password: str | None = None
    ) -> tuple[bytes, bytes]:
        cert, key = self_signed_certificate(hostnames, password)
        log.info(
            "webhook: self-signed certificate",
            hostnames=", ".join(dict.fromkeys(hostnames)),
            ca_bundle=base64.b64encode(cert).decode("ascii"),
        )
        return cert, key


def self_signed_certificate(
    hostnames: Collection[str], password: str | None = None, *, days: int = SELF_SIGNED_DAYS
) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key (PEM) for `hostnames` (DNS or IP).

    The certificate is its own CA (`basicConstraints CA:TRUE`), so it is also the
    `caBundle` clients verify it with. Unspecified addresses (`0.0.0.0`, `::`) are
    dropped; the first DNS name (else the first IP) is the common name.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    names: list[str] = []
    for hostname in dict.fromkeys(hostnames):
        try:
            ip = ipaddress.ip_address(hostname)
        except ValueError:
            if hostname:
                names.append(hostname)
            continue
        if not ip.is_unspecified and ip not in ips:
            ips.append(ip)
    if not names and not ips:
        raise ValueError("a certificate needs at least one host name or address")
    common_name = names[0] if names else str(ips[0])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternatives += [x509.IPAddress(ip) for ip in ips]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
