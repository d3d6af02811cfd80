"""Test doubles: a fake daemon behind httpx.MockTransport (and, from fake_bangerd,
one on a Unix socket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Callable, Optional, Union

import httpx

import banger
import banger.aio

VM: dict[str, Any] = {
    "id": "01J0VM",
    "name": "box",
    "state": "running",
    "backend": "qemu",
    "image": "default",
    "vcpu": 2,
    "memory_mib": 1024,
    "disk_size_mib": 4096,
    "ip": "172.30.0.2",
    "pid": 4242,
    "created_at": "2026-11-24T00:00:00Z",
    "boot": {"prepare_ms": 3, "agent_ready_ms": 900},
    "last_error": None,
    "policy": {"mode": "isolated"},
}
IMAGE: dict[str, Any] = {
    "name": "default",
    "digest": "sha256:ab",
    "created_at": "2026-11-24T00:00:00Z",
    "rootfs_bytes": 1000,
    "source": "build:bookworm",
    "dir": "/var/lib/banger/images/default",
}
SNAPSHOT: dict[str, Any] = {
    "id": "01J0SN",
    "name": "snap",
    "vm": "box",
    "image": "default",
    "backend": "qemu",
    "vcpu": 2,
    "memory_mib": 1024,
    "disk_size_mib": 4096,
    "no_network": False,
    "created_at": "2026-11-24T00:00:00Z",
    "disk_bytes": 10,
    "paused_ms": 5,
    "warm": False,
}


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that arrives in these chunks, for both clients."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def stream(*chunks: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/x-ndjson"}, stream=Chunks(chunks))


def error(status: int, code: str, message: str, hint: Optional[str] = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "hint": hint})


Answer = Union[httpx.Response, Callable[[httpx.Request], httpx.Response]]


class FakeDaemon:
    """Answers each (method, path) with what `on` set; records every request (with its
    body read) in `requests`; anything else is a structured 404."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answers in turn; the last one repeats."""
        self.routes[(method, path)] = list(answers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.split(b"?")[0].decode()
        answers = self.routes.get((request.method, path))
        if not answers:
            return error(404, "not_found", f"no route {request.method} {path}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer

    def client(self) -> banger.Client:
        return banger.Client(transport=httpx.MockTransport(self.handle))

    def async_client(self) -> banger.aio.AsyncClient:
        return banger.aio.AsyncClient(transport=httpx.MockTransport(self.handle))

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]

    def last(self, method: str, path: str) -> httpx.Request:
        """The last request to `method` `path`."""
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)][-1]
