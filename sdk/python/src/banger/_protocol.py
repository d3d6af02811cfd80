"""The API without I/O: each request as a `Call` (method, path, query, body, and how to
read a 2xx answer), exec bodies, and the exec event stream's decoder. `Client` and
`AsyncClient` only send what these build."""

from __future__ import annotations

import base64
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Callable,
    Generic,
    Optional,
    TypeVar,
    Union,
)
from urllib.parse import quote

from .errors import BangerError, DaemonUnavailable, Internal, NotFound, error_from, error_from_response
from .types import (
    DaemonInfo,
    DetachedInfo,
    DetachedOutput,
    ExecEvent,
    ExecResult,
    Exit,
    ImageInfo,
    SnapshotInfo,
    Stderr,
    Stdout,
    VmInfo,
    Workspace,
)

T = TypeVar("T")

PREFIX = "/api/v1"
# Any host: the connection goes to the Unix socket.
BASE_URL = "http://bangerd"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Body:
    """A request body read from a file (an archive built on disk), `length` bytes long."""

    file: IO[bytes]
    length: int


def read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    """The file from its current position, in chunks."""
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return
        yield chunk


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    params: Optional[dict[str, str]] = None
    json: Any = None
    content: Union[bytes, Body, None] = None

    def finish(self, status: int, body: bytes) -> T:
        """The answer's value, or the typed error a non-2xx status carries."""
        if 200 <= status < 300:
            return self.parse(body)
        raise error_from_response(status, body)


def request_args(call: Call[Any]) -> dict[str, Any]:
    """httpx arguments for `call`, but for a `Body`, whose chunks the caller supplies
    (sync or async); its length goes in Content-Length so the daemon can refuse an
    oversized body at once."""
    args: dict[str, Any] = {"params": call.params, "headers": {}}
    if call.json is not None:
        args["json"] = call.json
    if isinstance(call.content, Body):
        args["headers"]["Content-Length"] = str(call.content.length)
    elif call.content is not None:
        args["content"] = call.content
    return args


def _seg(name: str) -> str:
    return quote(name, safe="")


def _vm(name: str, *rest: str) -> str:
    return "/".join([PREFIX, "vms", _seg(name), *rest])


def _nothing(_: bytes) -> None:
    return None


def _raw(body: bytes) -> bytes:
    return body


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _one(cls: Any) -> Callable[[bytes], Any]:
    return lambda body: cls.from_json(json.loads(body))


def _many(cls: Any) -> Callable[[bytes], Any]:
    return lambda body: [cls.from_json(d) for d in json.loads(body)]


def status() -> Call[DaemonInfo]:
    return Call("GET", f"{PREFIX}/status", _one(DaemonInfo))


def list_vms() -> Call[list[VmInfo]]:
    return Call("GET", f"{PREFIX}/vms", _many(VmInfo))


def get_vm(name: str) -> Call[VmInfo]:
    return Call("GET", _vm(name), _one(VmInfo))


def create_vm(spec: Mapping[str, Any]) -> Call[VmInfo]:
    return Call("POST", f"{PREFIX}/vms", _one(VmInfo), json=dict(spec))


def delete_vm(name: str) -> Call[None]:
    return Call("DELETE", _vm(name), _nothing)


def vm_action(name: str, action: str) -> Call[VmInfo]:
    """`start`, `stop` or `restart`."""
    return Call("POST", _vm(name, action), _one(VmInfo))


def list_images() -> Call[list[ImageInfo]]:
    return Call("GET", f"{PREFIX}/images", _many(ImageInfo))


def get_image(name: str) -> Call[ImageInfo]:
    return Call("GET", f"{PREFIX}/images/{_seg(name)}", _one(ImageInfo))


def delete_image(name: str) -> Call[None]:
    return Call("DELETE", f"{PREFIX}/images/{_seg(name)}", _nothing)


def warm_image(name: str, **fields: Any) -> Call[SnapshotInfo]:
    """`POST /images/{name}/warm`: the machine (unset fields take the daemon's
    defaults) and `pool`, the image's own pool size."""
    body = create_spec(**fields)
    return Call("POST", f"{PREFIX}/images/{_seg(name)}/warm", _one(SnapshotInfo), json=body)


def list_snapshots() -> Call[list[SnapshotInfo]]:
    return Call("GET", f"{PREFIX}/snapshots", _many(SnapshotInfo))


def delete_snapshot(name: str) -> Call[None]:
    return Call("DELETE", f"{PREFIX}/snapshots/{_seg(name)}", _nothing)


