"""Which daemon to talk to, found the way the banger CLI finds it, and started with
`banger daemon start` when nothing answers. Blocking; `AsyncClient` runs it in a
thread, once."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional

import httpx

from ._protocol import BASE_URL, PREFIX
from .errors import DaemonUnavailable

SYSTEM_SOCKET = "/run/banger/bangerd.sock"
"""The system daemon's socket (root's bangerd)."""

START_TIMEOUT_SECS = 120.0


@dataclass(frozen=True)
class Plan:
    """`socket` is the daemon to use, and to start when nothing answers there;
    `system_first` says to use `SYSTEM_SOCKET` instead when it answers; `configured`
    that `socket` was named (argument or BANGER_SOCKET), not derived."""

    socket: str
    system_first: bool = False
    configured: bool = False


def _env(env: Mapping[str, str], key: str) -> Optional[str]:
    return env.get(key) or None


def _absolute(env: Mapping[str, str], key: str) -> Optional[str]:
    v = _env(env, key)
    return v if v is not None and os.path.isabs(v) else None


def runtime_dir(env: Mapping[str, str], is_root: bool) -> str:
    """The runtime dir `banger_host::config::Paths` resolves: BANGER_RUNTIME_DIR; for root
    /run/banger; else $XDG_RUNTIME_DIR/banger, else <state dir>/run, the state dir
    being BANGER_STATE_DIR, $XDG_STATE_HOME/banger or ~/.local/state/banger."""
    explicit = _env(env, "BANGER_RUNTIME_DIR")
    if explicit is not None:
        return explicit
    if is_root:
        return "/run/banger"
    xdg_runtime = _absolute(env, "XDG_RUNTIME_DIR")
    if xdg_runtime is not None:
        return os.path.join(xdg_runtime, "banger")
    state = _env(env, "BANGER_STATE_DIR")
    if state is None:
        xdg_state = _absolute(env, "XDG_STATE_HOME")
        home = _env(env, "HOME") or "/root"
        state = os.path.join(xdg_state or os.path.join(home, ".local/state"), "banger")
    return os.path.join(state, "run")


def plan(
    env: Mapping[str, str],
    is_root: bool,
    system_trusted: bool,
    socket: Optional[str] = None,
) -> Plan:
    """The CLI's order: the socket given (argument, then BANGER_SOCKET); root uses its
    runtime dir's (the system daemon's); a user tries the system daemon first when its
    socket is root's and no BANGER_RUNTIME_DIR isolates them, then their own."""
    named = socket or _env(env, "BANGER_SOCKET")
    if named is not None:
        return Plan(os.fspath(named), configured=True)
    own = os.path.join(runtime_dir(env, is_root), "bangerd.sock")
    system_first = not is_root and system_trusted and _env(env, "BANGER_RUNTIME_DIR") is None
    return Plan(own, system_first=system_first)


def system_socket_trusted(path: str = SYSTEM_SOCKET) -> bool:
    """The system socket and its directory are root's (one elsewhere is not trusted)."""
    try:
        return all(os.lstat(p).st_uid == 0 for p in (path, os.path.dirname(path)))
    except OSError:
        return False


def probe(socket: str, timeout: float = 5.0) -> Optional[int]:
    """The status `GET /api/v1/status` answers on `socket`, None when nothing does."""
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url=BASE_URL, timeout=timeout) as c:
            return c.get(f"{PREFIX}/status").status_code
    except httpx.TransportError:
        return None


def start_daemon(plan: Plan, env: Mapping[str, str]) -> None:
    """Runs `banger daemon start` (BANGER_BIN, else `banger` on PATH), which starts
    the daemon the CLI would use in this environment and waits until it is ready."""
    exe = _env(env, "BANGER_BIN") or shutil.which("banger", path=env.get("PATH"))
    if exe is None:
        raise DaemonUnavailable(
            f"no bangerd answers on {plan.socket}, and there is no banger CLI on PATH to start one",
            hint="install banger, or set BANGER_BIN to the banger binary",
        )
    child_env = dict(env)
    if plan.configured:
        child_env["BANGER_SOCKET"] = plan.socket
    try:
        done = subprocess.run(
            [exe, "daemon", "start"],
            env=child_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT_SECS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DaemonUnavailable(f"could not run `{exe} daemon start`: {e}") from e
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        raise DaemonUnavailable(
            f"`{exe} daemon start` failed (exit {done.returncode}): {said}",
            hint="`banger doctor` checks what the daemon needs",
        )


def find_daemon(
    plan: Plan,
    *,
    autostart: bool,
    start: Callable[[], None],
    probe: Callable[[str], Optional[int]] = probe,
    system_socket: str = SYSTEM_SOCKET,
    settle_secs: float = 5.0,
) -> str:
    """The socket of a daemon that serves the API, starting one if allowed."""
    if plan.system_first and probe(system_socket) == 200:
        return system_socket
    status = probe(plan.socket)
    if status is None and autostart:
        start()
        # `daemon start` returns once bangerd is ready; allow a moment all the same.
        deadline = time.monotonic() + settle_secs
        status = probe(plan.socket)
        while status is None and time.monotonic() < deadline:
            time.sleep(0.1)
            status = probe(plan.socket)
    if status is None:
        raise DaemonUnavailable(
            f"no bangerd answers on {plan.socket}",
            hint="start one with `banger daemon start`",
        )
    if status != 200:
        raise DaemonUnavailable(
            f"the daemon on {plan.socket} does not serve the API (GET {PREFIX}/status answered {status})",
            hint="it may be older than this SDK: `banger daemon stop`, then `banger daemon start`",
        )
    return plan.socket


def locate(socket: Optional[str], autostart: bool) -> str:
    """`find_daemon` for this process: its environment and user."""
    env = dict(os.environ)
    p = plan(env, os.geteuid() == 0, system_socket_trusted(), socket)
    return find_daemon(p, autostart=autostart, start=lambda: start_daemon(p, env))
