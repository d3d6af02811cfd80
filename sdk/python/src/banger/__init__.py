"""Python SDK for banger: run commands in microVMs through bangerd's API on its Unix
socket. `Client` blocks; `banger.aio.AsyncClient` is the asyncio flavour.

    import banger

    with banger.Client() as client:
        r = client.run(shell="echo hello from $(hostname)")
        print(r.exit_code, r.stdout)
"""

from .client import Client, ExecStream, Vm
from .errors import (
    AgentFailed,
    AlreadyExists,
    BangerError,
    DaemonUnavailable,
    FailedPrecondition,
    HostFailed,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Timeout,
    Unavailable,
    UnsafeArchive,
    VmmFailed,
)
from .types import (
    BootTimings,
    DaemonInfo,
    DetachedInfo,
    DetachedOutput,
    ExecEvent,
    ExecResult,
    Exit,
    ImageInfo,
    RunResult,
    SnapshotInfo,
    Stderr,
    Stdout,
    VmInfo,
    Workspace,
)

__version__ = "0.1.0"

__all__ = [
    "AgentFailed",
    "AlreadyExists",
    "BangerError",
    "BootTimings",
    "Client",
    "DaemonInfo",
    "DaemonUnavailable",
    "DetachedInfo",
    "DetachedOutput",
    "ExecEvent",
    "ExecResult",
    "ExecStream",
    "Exit",
    "FailedPrecondition",
    "HostFailed",
    "ImageInfo",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RunResult",
    "SnapshotInfo",
    "Stderr",
    "Stdout",
    "Timeout",
    "Unavailable",
    "UnsafeArchive",
    "Vm",
    "VmInfo",
    "VmmFailed",
    "Workspace",
]
