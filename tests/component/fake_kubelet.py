"""A fake kubelet for device plugin tests: the real gRPC protocol over real unix sockets.

It serves `v1beta1.Registration` on `<dir>/kubelet.sock` and records every
`RegisterRequest`. After a registration it does what the kubelet's device manager does:
it connects to the plugin's endpoint in the same directory, opens `ListAndWatch` and
keeps every device list it receives, and it calls `Allocate` when a test asks it to.
`restart` behaves as a kubelet restart: the kubelet socket is recreated and every other
socket in the directory is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from migweaver.agent.deviceplugin import api_pb2, api_pb2_grpc

KUBELET_SOCKET = "kubelet.sock"


class FakeKubelet:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / KUBELET_SOCKET
        self.requests: list[Any] = []
        self.device_lists: list[list[tuple[str, str]]] = []
        self._server: Any = None
        self._channel: Any = None
        self._stream: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------ Registration service

    async def Register(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.version != "v1beta1":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported version")
        # The device manager connects back after answering, as the real kubelet does.
        asyncio.get_running_loop().call_soon(self._connect, request.endpoint)
        await self._notify()
        return api_pb2.Empty()

    # ------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        await self._disconnect()
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def restart(self) -> None:
        """A kubelet restart: it removes every plugin socket and serves a new kubelet.sock."""
        await self.stop()
        for path in self.directory.iterdir():
            if path.is_socket():
                path.unlink()
        await self.start()

    # ------------------------------------------------------------- device manager

    def _connect(self, endpoint: str) -> None:
        previous = self._channel
        self._channel = grpc.aio.insecure_channel(f"unix://{self.directory / endpoint}")
        self._stream = asyncio.ensure_future(self._follow(self._channel, previous))

    async def _disconnect(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            await asyncio.gather(self._stream, return_exceptions=True)
            self._stream = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _follow(self, channel: Any, previous: Any) -> None:
        if previous is not None:
            await previous.close()
        stub = api_pb2_grpc.DevicePluginStub(channel)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for response in stub.ListAndWatch(api_pb2.Empty()):
                self.device_lists.append([(d.ID, d.health) for d in response.devices])
                await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def plugin(self) -> Any:
        """A stub on the plugin of the latest registration."""
        assert self._channel is not None, "no plugin registered yet"
        return api_pb2_grpc.DevicePluginStub(self._channel)

    async def allocate(self, *containers: Sequence[str]) -> Any:
        """`Allocate` with these device ids per container; raises grpc.aio.AioRpcError."""
        request = api_pb2.AllocateRequest(
            container_requests=[
                api_pb2.ContainerAllocateRequest(devices_ids=list(c)) for c in containers
            ]
        )
        return await self.plugin().Allocate(request, timeout=10)

    # ------------------------------------------------------------------- waiting

    async def wait_for(
        self, predicate: Callable[[FakeKubelet], bool], within_s: float = 10
    ) -> None:
        """Until `predicate(self)` holds, bounded by `within_s` seconds."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def registrations(self, count: int, within_s: float = 10) -> Any:
        """The `count`-th registration request, once it has arrived."""
        await self.wait_for(lambda k: len(k.requests) >= count, within_s)
        return self.requests[count - 1]

    async def devices(
        self, predicate: Callable[[list[tuple[str, str]]], bool] = bool
    ) -> list[tuple[str, str]]:
        """The latest device list that satisfies `predicate` (waits for it)."""
        await self.wait_for(lambda k: bool(k.device_lists) and predicate(k.device_lists[-1]))
        return self.device_lists[-1]
