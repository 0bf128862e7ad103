"""The mutating webhook, served by kopf, called by the API server over HTTPS.

A kopf operator with only the webhook registered (standalone, cluster-wide) runs in a
thread of its own with its own event loop, as kopf's embedding guide does it: kopf
cancels every task it finds on its loop when it stops, and installs signal handlers
when it runs in the main thread, neither of which the session loop of these tests may
suffer. `manifests/webhook.yaml` is registered as shipped, except that `clientConfig`
points at `https://127.0.0.1:<port><path>` with the test's CA instead of the Service.
Then pods are created through the API and the stored pods are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from migweaver.core.resources.api import PLACEMENT_GATE
from migweaver.operator import webhook
from tests import builders
from tests.e2e.kube_api import MUTATING_WEBHOOKS, NAMESPACES, PODS, Kube, KubeError, meta
from tests.e2e.tls import TlsFiles

JsonDict = dict[str, Any]

# The webhook server listens on this host's 127.0.0.1: the emulator, or an apiserver on
# this host's loopback (the test kit's control plane, `make e2e-real`), can call it; an
# apiserver elsewhere cannot.

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "webhook.yaml"
GPU, MEM, CORES = "nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores"
GATE = {"name": PLACEMENT_GATE}
OTHER_GATE = {"name": "example.com/quota"}
START_TIMEOUT = 60.0


class _Announcing:
    """The configured webhook server, announcing when it listens and with which client
    config (URL, caBundle): kopf starts the server in a task of its own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ready = threading.Event()
        self.client_config: JsonDict | None = None

    async def __aenter__(self) -> _Announcing:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.inner(fn):
            self.client_config = dict(client_config)
            self.ready.set()
            yield client_config


def connection_from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    """Kopf's login from the current context of a kubeconfig (server, CA, token or
    client certificate), for a real cluster."""
    config = yaml.safe_load(path.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
    found, auth = cluster["cluster"], user["user"]
    return kopf.ConnectionInfo(
        server=found["server"],
        ca_path=found.get("certificate-authority"),
        token=auth.get("token"),
        scheme="Bearer" if auth.get("token") else None,
        certificate_path=auth.get("client-certificate"),
        private_key_path=auth.get("client-key"),
    )


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def webhook_operator(
    kube: Kube, *, tls_dir: Path | None = None, self_signed: bool = False
) -> AsyncIterator[JsonDict]:
    """Run kopf with only `webhook.register`; yields the server's client config."""
    registry = kopf.OperatorRegistry()
    webhook.register(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        if kube.emulator is not None:
            return kopf.ConnectionInfo(server=kube.emulator.url)
        return connection_from_kubeconfig(kube.kubeconfig)

    settings = kopf.OperatorSettings()
    webhook.configure_server(
        settings,
        address="127.0.0.1",
        port=_free_port(),
        tls_dir=str(tls_dir) if tls_dir else None,
        self_signed=self_signed,
    )
    assert settings.admission.managed is None, "kopf must not manage the webhook configuration"
    server = _Announcing(settings.admission.server)
    settings.admission.server = server
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    standalone=True,
                    clusterwide=True,
                    stop_flag=stop,
                )
            )
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
        finally:
            server.ready.set()  # wake the waiter if kopf ended before it listened

    thread = threading.Thread(target=run, name="kopf-webhook", daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(server.ready.wait, START_TIMEOUT)
        assert not failures, f"kopf stopped: {failures!r}"
        assert server.client_config is not None, "the webhook server did not start in time"
        yield server.client_config
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, START_TIMEOUT)
        assert not thread.is_alive(), "kopf did not stop"
    assert not failures, f"kopf failed: {failures!r}"


@pytest.fixture
def secret_dir(webhook_tls: TlsFiles, tmp_path: Path) -> Path:
    """The webhook's certificate laid out as a mounted kubernetes.io/tls Secret."""
    directory = tmp_path / "webhook-tls"
    directory.mkdir()
    shutil.copy(webhook_tls.cert, directory / "tls.crt")
    shutil.copy(webhook_tls.key, directory / "tls.key")
    shutil.copy(webhook_tls.ca_cert, directory / "ca.crt")
    return directory


def shipped_configuration(kube: Kube, url: str, ca_bundle: str) -> JsonDict:
    """manifests/webhook.yaml, pointed at this test's server instead of the Service."""
    config = yaml.safe_load(MANIFEST.read_text())
    config["metadata"]["name"] = kube.name(config["metadata"]["name"])
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        assert path == webhook.WEBHOOK_PATH, "the manifest must call the handler's path"
        hook["clientConfig"] = {"url": f"{url.rstrip('/')}{path}", "caBundle": ca_bundle}
    return config


