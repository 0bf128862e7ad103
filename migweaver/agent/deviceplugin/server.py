"""The device plugin's gRPC side: serve `DevicePlugin` on a unix socket in the kubelet's
device-plugins directory, register it with the kubelet, and stay registered.

Lifecycle (`DevicePluginServer.run`), checked every `poll_s` seconds and whenever `poke`
is called:

- our socket is missing or is another file than the one we bound (the kubelet deletes
  every socket in its directory when it starts) -> stop the old server, bind afresh;
- the kubelet's socket (`kubelet.sock`) is new (another inode or change time than at our
  last registration) or we have just bound afresh -> register again; a failed
  registration is retried on the next check;
- the kubelet's socket is missing -> wait for it.

The kubelet then calls `ListAndWatch` (the stream re-sends the whole list whenever a GPU's
mode, id count or health changes) and `Allocate`. Nothing here raises into grpc: every
failure of `Allocate` is a gRPC status with a message naming the pod and the device.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import grpc

from migweaver.agent.deviceplugin import api_pb2, api_pb2_grpc
from migweaver.agent.deviceplugin.allocator import AllocateFailed, Allocator
from migweaver.agent.deviceplugin.devices import HEALTHY, DeviceEntry, device_list
from migweaver.agent.deviceplugin.gpus import GpuView
from migweaver.core.agent.binding import RESOURCE_GPU, BindErrorCode
from migweaver.logs import Repeated, get_logger

__all__ = [
    "API_VERSION",
    "DEFAULT_ENDPOINT",
    "DEFAULT_PLUGIN_DIR",
    "KUBELET_SOCKET",
    "DevicePluginServer",
    "DevicePluginServicer",
]

log = get_logger("migweaver.agent.deviceplugin")

RegistrationState = Literal[
    "not_serving", "waiting_for_kubelet", "registration_failed", "registered"
]

API_VERSION: Final = "v1beta1"
DEFAULT_PLUGIN_DIR: Final = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET: Final = "kubelet.sock"
DEFAULT_ENDPOINT: Final = "migweaver-nvidia-gpu.sock"

_STATUS: Final = {
    BindErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    BindErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    BindErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

# The generated gRPC module is untyped; these typed aliases keep mypy strict elsewhere.
_add_servicer: Callable[[Any, Any], None] = api_pb2_grpc.add_DevicePluginServicer_to_server
_registration_stub: Callable[[Any], Any] = api_pb2_grpc.RegistrationStub

SocketId = tuple[int, int, int]


def socket_id(path: Path) -> SocketId | None:
    """(device, inode, change time) of a unix socket; None when there is none at `path`."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


async def _abort(context: Any, code: Any, message: str) -> NoReturn:
    await context.abort(code, message)
    raise RuntimeError("context.abort returned")  # pragma: no cover - abort always raises


class DevicePluginServicer:
    """The `v1beta1.DevicePlugin` service; thin: it translates to and from the plugin."""

    def __init__(self, plugin: DevicePluginServer) -> None:
        self._plugin = plugin

    async def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:
        return self._plugin.options()

    async def ListAndWatch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for devices in self._plugin.device_updates():
            yield api_pb2.ListAndWatchResponse(
                devices=[api_pb2.Device(ID=d.id, health=d.health) for d in devices]
            )

    async def GetPreferredAllocation(self, request: Any, context: Any) -> Any:
        # Not advertised (any ids do: the allocation annotation names the real devices),
        # but answered sensibly should a kubelet call it: the required ids, then the first
        # available ones.
        responses = []
        for req in request.container_requests:
            chosen = list(dict.fromkeys(req.must_include_deviceIDs))
            for device in req.available_deviceIDs:
                if len(chosen) >= req.allocation_size:
                    break
                if device not in chosen:
                    chosen.append(device)
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    async def Allocate(self, request: Any, context: Any) -> Any:
        requests = [list(r.devices_ids) for r in request.container_requests]
        results = self._plugin.allocate_results
        try:
            grants = await self._plugin.allocator.allocate(requests)
        except AllocateFailed as exc:
            results[str(exc.code)] += 1
            await _abort(context, _STATUS[exc.code], exc.message)
        except Exception as exc:  # a bug must not kill the agent; the kubelet gets an error
            results["INTERNAL"] += 1
            log.exception("Allocate failed unexpectedly")
            await _abort(context, grpc.StatusCode.INTERNAL, f"migweaver agent error: {exc!r}")
        results["granted"] += 1
        return api_pb2.AllocateResponse(
            container_responses=[
                api_pb2.ContainerAllocateResponse(
                    envs=grant.envs,
                    cdi_devices=[api_pb2.CDIDevice(name=n) for n in grant.cdi_devices],
                    mounts=[
                        api_pb2.Mount(
                            container_path=m.container_path,
                            host_path=m.host_path,
                            read_only=m.read_only,
                        )
                        for m in grant.mounts
                    ],
                )
                for grant in grants
            ]
        )

    async def PreStartContainer(self, request: Any, context: Any) -> Any:
        return api_pb2.PreStartContainerResponse()


