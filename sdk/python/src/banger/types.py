"""What the daemon reports (VMs, images, snapshots, itself) and what commands return.

Parsing ignores fields it does not know, so a newer daemon stays readable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union


def _opt_int(v: Any) -> Optional[int]:
    return int(v) if v is not None else None


@dataclass(frozen=True)
class BootTimings:
    """Boot timings of a VM's last start, in milliseconds from the VMM spawn."""

    prepare_ms: int
    agent_ready_ms: int


@dataclass(frozen=True)
class VmInfo:
    """A VM as the daemon reports it. `state` is one of stopped, starting, running,
    stopping, crashed."""

    id: str
    name: str
    state: str
    backend: str
    image: str
    vcpu: int
    memory_mib: int
    disk_size_mib: int
    created_at: str
    ip: Optional[str] = None
    pid: Optional[int] = None
    boot: Optional[BootTimings] = None
    last_error: Optional[str] = None
    policy: Optional[dict[str, Any]] = None
    user: Optional[str] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VmInfo:
        boot = d.get("boot")
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            state=str(d["state"]),
            backend=str(d["backend"]),
            image=str(d["image"]),
            vcpu=int(d["vcpu"]),
            memory_mib=int(d["memory_mib"]),
            disk_size_mib=int(d["disk_size_mib"]),
            created_at=str(d["created_at"]),
            ip=d.get("ip"),
            pid=_opt_int(d.get("pid")),
            boot=BootTimings(int(boot["prepare_ms"]), int(boot["agent_ready_ms"])) if boot else None,
            last_error=d.get("last_error"),
            policy=dict(d["policy"]) if d.get("policy") is not None else None,
            user=d.get("user"),
        )


@dataclass(frozen=True)
class ImageInfo:
    """An image: `digest` identifies its exact kernel, initrd and rootfs; `source` says
    where it came from (`build:<suite>`, `import:<path>`, `pull:<url>`)."""

    name: str
    digest: str
    created_at: str
    rootfs_bytes: int
    source: str
    # The pool size the image set for itself (`warm_image(pool=N)`); None: the daemon's.
    pool_size: Optional[int] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ImageInfo:
        return cls(
            name=str(d["name"]),
            digest=str(d["digest"]),
            created_at=str(d["created_at"]),
            rootfs_bytes=int(d["rootfs_bytes"]),
            source=str(d["source"]),
            pool_size=_opt_int(d.get("pool_size")),
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot of a running VM: memory, devices and writable disk at one instant.
    `vm` is the VM it was taken of (which may be gone since)."""

    id: str
    name: str
    vm: str
    image: str
    backend: str
    vcpu: int
    memory_mib: int
    disk_size_mib: int
    no_network: bool
    created_at: str
    disk_bytes: int
    paused_ms: int
    warm: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SnapshotInfo:
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            vm=str(d["vm"]),
            image=str(d["image"]),
            backend=str(d["backend"]),
            vcpu=int(d["vcpu"]),
            memory_mib=int(d["memory_mib"]),
            disk_size_mib=int(d["disk_size_mib"]),
            no_network=bool(d["no_network"]),
            created_at=str(d["created_at"]),
            disk_bytes=int(d["disk_bytes"]),
            paused_ms=int(d["paused_ms"]),
            warm=bool(d["warm"]),
        )


@dataclass(frozen=True)
class DaemonInfo:
    """The daemon answering: its version, pid, socket, state dir, uptime and VM counts."""

    version: str
    pid: int
    socket: str
    state_dir: str
    uptime_secs: int
    vms_running: int
    vms_total: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DaemonInfo:
        return cls(
            version=str(d["version"]),
            pid=int(d["pid"]),
            socket=str(d["socket"]),
            state_dir=str(d["state_dir"]),
            uptime_secs=int(d["uptime_secs"]),
            vms_running=int(d["vms_running"]),
            vms_total=int(d["vms_total"]),
        )


@dataclass(frozen=True)
class Workspace:
    """A repository shipped into a guest: where it is and how many files it holds."""

    path: str
    files: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Workspace:
        return cls(path=str(d["path"]), files=int(d["files"]))


@dataclass(frozen=True)
class ExecResult:
    """A finished guest command: its exit code (128+N for a death by signal N), its
    output decoded as UTF-8 (invalid bytes replaced) and as raw bytes, and whether
    the timeout killed it."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    timed_out: bool = False

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """Exited with 0 within its timeout."""
        return self.exit_code == 0 and not self.timed_out


RunResult = ExecResult
"""What `Client.run` returns: the same fields as `ExecResult`."""


@dataclass(frozen=True)
class Stdout:
    """A chunk of the command's standard output."""

    data: bytes


@dataclass(frozen=True)
class Stderr:
    """A chunk of the command's standard error."""

    data: bytes


@dataclass(frozen=True)
class Exit:
    """The command ended: the last event of a stream."""

    code: int
    timed_out: bool = False


ExecEvent = Union[Stdout, Stderr, Exit]


@dataclass(frozen=True)
class DetachedInfo:
    """A command started with `Vm.detach`, as the guest keeps it. `state` is running
    or exited; `exit_code` (once exited) is 128+N for signal N and 124 when its
    timeout killed it (`timed_out`). `started_at_ms` is the guest clock, ms since the
    epoch; `dropped_bytes` counts older output the guest dropped (it keeps the newest
    4 to 8 MiB)."""

    id: str
    pid: int
    argv: list[str]
    started_at_ms: int
    state: str
    exit_code: Optional[int] = None
    timed_out: bool = False
    dropped_bytes: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DetachedInfo:
        code = d.get("exit_code")
        return cls(
            id=str(d["id"]),
            pid=int(d["pid"]),
            argv=[str(a) for a in d["argv"]],
            started_at_ms=int(d["started_at_ms"]),
            state=str(d["state"]),
            exit_code=None if code is None else int(code),
            timed_out=bool(d.get("timed_out", False)),
            dropped_bytes=int(d.get("dropped_bytes", 0)),
        )


@dataclass(frozen=True)
class DetachedOutput:
    """A detached command's output as fetched: `exit` is set once it has ended (it is
    then forgotten by the guest), None while it still runs."""

    stdout_bytes: bytes
    stderr_bytes: bytes
    exit: Optional[Exit] = None

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")