def gpu_pod(name: str, limits: JsonDict, **spec: Any) -> JsonDict:
    return builders.pod(
        name, containers=[builders.container(image="ubuntu", limits=limits)], **spec
    )


def resources(pod: JsonDict) -> JsonDict:
    return dict(pod["spec"]["containers"][0]["resources"])


async def test_the_webhook_gates_gpu_pods_and_leaves_others_alone(
    kube: Kube, secret_dir: Path, webhook_tls: TlsFiles
) -> None:
    async with webhook_operator(kube, tls_dir=secret_dir) as client_config:
        assert client_config["url"].startswith("https://127.0.0.1:")
        config = shipped_configuration(kube, client_config["url"], webhook_tls.ca_bundle)
        await kube.create(MUTATING_WEBHOOKS, config)

        # Memory only: gated, and nvidia.com/gpu defaulted to 1 as HAMi does.
        # 8000 is stored as 8k: the apiserver writes quantities canonically.
        created = await kube.create(PODS, gpu_pod("mem-only", {MEM: "8000"}))
        stored = await kube.get(PODS, meta(created)["name"])
        assert stored["spec"]["schedulingGates"] == [GATE]
        assert resources(stored) == {
            "limits": {MEM: "8k", GPU: "1"},
            "requests": {MEM: "8k", GPU: "1"},
        }

        # Several containers, other gates: each list is extended, not replaced.
        pod = gpu_pod("two-containers", {GPU: "2", MEM: "4000"}, schedulingGates=[OTHER_GATE])
        pod["spec"]["containers"].append(
            {"name": "side", "image": "ubuntu", "resources": {"limits": {CORES: "30"}}}
        )
        stored = await kube.create(PODS, pod)
        assert stored["spec"]["schedulingGates"] == [OTHER_GATE, GATE]
        assert resources(stored)["limits"] == {GPU: "2", MEM: "4k"}
        assert stored["spec"]["containers"][1]["resources"]["limits"] == {CORES: "30", GPU: "1"}

        # A pod that asks for no GPU: stored exactly as the apiserver defaulted it.
        plain = gpu_pod("plain", {"cpu": "1", "memory": "64Mi"})
        stored = await kube.create(PODS, plain)
        assert "schedulingGates" not in stored["spec"]
        assert resources(stored) == {
            "limits": {"cpu": "1", "memory": "64Mi"},
            "requests": {"cpu": "1", "memory": "64Mi"},
        }

        # Created with the gate already: not gated twice, nothing else touched.
        gated = gpu_pod("pre-gated", {GPU: "1"}, schedulingGates=[GATE, OTHER_GATE])
        stored = await kube.create(PODS, gated)
        assert stored["spec"]["schedulingGates"] == [GATE, OTHER_GATE]
        assert resources(stored)["limits"] == {GPU: "1"}

        # The manifest's opt-out: a namespace labelled migweaver.io/webhook=disabled.
        opted_out = kube.name("webhook-disabled")
        await kube.create(
            NAMESPACES,
            {"metadata": {"name": opted_out, "labels": {"migweaver.io/webhook": "disabled"}}},
        )
        stored = await kube.create(PODS, gpu_pod("opted-out", {MEM: "8000"}), opted_out)
        assert "schedulingGates" not in stored["spec"]
        assert GPU not in resources(stored)["limits"]


async def test_a_self_signed_certificate_serves_for_development(kube: Kube) -> None:
    async with webhook_operator(kube, self_signed=True) as client_config:
        ca_bundle = client_config.get("caBundle")
        assert ca_bundle, "the self-signed server must hand out its CA bundle"
        config = shipped_configuration(kube, client_config["url"], ca_bundle)
        await kube.create(MUTATING_WEBHOOKS, config)
        stored = await kube.create(PODS, gpu_pod("cores-only", {CORES: "50"}))
        assert stored["spec"]["schedulingGates"] == [GATE]
        assert resources(stored)["limits"] == {CORES: "50", GPU: "1"}


async def test_while_the_webhook_is_down_gpu_pods_are_refused_and_others_created(
    kube: Kube,
) -> None:
    """failurePolicy Fail, as shipped: no GPU pod escapes the gate while no operator
    answers; matchConditions keep every other pod from being sent at all."""
    url = f"https://127.0.0.1:{_free_port()}"
    config = shipped_configuration(kube, url, "")
    await kube.create(MUTATING_WEBHOOKS, config)
    with pytest.raises(KubeError) as refused:
        await kube.create(PODS, gpu_pod("while-down", {MEM: "8000"}))
    assert refused.value.status == 500
    assert 'failed calling webhook "gate-gpu-pods.migweaver.io"' in str(refused.value.body)
    assert await kube.get_or_none(PODS, "while-down") is None
    stored = await kube.create(PODS, gpu_pod("cpu-only", {"cpu": "1"}))
    assert "schedulingGates" not in stored["spec"]
