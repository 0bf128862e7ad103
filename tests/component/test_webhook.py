"""The webhook's kopf shell without a cluster: the handler, kopf's patch, the server settings.

The whole path through kopf's HTTPS server and an API server is in
tests/e2e/test_webhook_e2e.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path
from typing import Any

import kopf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kopf._cogs.structs import bodies, patches  # kopf builds these for every review

from migweaver.core.resources.api import PLACEMENT_GATE
from migweaver.core.resources.requests import DEFAULTS, RequestDefaults
from migweaver.operator import webhook
from tests import builders

GPU, MEM = "nvidia.com/gpu", "nvidia.com/gpumem"
log = logging.getLogger("test")


def review(raw: dict[str, Any]) -> tuple[kopf.Body, kopf.Patch]:
    """The body and patch kopf hands an admission handler for this object."""
    body = bodies.Body(raw)
    return body, patches.Patch(body=body)


def gpu_pod(limits: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return builders.pod(containers=[builders.container(image="ubuntu", limits=limits)], **spec)


def test_register_adds_one_mutating_handler_for_pod_create() -> None:
    registry = kopf.OperatorRegistry()
    webhook.register(registry)
    handlers = registry._webhooks.get_all_handlers()
    assert [h.id for h in handlers] == [webhook.HANDLER_ID]
    assert list(handlers[0].operations or []) == ["CREATE"]
    assert webhook.WEBHOOK_PATH == "/gate-gpu-pods"


def test_kopf_turns_the_handler_patch_into_json_patch_against_the_reviewed_object() -> None:
    """Lists are extended where they are (kopf diffs the body before and after)."""
    body, patch = review(gpu_pod({MEM: "8000"}, schedulingGates=[{"name": "a/b"}]))
    warnings: list[str] = []
    mutation = webhook.handle_review(body, patch, "CREATE", warnings, lambda: DEFAULTS, log)
    assert mutation is not None
    assert mutation.changed
    assert sorted(patch.as_json_patch(), key=lambda op: op["path"]) == [
        {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"},
        {"op": "add", "path": "/spec/containers/0/resources/requests", "value": {GPU: "1"}},
        {"op": "add", "path": "/spec/schedulingGates/1", "value": {"name": PLACEMENT_GATE}},
    ]
    assert warnings == []


def test_a_pod_without_gates_gets_the_whole_list() -> None:
    body, patch = review(gpu_pod({GPU: "1"}))
    webhook.handle_review(body, patch, "CREATE", [], lambda: DEFAULTS, log)
    assert patch.as_json_patch() == [
        {"op": "add", "path": "/spec/schedulingGates", "value": [{"name": PLACEMENT_GATE}]}
    ]


def test_untouched_pods_leave_kopf_patch_empty() -> None:
    for raw in (
        gpu_pod({"cpu": "1"}),
        gpu_pod({GPU: "1"}, schedulingGates=[{"name": PLACEMENT_GATE}]),
    ):
        body, patch = review(raw)
        webhook.handle_review(body, patch, "CREATE", [], lambda: DEFAULTS, log)
        assert not patch
        assert patch.as_json_patch() == []


def test_only_create_is_mutated() -> None:
    body, patch = review(gpu_pod({GPU: "1"}))
    assert webhook.handle_review(body, patch, "UPDATE", [], lambda: DEFAULTS, log) is None
    assert not patch


def test_a_gpu_pod_with_node_name_gets_a_warning_for_the_user() -> None:
    body, patch = review(gpu_pod({GPU: "1"}, nodeName="n1"))
    warnings: list[str] = []
    webhook.handle_review(body, patch, "CREATE", warnings, lambda: DEFAULTS, log)
    assert not patch
    assert len(warnings) == 1
    assert "nodeName" in warnings[0]


def test_the_defaults_in_force_are_asked_for_each_review() -> None:
    body, patch = review(gpu_pod({MEM: "8000"}))
    webhook.handle_review(
        body, patch, "CREATE", [], lambda: RequestDefaults(default_gpu_num=3), log
    )
    path = "/spec/containers/0/resources/limits/nvidia.com~1gpu"
    assert {"op": "add", "path": path, "value": "3"} in patch.as_json_patch()


def test_an_unexpected_error_admits_the_pod_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> RequestDefaults:
        raise RuntimeError("boom")

    body, patch = review(gpu_pod({GPU: "1"}))
    with caplog.at_level(logging.ERROR):
        assert webhook.handle_review(body, patch, "CREATE", [], broken, log) is None
    assert not patch
    assert "admitted unchanged" in caplog.text


# --- server settings ---------------------------------------------------------------------


def tls_dir(tmp_path: Path, *, ca: bool = True) -> Path:
    cert, key = webhook.self_signed_certificate(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    if ca:
        (tmp_path / "ca.crt").write_bytes(cert)
    return tmp_path


def test_configure_server_from_a_tls_secret_directory(tmp_path: Path) -> None:
    settings = kopf.OperatorSettings()
    settings.admission.managed = "left-over"
    directory = tls_dir(tmp_path)
    webhook.configure_server(
        settings, address="0.0.0.0", port=9443, tls_dir=str(directory), self_signed=False
    )
    server = settings.admission.server
    assert type(server) is kopf.WebhookServer
    assert (server.addr, server.port) == ("0.0.0.0", 9443)
    assert server.certfile == str(directory / "tls.crt")
    assert server.pkeyfile == str(directory / "tls.key")
    assert server.cafile == str(directory / "ca.crt")
    assert settings.admission.managed is None


def test_a_secret_without_ca_is_fine(tmp_path: Path) -> None:
    settings = kopf.OperatorSettings()
    webhook.configure_server(
        settings, address="::", port=1, tls_dir=str(tls_dir(tmp_path, ca=False)), self_signed=False
    )
    assert settings.admission.server.cafile is None


def test_configure_server_self_signed() -> None:
    settings = kopf.OperatorSettings()
    webhook.configure_server(
        settings,
        address="127.0.0.1",
        port=9443,
        tls_dir=None,
        self_signed=True,
        extra_sans=["migweaver-operator.migweaver-system.svc"],
    )
    server = settings.admission.server
    assert isinstance(server, webhook.SelfSignedWebhookServer)
    assert server.certfile is None
    assert "migweaver-operator.migweaver-system.svc" in server.extra_sans
    assert settings.admission.managed is None


@pytest.mark.parametrize(
    ("tls", "self_signed", "error", "match"),
    [
        (None, False, ValueError, "needs a TLS directory"),
        ("x", True, ValueError, "not both"),
        ("missing-dir", False, FileNotFoundError, "tls.crt, .*tls.key not found"),
    ],
    ids=["neither", "both", "missing-files"],
)
def test_configure_server_refuses_what_could_not_serve(
    tmp_path: Path, tls: str | None, self_signed: bool, error: type[Exception], match: str
) -> None:
    directory = str(tmp_path / tls) if tls else None
    with pytest.raises(error, match=match):
        webhook.configure_server(
            kopf.OperatorSettings(),
            address="127.0.0.1",
            port=9443,
            tls_dir=directory,
            self_signed=self_signed,
        )


def test_self_signed_without_cryptography_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"migweaver\[webhook-dev\]"):
        webhook.configure_server(
            kopf.OperatorSettings(), address="127.0.0.1", port=1, tls_dir=None, self_signed=True
        )


def test_self_signed_certificate() -> None:
    cert_pem, key_pem = webhook.self_signed_certificate(
        ["migweaver.example", "127.0.0.1", "0.0.0.0", "::1", "127.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["migweaver.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject == cert.issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime > datetime.timedelta(days=webhook.SELF_SIGNED_DAYS)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == cert.public_key()


def test_self_signed_key_with_a_password_and_bad_names() -> None:
    _, key_pem = webhook.self_signed_certificate(["localhost"], "secret")
    assert serialization.load_pem_private_key(key_pem, password=b"secret")
    with pytest.raises(ValueError, match="at least one"):
        webhook.self_signed_certificate(["0.0.0.0", ""])
