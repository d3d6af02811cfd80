"""The asyncio flavour: `AsyncClient`, `AsyncVm` and `AsyncExecStream`, the same API as
`banger.Client` with `await`, `async with` and `async for`. Requests are built and
answers read by the same code as the blocking client's; local work (tar archives,
git, finding or starting the daemon) runs in a thread."""

from __future__ import annotations

import asyncio
import collections
import os
import tempfile
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import (
    IO,
    Any,
    Generic,
    Literal,
    Optional,
    Protocol,
    TypeVar,
    Union,
)

import httpx

from . import _protocol as proto
from ._archive import extract, tar_path, tar_workspace
from ._discovery import locate
from .client import CONNECT_TIMEOUT_SECS, StrPath
from .errors import BangerError, error_from_response
from .types import (
    DaemonInfo,
    DetachedInfo,
    DetachedOutput,
    ExecEvent,
    ExecResult,
    ImageInfo,
    RunResult,
    SnapshotInfo,
    VmInfo,
    Workspace,
)

T = TypeVar("T")


class _Closes(Protocol):
    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None: ...


R = TypeVar("R", bound=_Closes)


class Opening(Generic[R]):
    """What `AsyncClient.create` and `AsyncVm.exec_stream` return: await it for the
    VM or stream, or use it in `async with`, which closes (deletes) it at the end."""

    def __init__(self, opening: Coroutine[Any, Any, R]) -> None:
        self._opening = opening
        self._value: Optional[R] = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._opening.__await__()

    async def __aenter__(self) -> R:
        self._value = await self._opening
        return self._value

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._value is not None:
            await self._value.__aexit__(exc_type, exc, tb)


async def _chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(f.read, proto.CHUNK)
        if not chunk:
            return
        yield chunk


class AsyncClient:
    """`banger.Client` for asyncio. Finding (or starting) the daemon happens on the
    first request. Use it in `async with`, or call `aclose()`."""

    def __init__(
        self,
        socket: Optional[StrPath] = None,
        *,
        autostart: bool = True,
        timeout: Optional[float] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.socket: Optional[str] = os.fspath(socket) if socket is not None else None
        self._autostart = autostart
        self._timeout = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECS)
        self._transport = transport
        self._http: Optional[httpx.AsyncClient] = None
        self._lock: Optional[asyncio.Lock] = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _client(self) -> httpx.AsyncClient:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._http is None:
                transport = self._transport
                if transport is None:
                    self.socket = await asyncio.to_thread(locate, self.socket, self._autostart)
                    transport = httpx.AsyncHTTPTransport(uds=self.socket)
                self._http = httpx.AsyncClient(
                    transport=transport, base_url=proto.BASE_URL, timeout=self._timeout
                )
            return self._http

    async def _send(self, call: proto.Call[Any], stream: bool = False) -> httpx.Response:
        http = await self._client()
        args = proto.request_args(call)
        if isinstance(call.content, proto.Body):
            args["content"] = _chunks(call.content.file)
        request = http.build_request(call.method, call.path, **args)
        try:
            response = await http.send(request, stream=stream)
        except httpx.TransportError as e:
            raise proto.lost(self.socket or "the transport", e) from e
        if stream and response.status_code >= 300:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise error_from_response(response.status_code, body)
        return response

    async def _call(self, call: proto.Call[T]) -> T:
        response = await self._send(call)
        return call.finish(response.status_code, response.content)

    async def status(self) -> DaemonInfo:
        return await self._call(proto.status())

    def create(
        self,
        name: Optional[str] = None,
        *,
        image: Optional[str] = None,
        vcpu: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_mib: Optional[int] = None,
        backend: Optional[str] = None,
        no_start: bool = False,
        no_network: bool = False,
        publish: Optional[Sequence[str]] = None,
        policy: Optional[Mapping[str, Any]] = None,
        from_snapshot: Optional[str] = None,
        warm: bool = False,
        exec_only: bool = False,
        ephemeral: bool = False,
        user: Optional[str] = None,
        no_pool: bool = False,
        idle_timeout_secs: Optional[int] = None,
    ) -> Opening[AsyncVm]:
        """`Client.create`: `vm = await client.create(...)`, or
        `async with client.create(...) as vm:` to delete it at the end."""
        spec = proto.create_spec(
            name=name,
            image=image,
            vcpu=vcpu,
            memory_mib=memory_mib,
            disk_size_mib=disk_size_mib,
            backend=backend,
            no_start=no_start,
            no_network=no_network,
            publish=list(publish) if publish else None,
            policy=dict(policy) if policy else None,
            from_snapshot=from_snapshot,
            warm=warm,
            exec_only=exec_only,
            ephemeral=ephemeral,
            user=user,
            no_pool=no_pool,
            idle_timeout_secs=idle_timeout_secs,
        )
        return Opening(self._create(spec))

    async def _create(self, spec: Mapping[str, Any]) -> AsyncVm:
        return AsyncVm(self, await self._call(proto.create_vm(spec)))

    async def get(self, name: str) -> AsyncVm:
        return AsyncVm(self, await self._call(proto.get_vm(name)))

    async def list_vms(self) -> list[AsyncVm]:
        return [AsyncVm(self, info) for info in await self._call(proto.list_vms())]

    async def images(self) -> list[ImageInfo]:
        return await self._call(proto.list_images())

    async def image(self, name: str) -> ImageInfo:
        return await self._call(proto.get_image(name))

    async def delete_image(self, name: str) -> None:
        await self._call(proto.delete_image(name))

    async def warm_image(
        self,
        name: str,
        *,
        pool: Union[int, Literal["default"], None] = None,
        vcpu: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_mib: Optional[int] = None,
        backend: Optional[str] = None,
        no_network: bool = False,
    ) -> SnapshotInfo:
        """`Client.warm_image`."""
        call = proto.warm_image(
            name,
            pool=pool,
            vcpu=vcpu,
            memory_mib=memory_mib,
            disk_size_mib=disk_size_mib,
            backend=backend,
            no_network=no_network,
        )
        return await self._call(call)

    async def snapshots(self) -> list[SnapshotInfo]:
        return await self._call(proto.list_snapshots())

    async def delete_snapshot(self, name: str) -> None:
        await self._call(proto.delete_snapshot(name))

    async def run(
        self,
        argv: Optional[Sequence[str]] = None,
        *,
        shell: Optional[str] = None,
        repo: Optional[StrPath] = None,
        image: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        user: Optional[str] = None,
        no_pool: bool = False,
    ) -> RunResult:
        """`Client.run`: one command in a throwaway VM, deleted however it ends."""
        argv = proto.command(argv, shell)
        async with Opening(self._create(proto.run_spec(image, user, no_pool))) as vm:
            if repo is not None:
                ws = await vm.prepare_workspace(repo)
                cwd = cwd or ws.path
            return await vm.exec(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin, user=user)


