"""Exec: the body sent, the NDJSON event stream read as it arrives, and the exec's
stdin, resize and kill requests."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from fakes import VM, FakeDaemon, error, ndjson, stream

import banger
from banger._protocol import ExecDecoder

EXEC = "/api/v1/vms/box/exec"
STARTED = {"type": "started", "id": "ex1"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def vm(fake: FakeDaemon) -> banger.Vm:
    return banger.Vm(fake.client(), banger.VmInfo.from_json(VM))


def test_exec_sends_argv_env_cwd_timeout_stdin_and_user(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("POST", EXEC, stream(ndjson(STARTED, {"type": "exit", "code": 0, "timed_out": False})))

    vm.exec(["make", "test"], env={"CI": "1"}, cwd="/root/repo", timeout=2.5, stdin="input", user="dev")

    assert json.loads(fake.requests[-1].content) == {
        "argv": ["make", "test"],
        "env": {"CI": "1"},
        "cwd": "/root/repo",
        "timeout_secs": 3,
        "stdin": b64(b"input"),
        "user": "dev",
    }


def test_shell_runs_through_sh_c(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("POST", EXEC, stream(ndjson(STARTED, {"type": "exit", "code": 0, "timed_out": False})))

    vm.exec(shell="echo $HOME | wc -c")

    assert json.loads(fake.requests[-1].content) == {"argv": ["sh", "-c", "echo $HOME | wc -c"]}


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({}, ValueError),
        ({"argv": ["a"], "shell": "a"}, ValueError),
        ({"argv": []}, ValueError),
        ({"argv": "ls -l"}, TypeError),
    ],
)
def test_a_command_needs_exactly_one_of_argv_and_shell(
    kwargs: dict[str, Any], exc: type[Exception], vm: banger.Vm
) -> None:
    with pytest.raises(exc):
        vm.exec(**kwargs)


def test_exec_collects_output_and_exit(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "POST",
        EXEC,
        stream(
            ndjson(
                STARTED,
                {"type": "stdout", "data": b64(b"out\n")},
                {"type": "stderr", "data": b64(b"err\n")},
                {"type": "stdout", "data": b64(b"\xff more\n")},
                {"type": "exit", "code": 3, "timed_out": False},
            )
        ),
    )

    result = vm.exec(["sh"])

    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (
        3,
        "out\n\ufffd more\n",
        "err\n",
        False,
    )
    assert result.stdout_bytes == b"out\n\xff more\n"
    assert not result.ok


def test_lines_split_across_chunks_are_joined(fake: FakeDaemon, vm: banger.Vm) -> None:
    whole = ndjson(
        STARTED,
        {"type": "stdout", "data": b64(b"hello world")},
        {"type": "exit", "code": 0, "timed_out": False},
    )
    fake.on("POST", EXEC, stream(whole[:5], whole[5:40], whole[40:41], whole[41:]))

    result = vm.exec(["echo"])

    assert (result.stdout, result.exit_code) == ("hello world", 0)


def test_a_last_line_without_newline_still_counts(fake: FakeDaemon, vm: banger.Vm) -> None:
    whole = ndjson(STARTED, {"type": "exit", "code": 7, "timed_out": True}).rstrip(b"\n")
    fake.on("POST", EXEC, stream(whole))

    result = vm.exec(["sleep", "9"])

    assert (result.exit_code, result.timed_out) == (7, True)


def test_the_stream_yields_events_in_order(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "POST",
        EXEC,
        stream(
            ndjson(
                STARTED,
                {"type": "stdout", "data": b64(b"a")},
                {"type": "stderr", "data": b64(b"b")},
                {"type": "exit", "code": 0, "timed_out": False},
            )
        ),
    )

    with vm.exec_stream(["x"]) as s:
        events = list(s)
        exec_id = s.id

    assert events == [banger.Stdout(b"a"), banger.Stderr(b"b"), banger.Exit(0, False)]
    assert exec_id == "ex1"


def test_an_error_event_raises_its_typed_error(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "POST",
        EXEC,
        stream(
            ndjson(
                STARTED,
                {"type": "stdout", "data": b64(b"partial")},
                {
                    "type": "error",
                    "code": "vmm_failed",
                    "message": "the VM stopped",
                    "hint": "see banger vm logs",
                },
            )
        ),
    )

    with pytest.raises(banger.VmmFailed) as caught:
        vm.exec(["x"])

    assert caught.value.hint == "see banger vm logs"


def test_a_stream_that_ends_before_the_exit_is_an_error(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("POST", EXEC, stream(ndjson(STARTED, {"type": "stdout", "data": b64(b"x")})))

    with pytest.raises(banger.Internal, match="ended before the command exited"):
        vm.exec(["x"])


def test_a_refused_exec_raises_before_any_event(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("POST", EXEC, error(409, "failed_precondition", "VM box is stopped", "banger vm start box"))

    with pytest.raises(banger.FailedPrecondition, match="VM box is stopped"):
        vm.exec_stream(["x"])


def test_stdin_resize_and_kill_address_the_exec_id(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "POST",
        EXEC,
        stream(ndjson({"type": "started", "id": "e/7"}, {"type": "exit", "code": 137, "timed_out": False})),
    )
    fake.on("POST", "/api/v1/execs/e%2F7/stdin", httpx.Response(204))
    fake.on("POST", "/api/v1/execs/e%2F7/resize", httpx.Response(204))
    fake.on("POST", "/api/v1/execs/e%2F7/kill", httpx.Response(204))

    with vm.exec_stream(["cat"], interactive=True, tty=(24, 80)) as s:
        s.send_stdin(b"line\n")
        s.close_stdin()
        s.resize(50, 132)
        s.kill()

    sent = [(r.url.raw_path.decode(), r.content) for r in fake.requests[1:]]
    assert sent == [
        ("/api/v1/execs/e%2F7/stdin", b"line\n"),
        ("/api/v1/execs/e%2F7/stdin?eof=true", b""),
        ("/api/v1/execs/e%2F7/resize", b'{"rows":50,"cols":132}'),
        ("/api/v1/execs/e%2F7/kill", b""),
    ]
    assert json.loads(fake.requests[0].content) == {
        "argv": ["cat"],
        "interactive": True,
        "tty": {"rows": 24, "cols": 80},
    }


def test_events_after_the_exit_are_ignored() -> None:
    decoder = ExecDecoder("box")

    events = decoder.feed(
        ndjson(
            STARTED, {"type": "exit", "code": 0, "timed_out": False}, {"type": "stdout", "data": b64(b"late")}
        )
    )

    assert events == [banger.Exit(0, False)]


def test_an_event_type_this_sdk_does_not_know_is_skipped() -> None:
    decoder = ExecDecoder("box")

    events = decoder.feed(
        ndjson(STARTED, {"type": "progress", "pct": 5}, {"type": "stdout", "data": b64(b"x")})
    )

    assert events == [banger.Stdout(b"x")]


def test_a_line_that_is_not_json_is_an_internal_error() -> None:
    decoder = ExecDecoder("box")

    with pytest.raises(banger.Internal, match="not an event"):
        decoder.feed(b"<html>\n")


@pytest.mark.parametrize("timeout", [0, -1])
def test_a_timeout_must_be_positive(timeout: float, vm: banger.Vm) -> None:
    with pytest.raises(ValueError):
        vm.exec(["x"], timeout=timeout)
