"""End-to-end fixtures: a Kubernetes API (the emulator, or a real cluster) and a binder.

By default `kube` starts the in-process API emulator on 127.0.0.1 and a free port,
writes a kubeconfig for it (plain HTTP, no credentials) and applies `crds/*.yaml`. With
`MIGWEAVER_E2E_KUBECONFIG=/path/to/kubeconfig` the same tests run against that cluster:
the CRDs are created if missing (and deleted at the end if this run created them),
namespaced objects go to a namespace of this run, cluster-scoped names get a prefix of
this run (`kube.name("n1")`), and every test deletes what it created.

All e2e tests and fixtures share one event loop for the session, so the emulator and
the `kube` connection are started once (a few milliseconds), and every test checks that
it left no task running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from tests.e2e.binder import run_binder
from tests.e2e.emulator import Emulator
from tests.e2e.kube_api import CRDS, NAMESPACES, Kube, KubeError
from tests.e2e.tls import TlsFiles, make_tls, openssl_available

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
E2E_DIR = Path(__file__).resolve().parent
KUBECONFIG_ENV = "MIGWEAVER_E2E_KUBECONFIG"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator_only(reason): the test needs the in-process emulator (skipped on a real "
        "cluster, with the reason)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the e2e tests in the session's event loop, where `kube` lives."""
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if E2E_DIR in Path(str(item.path)).parents and is_async_test(item):
            item.add_marker(session_loop, append=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("emulator_only")
    if marker and os.environ.get(KUBECONFIG_ENV):
        pytest.skip(f"emulator only: {marker.args[0] if marker.args else 'see the test'}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Kube]:
    """The cluster under test, with this run's namespace and the migweaver CRDs."""
    run = secrets.token_hex(3)
    async with contextlib.AsyncExitStack() as stack:
        external = os.environ.get(KUBECONFIG_ENV)
        if external:
            emulator = None
            kubeconfig = Path(external)
            prefix = f"e2e-{run}-"
        else:
            emulator = await stack.enter_async_context(Emulator())
            kubeconfig = emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
            prefix = ""
        kube = await Kube.connect(kubeconfig, f"migweaver-e2e-{run}", prefix, emulator)
        stack.push_async_callback(kube.close)
        created_crds = await kube.ensure_crds(CRD_DIR.glob("*.yaml"))
        await kube.request("POST", NAMESPACES.path(), {"metadata": {"name": kube.namespace}})
        try:
            yield kube
        finally:
            with contextlib.suppress(KubeError):
                await kube.request("DELETE", NAMESPACES.path(name=kube.namespace))
            for name in created_crds if external else []:
                with contextlib.suppress(KubeError):
                    await kube.request("DELETE", CRDS.path(name=name))


def _running_tasks() -> set[asyncio.Task[object]]:
    """Tasks of the session loop, except the emulator's per-connection HTTP handlers."""
    current = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks()
        if t is not current
        and not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _isolated(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Per test: delete what it created, and fail it if it left a task running."""
    if "kube" not in request.fixturenames:
        yield
        return
    kube: Kube = request.getfixturevalue("kube")
    before = _running_tasks()
    yield
    await kube.cleanup()
    leaked = _running_tasks() - before
    # Give tasks that were cancelled a moment to finish unwinding before judging.
    if leaked:
        await asyncio.wait(leaked, timeout=1.0)
        leaked = {t for t in leaked if not t.done()}
    for task in leaked:
        task.cancel()  # so that one failing test does not disturb the next ones
    assert not leaked, f"the test left tasks running: {leaked}"


@pytest_asyncio.fixture(loop_scope="session")
async def binder(kube: Kube) -> AsyncIterator[None]:
    """What kube-scheduler does on a real cluster: bind ungated pods to their node.

    Only against the emulator (a real cluster has its scheduler): a pod without
    scheduling gates whose `nodeSelector` names `kubernetes.io/hostname` is bound to that
    node through the `pods/<name>/binding` subresource, as the scheduler binds it.
    """
    if not kube.is_emulator:
        yield
        return
    task = asyncio.create_task(run_binder(kube), name="e2e-binder")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="session")
def webhook_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a certificate for a webhook server on 127.0.0.1 (needs the openssl binary)."""
    if not openssl_available():
        pytest.skip("the openssl binary is needed to make the webhook's test certificate")
    return make_tls(tmp_path_factory.mktemp("tls"))
