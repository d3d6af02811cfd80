"""The blocking client: `Client`, the `Vm`s it hands out, and `ExecStream`."""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Optional, TypeVar, Union

import httpx

from . import _protocol as proto
from ._archive import extract, tar_path, tar_workspace
from ._discovery import locate
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
StrPath = Union[str, "os.PathLike[str]"]

CONNECT_TIMEOUT_SECS = 10.0


class Client:
    """A connection to bangerd over its Unix socket.

    With no `socket`, the daemon is found the way the `banger` CLI finds it:
    `BANGER_SOCKET`; as root, the system daemon; as a user, the system daemon when it
    answers, else the user's own (in `$XDG_RUNTIME_DIR/banger`), which is started with
    `banger daemon start` when nothing answers (unless `autostart=False`). That
    happens on the first request. `transport` replaces the socket altogether (for
    tests: an `httpx.MockTransport`). `timeout` bounds each wait for the daemon in
    seconds; None (the default) waits as long as a VM takes to boot.

    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        socket: Optional[StrPath] = None,
        *,
        autostart: bool = True,
        timeout: Optional[float] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.socket: Optional[str] = os.fspath(socket) if socket is not None else None
        self._autostart = autostart
        self._timeout = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECS)
        self._transport = transport
        self._http: Optional[httpx.Client] = None
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections to the daemon (VMs stay)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                transport = self._transport
                if transport is None:
                    self.socket = locate(self.socket, self._autostart)
                    transport = httpx.HTTPTransport(uds=self.socket)
                self._http = httpx.Client(transport=transport, base_url=proto.BASE_URL, timeout=self._timeout)
            return self._http

    def _send(self, call: proto.Call[Any], stream: bool = False) -> httpx.Response:
        http = self._client()
        args = proto.request_args(call)
        if isinstance(call.content, proto.Body):
            args["content"] = proto.read_chunks(call.content.file)
        request = http.build_request(call.method, call.path, **args)
        try:
            response = http.send(request, stream=stream)
        except httpx.TransportError as e:
            raise proto.lost(self.socket or "the transport", e) from e
        if stream and response.status_code >= 300:
            try:
                body = response.read()
            finally:
                response.close()
            raise error_from_response(response.status_code, body)
        return response

    def _call(self, call: proto.Call[T]) -> T:
        response = self._send(call)
        return call.finish(response.status_code, response.content)

    def status(self) -> DaemonInfo:
        """The daemon's version, pid, socket, uptime and VM counts."""
        return self._call(proto.status())

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
    ) -> Vm:
        """Creates a VM and returns once it runs (see `banger vm create --help` for the
        fields; unset ones take the daemon's defaults). As a context manager the VM
        is deleted when the block ends::

            with client.create(image="default") as vm:
                vm.exec(["uname", "-a"])
        """
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
        return Vm(self, self._call(proto.create_vm(spec)))

    def get(self, name: str) -> Vm:
        """The VM named `name` (`NotFound` if there is none)."""
        return Vm(self, self._call(proto.get_vm(name)))

    def list_vms(self) -> list[Vm]:
        """Every VM this caller can see."""
        return [Vm(self, info) for info in self._call(proto.list_vms())]

    def images(self) -> list[ImageInfo]:
        return self._call(proto.list_images())

    def image(self, name: str) -> ImageInfo:
        return self._call(proto.get_image(name))

    def delete_image(self, name: str) -> None:
        self._call(proto.delete_image(name))

    def warm_image(
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
        """Warms image `name` for a machine (unset fields take the daemon's defaults):
        boots it once and keeps the snapshot `run` resumes. `pool` sets the image's own
        pool size (paused clones kept ready; 0: none), `"default"` puts it back on the
        daemon's `pool_size`; with the machine already warm, only the pool changes."""
        call = proto.warm_image(
            name,
            pool=pool,
            vcpu=vcpu,
            memory_mib=memory_mib,
            disk_size_mib=disk_size_mib,
            backend=backend,
            no_network=no_network,
        )
        return self._call(call)

    def snapshots(self) -> list[SnapshotInfo]:
        return self._call(proto.list_snapshots())

    def delete_snapshot(self, name: str) -> None:
        self._call(proto.delete_snapshot(name))

    def run(
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
        """Runs one command in a throwaway VM and deletes the VM, however the command
        ends. `repo` (a local git repository) is shipped first (to /root/repo, or
        /home/NAME/repo with `user="NAME"`), which then is the default `cwd`. `user`
        (NAME or NAME:UID) runs everything as that guest user, created on first use.
        `timeout` (seconds) kills the command; the result says `timed_out`. `stdin` is given to the command whole::

            r = client.run(shell="make test", repo=".")
            print(r.exit_code, r.stdout, r.stderr)
        """
        argv = proto.command(argv, shell)
        vm = Vm(self, self._call(proto.create_vm(proto.run_spec(image, user, no_pool))))
        with vm:
            if repo is not None:
                ws = vm.prepare_workspace(repo)
                cwd = cwd or ws.path
            return vm.exec(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin, user=user)


class Vm:
    """One VM. `info` is what the daemon last said about it (`refresh()` asks again).
    As a context manager it is deleted when the block ends."""

    def __init__(self, client: Client, info: VmInfo) -> None:
        self._client = client
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, state={self.info.state!r})"

    def __enter__(self) -> Vm:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self.delete()
        except BangerError as err:
            proto.deletion_failed(self.name, exc, err)

    def refresh(self) -> VmInfo:
        self.info = self._client._call(proto.get_vm(self.name))
        return self.info

    def start(self) -> VmInfo:
        self.info = self._client._call(proto.vm_action(self.name, "start"))
        return self.info

    def stop(self) -> VmInfo:
        self.info = self._client._call(proto.vm_action(self.name, "stop"))
        return self.info

    def restart(self) -> VmInfo:
        self.info = self._client._call(proto.vm_action(self.name, "restart"))
        return self.info

    def delete(self) -> None:
        """Deletes the VM, running or not."""
        self._client._call(proto.delete_vm(self.name))

    def exec(
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
        """Runs `argv` (exactly as given: no shell) or `shell` (through `sh -c`) in
        the guest and waits for it. A non-zero exit is a result, not an error."""
        with self.exec_stream(
            argv, shell=shell, env=env, cwd=cwd, timeout=timeout, stdin=stdin, user=user
        ) as stream:
            return stream.wait()

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
    ) -> ExecStream:
        """Starts a command and returns its events as they come (`Stdout`, `Stderr`,
        then `Exit`). With `interactive=True` its stdin stays open for
        `send_stdin`/`close_stdin`; otherwise it is closed at once (after `stdin`,
        when given). `tty=(rows, cols)` gives it a pseudo-terminal. Closing the
        stream before the exit kills the command::

            with vm.exec_stream(["make"]) as stream:
                for event in stream:
                    if isinstance(event, banger.Stdout):
                        sys.stdout.buffer.write(event.data)
        """
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
        response = self._client._send(proto.exec_call(self.name, body), stream=True)
        return ExecStream(self._client, self.name, response)

    def detach(
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
        return self._client._call(proto.detach(self.name, body))

    def ps(self) -> list[DetachedInfo]:
        """The VM's detached commands, oldest first (`banger vm ps`)."""
        return self._client._call(proto.list_detached(self.name))

    def detached_output(self, detached_id: str, follow: bool = False) -> DetachedOutput:
        """A detached command's output so far; with `follow`, once it has ended (the
        client's `timeout` bounds the wait). Once an ended command's output was fetched,
        the guest forgets it."""
        return self._client._call(proto.detached_output(self.name, detached_id, follow))

    def kill_detached(self, detached_id: str, signal: int = 9) -> DetachedInfo:
        """Sends `signal` (default SIGKILL) to a detached command's process group."""
        return self._client._call(proto.detached_kill(self.name, detached_id, signal))

    def write_file(self, path: str, data: Union[bytes, str], mode: Union[int, str, None] = None) -> None:
        """Writes `data` (str as UTF-8) to the guest file `path` (absolute), with
        `mode` (e.g. 0o755 or "0755") if given."""
        raw = data.encode() if isinstance(data, str) else data
        self._client._call(proto.write_file(self.name, path, raw, mode))

    def read_file(self, path: str) -> bytes:
        """The contents of the guest file `path` (`NotFound` if it is absent)."""
        return self._client._call(proto.read_file(self.name, path))

    def upload(self, local_path: StrPath, guest_dir: str) -> None:
        """Copies a local file into the guest directory `guest_dir` (created if
        needed) under its own name, or a local directory's contents into it."""
        body = tar_path(os.fspath(local_path))
        with body.file:
            self._client._call(proto.put_archive(self.name, guest_dir, body))

    def download(self, guest_dir: str, local_dir: StrPath) -> int:
        """Copies the contents of the guest directory `guest_dir` into `local_dir`
        (created if needed) and returns how many entries it held. An entry that
        would land outside `local_dir` (absolute, `..`, a link pointing out) or a
        device refuses the whole archive with `UnsafeArchive`."""
        response = self._client._send(proto.get_archive(self.name, guest_dir), stream=True)
        with tempfile.TemporaryFile() as spool:
            try:
                for chunk in response.iter_bytes():
                    spool.write(chunk)
            except httpx.TransportError as e:
                raise proto.lost(self._client.socket or "the transport", e) from e
            finally:
                response.close()
            spool.seek(0)
            return extract(spool, os.fspath(local_dir))

    def prepare_workspace(self, path: StrPath, dest: Optional[str] = None) -> Workspace:
        """Ships the files `git ls-files` lists in the local repository `path` (as
        they are in the working tree) to `dest` in the guest (default: /root/repo, or
        /home/NAME/repo in a VM whose user is NAME), which then holds a git repository
        with them as its baseline commit."""
        body, _ = tar_workspace(os.fspath(path))
        with body.file:
            return self._client._call(proto.prepare_workspace(self.name, dest, body))

    def export_patch(self, dest: Optional[str] = None) -> str:
        """The guest's changes to the workspace at `dest` since `prepare_workspace`,
        as a binary git diff (`git apply` takes it); empty when unchanged."""
        return self._client._call(proto.export_patch(self.name, dest))

    def snapshot(self, name: Optional[str] = None) -> SnapshotInfo:
        """Snapshots the running VM (it pauses for the copy, then runs on)."""
        return self._client._call(proto.snapshot(self.name, name))


class ExecStream:
    """A command running in a guest: iterate it for its events; the last is `Exit`.
    An `error` from the daemon mid-stream raises its typed error."""

    def __init__(self, client: Client, vm: str, response: httpx.Response) -> None:
        self._client = client
        self._response = response
        self._chunks = response.iter_bytes()
        self._decoder = proto.ExecDecoder(vm)
        self._pending: collections.deque[ExecEvent] = collections.deque()
        self._ended = False
        while self._decoder.exec_id is None and not self._ended:
            self._read()

    @property
    def id(self) -> str:
        """The exec id the daemon gave the command."""
        assert self._decoder.exec_id is not None
        return self._decoder.exec_id

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[ExecEvent]:
        return self

    def __next__(self) -> ExecEvent:
        while not self._pending:
            if self._ended:
                raise StopIteration
            self._read()
        return self._pending.popleft()

    def _read(self) -> None:
        try:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._ended = True
                self._pending.extend(self._decoder.end())
            else:
                self._pending.extend(self._decoder.feed(chunk))
                self._ended = self._decoder.exit is not None
        except httpx.TransportError as e:
            self.close()
            raise proto.lost(self._client.socket or "the transport", e) from e
        except BaseException:
            self.close()
            raise
        if self._ended:
            self.close()

    def wait(self) -> ExecResult:
        """Reads the rest of the stream and returns the command's result."""
        collector = proto.Collector()
        for event in self:
            collector.add(event)
        return collector.result()

    def send_stdin(self, data: Union[bytes, str]) -> None:
        """Writes to the command's stdin (needs `interactive=True`)."""
        raw = data.encode() if isinstance(data, str) else data
        self._client._call(proto.exec_stdin(self.id, raw, eof=False))

    def close_stdin(self) -> None:
        """Closes the command's stdin: it reads end-of-file."""
        self._client._call(proto.exec_stdin(self.id, b"", eof=True))

    def resize(self, rows: int, cols: int) -> None:
        """Resizes the command's pseudo-terminal (with `tty=`)."""
        self._client._call(proto.exec_resize(self.id, rows, cols))

    def kill(self) -> None:
        """Kills the command's process group; the stream then ends with its `Exit`."""
        self._client._call(proto.exec_kill(self.id))

    def close(self) -> None:
        """Stops reading; a command still running is killed by the daemon."""
        self._ended = True
        self._response.close()
