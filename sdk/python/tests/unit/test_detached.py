"""Detached commands: `Vm.detach`, `ps`, `detached_output` and `kill_detached` send the
API's requests and read its answers (blocking and asyncio alike)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fakes import VM, FakeDaemon, error, ndjson

import banger

DETACHED: dict[str, Any] = {
    "id": "3f9a01bc",
    "pid": 412,
    "argv": ["sh", "-c", "make"],
    "started_at_ms": 1796000000000,
    "state": "exited",
    "exit_code": 2,
    "timed_out": False,
    "dropped_bytes": 0,
}


@pytest.fixture
def vm(fake: FakeDaemon) -> banger.Vm:
    fake.on("GET", "/api/v1/vms/box", httpx.Response(200, json=VM))
    return fake.client().get("box")


def test_detach_posts_an_exec_body_and_reads_the_command(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "POST",
        "/api/v1/vms/box/detached",
        httpx.Response(201, json={**DETACHED, "state": "running", "exit_code": None}),
    )

    started = vm.detach(shell="make", env={"CI": "1"}, timeout=2.5)

    sent = json.loads(fake.last("POST", "/api/v1/vms/box/detached").content)
    assert sent == {"argv": ["sh", "-c", "make"], "env": {"CI": "1"}, "timeout_secs": 3}
    assert (started.id, started.state, started.exit_code) == ("3f9a01bc", "running", None)


def test_ps_and_kill_read_detached_infos(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("GET", "/api/v1/vms/box/detached", httpx.Response(200, json=[DETACHED]))
    fake.on("POST", "/api/v1/vms/box/detached/3f9a01bc/kill", httpx.Response(200, json=DETACHED))

    listed = vm.ps()
    killed = vm.kill_detached("3f9a01bc", signal=15)

    assert [(d.id, d.exit_code) for d in listed] == [("3f9a01bc", 2)]
    assert dict(fake.last("POST", "/api/v1/vms/box/detached/3f9a01bc/kill").url.params) == {"signal": "15"}
    assert killed.argv == ["sh", "-c", "make"]


def test_output_of_an_ended_command_has_its_exit(fake: FakeDaemon, vm: banger.Vm) -> None:
    events = ndjson(
        {"type": "stdout", "data": "aGkK"},
        {"type": "stderr", "data": "b29wcwo="},
        {"type": "exit", "code": 124, "timed_out": True},
    )
    fake.on("GET", "/api/v1/vms/box/detached/3f9a01bc/output", httpx.Response(200, content=events))

    out = vm.detached_output("3f9a01bc", follow=True)

    assert dict(fake.last("GET", "/api/v1/vms/box/detached/3f9a01bc/output").url.params) == {"follow": "true"}
    assert (out.stdout, out.stderr, out.exit) == ("hi\n", "oops\n", banger.Exit(124, True))


def test_output_of_a_running_command_has_no_exit(fake: FakeDaemon, vm: banger.Vm) -> None:
    events = ndjson({"type": "stdout", "data": "aGkK"})
    fake.on("GET", "/api/v1/vms/box/detached/3f9a01bc/output", httpx.Response(200, content=events))

    out = vm.detached_output("3f9a01bc")

    assert (out.stdout, out.exit) == ("hi\n", None)


def test_an_unknown_id_is_not_found(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "GET", "/api/v1/vms/box/detached/nope/output", error(404, "not_found", "no detached command nope")
    )

    with pytest.raises(banger.NotFound):
        vm.detached_output("nope")


def test_the_async_client_detaches_too(fake: FakeDaemon) -> None:
    fake.on("GET", "/api/v1/vms/box", httpx.Response(200, json=VM))
    fake.on("GET", "/api/v1/vms/box/detached", httpx.Response(200, json=[DETACHED]))

    async def main() -> list[banger.DetachedInfo]:
        async with fake.async_client() as client:
            vm = await client.get("box")
            return await vm.ps()

    listed = asyncio.run(main())

    assert listed[0].state == "exited"