class DevicePluginServer:
    """Serves and registers the device plugin for `resource` until `run`'s `stop` is set.

    `on_registered` is awaited after every successful registration (the agent re-checks
    the node's extended resources then). `registrations` counts them; `registered` is set
    at each (tests clear it to wait for the next one).
    """

    def __init__(
        self,
        gpus: GpuView,
        allocator: Allocator,
        *,
        plugin_dir: str | os.PathLike[str] = DEFAULT_PLUGIN_DIR,
        endpoint: str = DEFAULT_ENDPOINT,
        resource: str = RESOURCE_GPU,
        poll_s: float = 1.0,
        register_timeout_s: float = 5.0,
        on_registered: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.gpus = gpus
        self.allocator = allocator
        self.plugin_dir = Path(plugin_dir)
        self.endpoint = endpoint
        self.resource = resource
        self.socket_path = self.plugin_dir / endpoint
        self.kubelet_socket = self.plugin_dir / KUBELET_SOCKET
        self._poll_s = poll_s
        self._register_timeout_s = register_timeout_s
        self._on_registered = on_registered
        self._server: Any = None
        self._own_id: SocketId | None = None
        self._kubelet_id: SocketId | None = None
        self._poke = asyncio.Event()
        self._changed = asyncio.Event()
        self._generation = 0
        """Bumped when the server stops: streams of an older server end."""
        self._repeats = Repeated(log)
        self.devices: tuple[DeviceEntry, ...] = ()
        self.registrations = 0
        self.registered = asyncio.Event()
        self.state: RegistrationState = "not_serving"
        """Where registration stands, for the agent's metrics (see `REGISTRATION_STATES`)."""
        self.allocate_results: collections.Counter[str] = collections.Counter()
        """`Allocate` calls by outcome: `granted`, a gRPC status name, or `INTERNAL`."""

    def set_on_registered(self, hook: Callable[[], Awaitable[None]] | None) -> None:
        """Awaited after every successful registration."""
        self._on_registered = hook

    # --------------------------------------------------------------------- devices

    def options(self) -> Any:
        return api_pb2.DevicePluginOptions(
            pre_start_required=False, get_preferred_allocation_available=False
        )

    def refresh(self) -> None:
        """Recompute the device list; wake the `ListAndWatch` streams when it changed."""
        devices = device_list(self.gpus.plugin_gpus())
        if devices != self.devices:
            self.devices = devices
            unhealthy = sum(1 for d in devices if d.health != HEALTHY)
            log.info("device list changed", ids=len(devices), unhealthy=unhealthy)
            self._wake()

    def _wake(self) -> None:
        # One Event per version: streams wait on the current one, which is set once and
        # replaced, so no stream misses a change that happens while it is sending.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def device_updates(self) -> AsyncIterator[tuple[DeviceEntry, ...]]:
        """The device list now, then again after every change, until the plugin stops."""
        sent: tuple[DeviceEntry, ...] | None = None
        generation = self._generation
        while generation == self._generation:
            changed = self._changed
            if self.devices != sent:
                sent = self.devices
                yield sent
                continue
            await changed.wait()

    # ------------------------------------------------------------------- lifecycle

    def poke(self) -> None:
        """Check the sockets now instead of at the next poll."""
        self._poke.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve, register and keep registered until `stop` is set; then stop serving.

        The directory belongs to the kubelet: while it does not exist, binding fails and is
        retried at every check.
        """
        self.gpus.subscribe(self.refresh)
        self.refresh()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await self.check()
                poked = asyncio.ensure_future(self._poke.wait())
                await asyncio.wait(
                    {stopper, poked}, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                poked.cancel()
                self._poke.clear()
        finally:
            stopper.cancel()
            await self._stop_server()

    async def check(self) -> None:
        """One look at both sockets (see the module docstring); never raises on I/O."""
        own = socket_id(self.socket_path)
        if self._server is None or own is None or own != self._own_id:
            if self._server is not None:
                # Gone (a kubelet start wipes the directory) or another file in its place.
                log.warning(
                    "our socket is gone or replaced (kubelet restart?): serving again",
                    socket=str(self.socket_path),
                )
            try:
                await self._start_server()
            except (OSError, RuntimeError) as exc:
                self.state = "not_serving"
                self._problem(f"cannot serve the device plugin on {self.socket_path}: {exc}")
                return
        kubelet = socket_id(self.kubelet_socket)
        if kubelet is None:
            self.state = "waiting_for_kubelet"
            self._problem(f"no kubelet socket at {self.kubelet_socket}; waiting for it")
            self._kubelet_id = None
            return
        if kubelet == self._kubelet_id:
            return
        try:
            await self._register()
        except (grpc.aio.AioRpcError, OSError) as exc:
            self.state = "registration_failed"
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self._problem(f"registration with the kubelet failed (retrying): {detail}")
            return
        self.state = "registered"
        self._kubelet_id = kubelet
        self._repeats.clear()
        if self._on_registered is not None:
            try:
                await self._on_registered()
            except Exception:  # e.g. the API is down: the next resync does it again
                log.exception("after-registration hook failed")

    def _problem(self, message: str) -> None:
        # Checks repeat every `poll_s`: say each problem once, then ever more rarely
        # with a count, not every second.
        self._repeats.warning("device-plugin", message, resource=self.resource)

    async def _start_server(self) -> None:
        await self._stop_server()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket of an earlier run
        server = grpc.aio.server()
        _add_servicer(DevicePluginServicer(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        self._own_id = socket_id(self.socket_path)
        self._kubelet_id = None  # the kubelet must learn of the new socket
        log.info("device plugin serving", resource=self.resource, socket=str(self.socket_path))

    async def _stop_server(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        self._generation += 1
        self._wake()  # end the ListAndWatch streams
        await server.stop(grace=None)

    async def _register(self) -> None:
        async with grpc.aio.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
            stub = _registration_stub(channel)
            await stub.Register(
                api_pb2.RegisterRequest(
                    version=API_VERSION,
                    endpoint=self.endpoint,
                    resource_name=self.resource,
                    options=self.options(),
                ),
                timeout=self._register_timeout_s,
            )
        self.registrations += 1
        self.registered.set()
        log.info(
            "registered with the kubelet",
            resource=self.resource,
            kubelet=str(self.kubelet_socket),
            registration=self.registrations,
        )
