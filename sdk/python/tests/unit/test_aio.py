"""The asyncio flavour sends the same requests and reads the same answers."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fake_bangerd import DAEMON
from fakes import VM, FakeDaemon, error, ndjson, stream

import banger
from banger.aio import AsyncClient, AsyncVm

T = TypeVar("T")
EXEC = "/api/v1/vms/box/exec"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def exec_answer() -> httpx.Response:
    whole = ndjson(
        {"type": "started", "id": "a1"},
        {"type": "stdout", "data": "b3V0Cg=="},
        {"type": "stderr", "data": "ZXJyCg=="},
        {"type": "exit", "code": 3, "timed_out": False},
    )
    return stream(whole[:7], whole[7:61], whole[61:])


def test_status_and_list(fake: FakeDaemon) -> None:
    fake.on("GET", "/api/v1/status", httpx.Response(200, json=DAEMON))
    fake.on("GET", "/api/v1/vms", httpx.Response(200, json=[VM]))

    async def act() -> Any:
        async with fake.async_client() as client:
            return (await client.status()).pid, [vm.name for vm in await client.list_vms()]

    assert run(act()) == (7, ["box"])


def test_create_in_async_with_deletes_the_vm(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("PUT", "/api/v1/vms/box/files", httpx.Response(204))
    fake.on("GET", "/api/v1/vms/box/files", httpx.Response(200, content=b"hi"))
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    async def act() -> bytes:
        async with fake.async_client().create(name="box") as vm:
            await vm.write_file("/root/a", b"hi", mode=0o600)
            return await vm.read_file("/root/a")

    assert run(act()) == b"hi"
    assert fake.calls() == [
        ("POST", "/api/v1/vms"),
        ("PUT", "/api/v1/vms/box/files"),
        ("GET", "/api/v1/vms/box/files"),
        ("DELETE", "/api/v1/vms/box"),
    ]
    assert dict(fake.requests[1].url.params) == {"path": "/root/a", "mode": "0600"}


def test_create_can_be_awaited(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))

    vm = run(fake.async_client().create(image="default", no_network=True))

    assert isinstance(vm, AsyncVm)
    assert json.loads(fake.requests[-1].content) == {"image": "default", "no_network": True}


def test_exec_reads_events_split_across_chunks(fake: FakeDaemon) -> None:
    fake.on("POST", EXEC, exec_answer())
    vm = AsyncVm(fake.async_client(), banger.VmInfo.from_json(VM))

    result = run(vm.exec(shell="echo out; echo err >&2; exit 3", timeout=5))

    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)
    assert json.loads(fake.requests[-1].content) == {
        "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"],
        "timeout_secs": 5,
    }


def test_exec_stream_is_an_async_iterator_with_stdin(fake: FakeDaemon) -> None:
    fake.on("POST", EXEC, exec_answer())
    fake.on("POST", "/api/v1/execs/a1/stdin", httpx.Response(204))
    vm = AsyncVm(fake.async_client(), banger.VmInfo.from_json(VM))

    async def act() -> list[banger.ExecEvent]:
        async with vm.exec_stream(["cat"], interactive=True) as s:
            await s.send_stdin("typed")
            await s.close_stdin()
            return [event async for event in s]

    events = run(act())

    assert events == [banger.Stdout(b"out\n"), banger.Stderr(b"err\n"), banger.Exit(3, False)]
    assert [(r.url.raw_path, r.content) for r in fake.requests[1:]] == [
        (b"/api/v1/execs/a1/stdin", b"typed"),
        (b"/api/v1/execs/a1/stdin?eof=true", b""),
    ]


def test_an_error_event_raises_in_async_for(fake: FakeDaemon) -> None:
    fake.on(
        "POST",
        EXEC,
        stream(
            ndjson({"type": "started", "id": "a1"}, {"type": "error", "code": "timeout", "message": "slow"})
        ),
    )
    vm = AsyncVm(fake.async_client(), banger.VmInfo.from_json(VM))

    with pytest.raises(banger.Timeout, match="slow"):
        run(vm.exec(["x"]))


def test_run_deletes_its_vm_when_exec_fails(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("POST", EXEC, error(409, "failed_precondition", "VM box is stopped"))
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    with pytest.raises(banger.FailedPrecondition):
        run(fake.async_client().run(["true"]))

    assert fake.calls() == [("POST", "/api/v1/vms"), ("POST", EXEC), ("DELETE", "/api/v1/vms/box")]


def test_upload_streams_a_tar_with_its_length(fake: FakeDaemon, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("F")
    fake.on("PUT", "/api/v1/vms/box/archive", httpx.Response(204))
    vm = AsyncVm(fake.async_client(), banger.VmInfo.from_json(VM))

    run(vm.upload(tmp_path / "f.txt", "/root"))

    request = fake.requests[-1]
    with tarfile.open(fileobj=io.BytesIO(request.content)) as tar:
        names = tar.getnames()
    assert names == ["f.txt"]
    assert request.headers["content-length"] == str(len(request.content))


def test_download_extracts_safely(fake: FakeDaemon, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        evil = tarfile.TarInfo("/etc/evil")
        tar.addfile(evil, io.BytesIO(b""))
    fake.on("GET", "/api/v1/vms/box/archive", httpx.Response(200, content=buf.getvalue()))
    vm = AsyncVm(fake.async_client(), banger.VmInfo.from_json(VM))

    with pytest.raises(banger.UnsafeArchive):
        run(vm.download("/root", tmp_path / "out"))


def test_a_dead_socket_is_daemon_unavailable() -> None:
    client = AsyncClient("/nonexistent/bangerd.sock", autostart=False)

    with pytest.raises(banger.DaemonUnavailable):
        run(client.status())