def snapshot(vm: str, name: Optional[str]) -> Call[SnapshotInfo]:
    body = {} if name is None else {"name": name}
    return Call("POST", _vm(vm, "snapshots"), _one(SnapshotInfo), json=body)


def file_mode(mode: Union[int, str, None]) -> Optional[str]:
    """A file mode as the API takes it: four octal digits (`0644`), from an int
    (`0o644`) or a string of octal digits (`"644"`, `"0644"`)."""
    if mode is None:
        return None
    value = mode if isinstance(mode, int) else int(mode, 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(f"{mode!r} is not a file mode (0 to 0o7777)")
    return format(value, "04o")


def write_file(vm: str, path: str, data: bytes, mode: Union[int, str, None]) -> Call[None]:
    params = {"path": path}
    m = file_mode(mode)
    if m is not None:
        params["mode"] = m
    return Call("PUT", _vm(vm, "files"), _nothing, params=params, content=bytes(data))


def read_file(vm: str, path: str) -> Call[bytes]:
    return Call("GET", _vm(vm, "files"), _raw, params={"path": path})


def put_archive(vm: str, guest_dir: str, tar: Body) -> Call[None]:
    return Call("PUT", _vm(vm, "archive"), _nothing, params={"path": guest_dir}, content=tar)


def get_archive(vm: str, guest_dir: str) -> Call[None]:
    """Streamed: the body is a tar of the directory's contents."""
    return Call("GET", _vm(vm, "archive"), _nothing, params={"path": guest_dir})


def _dest(dest: Optional[str]) -> Optional[dict[str, str]]:
    """`?path=`; without it the daemon picks the default for the VM's user."""
    return {"path": dest} if dest is not None else None


def prepare_workspace(vm: str, dest: Optional[str], tar: Body) -> Call[Workspace]:
    return Call("POST", _vm(vm, "workspace"), _one(Workspace), params=_dest(dest), content=tar)


def export_patch(vm: str, dest: Optional[str]) -> Call[str]:
    return Call("GET", _vm(vm, "workspace", "patch"), _text, params=_dest(dest))


def exec_call(vm: str, body: Mapping[str, Any]) -> Call[None]:
    """Streamed: the body is the NDJSON event stream `ExecDecoder` reads."""
    return Call("POST", _vm(vm, "exec"), _nothing, json=dict(body))


def exec_stdin(exec_id: str, data: bytes, eof: bool) -> Call[None]:
    params = {"eof": "true"} if eof else None
    return Call("POST", f"{PREFIX}/execs/{_seg(exec_id)}/stdin", _nothing, params=params, content=bytes(data))


def exec_resize(exec_id: str, rows: int, cols: int) -> Call[None]:
    return Call("POST", f"{PREFIX}/execs/{_seg(exec_id)}/resize", _nothing, json={"rows": rows, "cols": cols})


def exec_kill(exec_id: str) -> Call[None]:
    return Call("POST", f"{PREFIX}/execs/{_seg(exec_id)}/kill", _nothing)


def detach(vm: str, body: Mapping[str, Any]) -> Call[DetachedInfo]:
    return Call("POST", _vm(vm, "detached"), _one(DetachedInfo), json=dict(body))


def list_detached(vm: str) -> Call[list[DetachedInfo]]:
    return Call("GET", _vm(vm, "detached"), _many(DetachedInfo))


def detached_output(vm: str, detached_id: str, follow: bool) -> Call[DetachedOutput]:
    params = {"follow": "true"} if follow else None
    path = _vm(vm, "detached", _seg(detached_id), "output")
    return Call("GET", path, lambda body: _detached_output(vm, body), params=params)


def detached_kill(vm: str, detached_id: str, signal: int) -> Call[DetachedInfo]:
    path = _vm(vm, "detached", _seg(detached_id), "kill")
    return Call("POST", path, _one(DetachedInfo), params={"signal": str(signal)})


def _detached_output(vm: str, body: bytes) -> DetachedOutput:
    """The whole event stream of a detached command's output: without `exit` it runs on."""
    decoder = ExecDecoder(vm)
    collector = Collector()
    for event in decoder.feed(body + b"\n"):
        collector.add(event)
    return DetachedOutput(b"".join(collector._out), b"".join(collector._err), decoder.exit)


def command(argv: Optional[Sequence[str]], shell: Optional[str]) -> list[str]:
    """The argv to run: `argv` as given, or `shell` through `sh -c`; exactly one."""
    if (argv is None) == (shell is None):
        raise ValueError("give either argv or shell=, not both or neither")
    if shell is not None:
        return ["sh", "-c", shell]
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv is a list of arguments; pass a command line as shell=")
    args = [str(a) for a in argv or ()]
    if not args:
        raise ValueError("argv is empty")
    return args


def exec_body(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    timeout: Optional[float] = None,
    stdin: Union[bytes, str, None] = None,
    interactive: bool = False,
    tty: Optional[tuple[int, int]] = None,
    user: Optional[str] = None,
) -> dict[str, Any]:
    """An ExecBody. `timeout` is seconds (rounded up to whole ones); `stdin` is given
    whole and then closed; `interactive` keeps stdin open for `send_stdin`; `tty` is
    (rows, cols) for a pseudo-terminal; `user` is NAME or NAME:UID."""
    body: dict[str, Any] = {"argv": list(argv)}
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if cwd is not None:
        body["cwd"] = cwd
    if timeout is not None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        body["timeout_secs"] = math.ceil(timeout)
    if stdin is not None:
        raw = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        body["stdin"] = base64.b64encode(raw).decode("ascii")
    if interactive:
        body["interactive"] = True
    if tty is not None:
        rows, cols = tty
        body["tty"] = {"rows": rows, "cols": cols}
    if user is not None:
        body["user"] = user
    return body


def create_spec(**fields: Any) -> dict[str, Any]:
    """A request body with the fields given: None and False leave the daemon's default."""
    return {k: v for k, v in fields.items() if v is not None and v is not False}


def run_spec(image: Optional[str], user: Optional[str] = None, no_pool: bool = False) -> dict[str, Any]:
    """`Client.run`'s VM: resumed from the image's warm snapshot when there is one
    (a paused clone from the daemon's pool unless `no_pool`), ready once its agent is,
    and deleted by a daemon restart should the run die; its commands run as `user`
    (root when None)."""
    return create_spec(image=image, warm=True, exec_only=True, ephemeral=True, user=user, no_pool=no_pool)


class ExecDecoder:
    """Reads an exec event stream as its chunks arrive: lines may be split anywhere.
    `feed` returns the events completed so far; an `error` event raises its typed
    error; `started` sets `exec_id`."""

    def __init__(self, vm: str) -> None:
        self.vm = vm
        self.exec_id: Optional[str] = None
        self.exit: Optional[Exit] = None
        self._partial = b""

    def feed(self, chunk: bytes) -> list[ExecEvent]:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            event = self._event(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[ExecEvent]:
        """The stream closed: its last line, or the error of one that ended early."""
        events = self.feed(b"\n") if self._partial.strip() else []
        if self.exit is None:
            raise Internal(f"the exec stream of VM {self.vm} ended before the command exited")
        return events

    def _event(self, line: bytes) -> Optional[ExecEvent]:
        if not line.strip() or self.exit is not None:
            return None
        try:
            ev = json.loads(line)
            kind = ev["type"]
        except (ValueError, KeyError, TypeError) as e:
            raise Internal(
                f"the exec stream of VM {self.vm} sent a line that is not an event: {line[:200]!r}"
            ) from e
        if kind == "started":
            self.exec_id = str(ev["id"])
            return None
        if kind == "stdout":
            return Stdout(base64.b64decode(ev["data"]))
        if kind == "stderr":
            return Stderr(base64.b64decode(ev["data"]))
        if kind == "exit":
            self.exit = Exit(int(ev["code"]), bool(ev.get("timed_out", False)))
            return self.exit
        if kind == "error":
            raise error_from(ev)
        return None  # an event this SDK does not know yet


class Collector:
    """Gathers a stream's events into an `ExecResult`."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._exit: Optional[Exit] = None

    def add(self, event: ExecEvent) -> None:
        if isinstance(event, Stdout):
            self._out.append(event.data)
        elif isinstance(event, Stderr):
            self._err.append(event.data)
        else:
            self._exit = event

    def result(self) -> ExecResult:
        if self._exit is None:
            raise RuntimeError("the exec stream was closed before the command exited")
        return ExecResult(self._exit.code, b"".join(self._out), b"".join(self._err), self._exit.timed_out)


def deletion_failed(vm: str, exc: Optional[BaseException], err: BangerError) -> None:
    """A `with` block's VM could not be deleted at its end: gone already is fine; when
    the block raised, its error `exc` is the one that propagates and this is a
    warning; otherwise `err` is raised."""
    if isinstance(err, NotFound):
        return
    if exc is None:
        raise err
    warnings.warn(f"could not delete VM {vm} after an error: {err}", RuntimeWarning, stacklevel=3)


def lost(socket: str, err: Exception) -> BangerError:
    """The error for a connection that failed or broke."""
    return DaemonUnavailable(
        f"lost the connection to bangerd at {socket}: {err}",
        hint="`banger daemon status` shows whether it is running",
    )