class AsyncVm:
    """`banger.Vm` for asyncio; `async with` deletes it at the end."""

    def __init__(self, client: AsyncClient, info: VmInfo) -> None:
        self._client = client
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"AsyncVm({self.name!r}, state={self.info.state!r})"

    async def __aenter__(self) -> AsyncVm:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            await self.delete()
        except BangerError as err:
            proto.deletion_failed(self.name, exc, err)

    async def refresh(self) -> VmInfo:
        self.info = await self._client._call(proto.get_vm(self.name))
        return self.info

    async def start(self) -> VmInfo:
        self.info = await self._client._call(proto.vm_action(self.name, "start"))
        return self.info

    async def stop(self) -> VmInfo:
        self.info = await self._client._call(proto.vm_action(self.name, "stop"))
        return self.info

    async def restart(self) -> VmInfo:
        self.info = await self._client._call(proto.vm_action(self.name, "restart"))
        return self.info

    async def delete(self) -> None:
        await self._client._call(proto.delete_vm(self.name))

    async def exec(
        self,
        argv: Optional[Sequence[str]] = None,
        *,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        user: Optional[str] = None,
    ) -> ExecResult:
        """`Vm.exec`: runs the command and waits for its result."""
        async with self.exec_stream(
            argv, shell=shell, env=env, cwd=cwd, timeout=timeout, stdin=stdin, user=user
        ) as stream:
            return await stream.wait()

    def exec_stream(
        self,
        argv: Optional[Sequence[str]] = None,
        *,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        interactive: bool = False,
        tty: Optional[tuple[int, int]] = None,
        user: Optional[str] = None,
    ) -> Opening[AsyncExecStream]:
        """`Vm.exec_stream`: `async with vm.exec_stream([...]) as stream:` then
        `async for event in stream`."""
        body = proto.exec_body(
            proto.command(argv, shell),
            env=env,
            cwd=cwd,
            timeout=timeout,
            stdin=stdin,
            interactive=interactive,
            tty=tty,
            user=user,
        )
        return Opening(self._exec_stream(body))

    async def _exec_stream(self, body: Mapping[str, Any]) -> AsyncExecStream:
        response = await self._client._send(proto.exec_call(self.name, body), stream=True)
        stream = AsyncExecStream(self._client, self.name, response)
        await stream._started()
        return stream

    async def detach(
        self,
        argv: Optional[Sequence[str]] = None,
        *,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> DetachedInfo:
        """Starts a command that runs on in the guest without this client (`banger vm
        exec -d`): no stdin, no terminal; `timeout` kills its process group (exit 124).
        Its output is kept in the guest for `detached_output`."""
        body = proto.exec_body(proto.command(argv, shell), env=env, cwd=cwd, timeout=timeout)
        return await self._client._call(proto.detach(self.name, body))

    async def ps(self) -> list[DetachedInfo]:
        """The VM's detached commands, oldest first (`banger vm ps`)."""
        return await self._client._call(proto.list_detached(self.name))

    async def detached_output(self, detached_id: str, follow: bool = False) -> DetachedOutput:
        """A detached command's output so far; with `follow`, once it has ended (the
        client's `timeout` bounds the wait). Once an ended command's output was fetched,
        the guest forgets it."""
        return await self._client._call(proto.detached_output(self.name, detached_id, follow))

    async def kill_detached(self, detached_id: str, signal: int = 9) -> DetachedInfo:
        """Sends `signal` (default SIGKILL) to a detached command's process group."""
        return await self._client._call(proto.detached_kill(self.name, detached_id, signal))

    async def write_file(
        self, path: str, data: Union[bytes, str], mode: Union[int, str, None] = None
    ) -> None:
        raw = data.encode() if isinstance(data, str) else data
        await self._client._call(proto.write_file(self.name, path, raw, mode))

    async def read_file(self, path: str) -> bytes:
        return await self._client._call(proto.read_file(self.name, path))

    async def upload(self, local_path: StrPath, guest_dir: str) -> None:
        body = await asyncio.to_thread(tar_path, os.fspath(local_path))
        with body.file:
            await self._client._call(proto.put_archive(self.name, guest_dir, body))

    async def download(self, guest_dir: str, local_dir: StrPath) -> int:
        response = await self._client._send(proto.get_archive(self.name, guest_dir), stream=True)
        with tempfile.TemporaryFile() as spool:
            try:
                async for chunk in response.aiter_bytes():
                    spool.write(chunk)
            except httpx.TransportError as e:
                raise proto.lost(self._client.socket or "the transport", e) from e
            finally:
                await response.aclose()
            spool.seek(0)
            return await asyncio.to_thread(extract, spool, os.fspath(local_dir))

    async def prepare_workspace(self, path: StrPath, dest: Optional[str] = None) -> Workspace:
        body, _ = await asyncio.to_thread(tar_workspace, os.fspath(path))
        with body.file:
            return await self._client._call(proto.prepare_workspace(self.name, dest, body))

    async def export_patch(self, dest: Optional[str] = None) -> str:
        return await self._client._call(proto.export_patch(self.name, dest))

    async def snapshot(self, name: Optional[str] = None) -> SnapshotInfo:
        return await self._client._call(proto.snapshot(self.name, name))


class AsyncExecStream:
    """`banger.ExecStream` for asyncio: `async for event in stream`."""

    def __init__(self, client: AsyncClient, vm: str, response: httpx.Response) -> None:
        self._client = client
        self._response = response
        self._chunks = response.aiter_bytes()
        self._decoder = proto.ExecDecoder(vm)
        self._pending: collections.deque[ExecEvent] = collections.deque()
        self._ended = False

    async def _started(self) -> None:
        while self._decoder.exec_id is None and not self._ended:
            await self._read()

    @property
    def id(self) -> str:
        assert self._decoder.exec_id is not None
        return self._decoder.exec_id

    async def __aenter__(self) -> AsyncExecStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncExecStream:
        return self

    async def __anext__(self) -> ExecEvent:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    async def _read(self) -> None:
        try:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._ended = True
                self._pending.extend(self._decoder.end())
            else:
                self._pending.extend(self._decoder.feed(chunk))
                self._ended = self._decoder.exit is not None
        except httpx.TransportError as e:
            await self.aclose()
            raise proto.lost(self._client.socket or "the transport", e) from e
        except BaseException:
            await self.aclose()
            raise
        if self._ended:
            await self.aclose()

    async def wait(self) -> ExecResult:
        collector = proto.Collector()
        async for event in self:
            collector.add(event)
        return collector.result()

    async def send_stdin(self, data: Union[bytes, str]) -> None:
        raw = data.encode() if isinstance(data, str) else data
        await self._client._call(proto.exec_stdin(self.id, raw, eof=False))

    async def close_stdin(self) -> None:
        await self._client._call(proto.exec_stdin(self.id, b"", eof=True))

    async def resize(self, rows: int, cols: int) -> None:
        await self._client._call(proto.exec_resize(self.id, rows, cols))

    async def kill(self) -> None:
        await self._client._call(proto.exec_kill(self.id))

    async def aclose(self) -> None:
        self._ended = True
        await self._response.aclose()
