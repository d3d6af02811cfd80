"""The blocking client on one real VM: files, archives, exec edge cases, errors."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import banger


@pytest.fixture(scope="module")
def client() -> Iterator[banger.Client]:
    with banger.Client() as c:
        yield c


@pytest.fixture(scope="module")
def vm(client: banger.Client) -> Iterator[banger.Vm]:
    with client.create(exec_only=True) as vm:
        yield vm


def test_the_client_uses_the_socket_the_environment_names(client: banger.Client) -> None:
    status = client.status()

    assert client.socket == os.environ["BANGER_SOCKET"]
    assert status.pid > 0


def test_an_unknown_vm_is_not_found(client: banger.Client) -> None:
    with pytest.raises(banger.NotFound):
        client.get("no-such-vm")


def test_a_bad_spec_is_invalid_argument_and_creates_nothing(client: banger.Client) -> None:
    with pytest.raises(banger.InvalidArgument):
        client.create("bad-spec", backend="no-such-backend")

    assert "bad-spec" not in [v.name for v in client.list_vms()]


def test_the_vm_is_listed_and_running(client: banger.Client, vm: banger.Vm) -> None:
    names = [v.name for v in client.list_vms()]

    assert vm.name in names
    assert vm.refresh().state == "running"


def test_a_file_round_trips_with_its_mode(vm: banger.Vm) -> None:
    vm.write_file("/root/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)

    result = vm.exec(["/root/run.sh"])

    assert (result.exit_code, result.stdout) == (0, "ran\n")
    assert vm.read_file("/root/run.sh") == b"#!/bin/sh\necho ran\n"


def test_a_missing_guest_file_is_not_found(vm: banger.Vm) -> None:
    with pytest.raises(banger.NotFound):
        vm.read_file("/root/nope")


def test_a_directory_uploads_and_downloads(vm: banger.Vm, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/a.txt").write_text("A\n")
    (src / "b.bin").write_bytes(bytes(range(256)))

    vm.upload(src, "/root/up")
    vm.download("/root/up", tmp_path / "back")

    assert (tmp_path / "back/sub/a.txt").read_text() == "A\n"
    assert (tmp_path / "back/b.bin").read_bytes() == bytes(range(256))


def test_stdin_env_and_cwd_reach_the_command(vm: banger.Vm) -> None:
    result = vm.exec(
        ["sh", "-c", 'read line; echo "$line $GREETING $(pwd)"'],
        stdin="hi\n",
        env={"GREETING": "there"},
        cwd="/tmp",
    )

    assert result.stdout == "hi there /tmp\n"


def test_a_timeout_kills_the_command(vm: banger.Vm) -> None:
    t0 = time.monotonic()

    result = vm.exec(["sleep", "60"], timeout=1)

    assert result.timed_out
    assert time.monotonic() - t0 < 30


def test_interactive_stdin_streams_to_the_command(vm: banger.Vm) -> None:
    with vm.exec_stream(["cat"], interactive=True) as stream:
        stream.send_stdin(b"one\n")
        stream.send_stdin(b"two\n")
        stream.close_stdin()
        result = stream.wait()

    assert (result.exit_code, result.stdout) == (0, "one\ntwo\n")


def test_closing_a_stream_early_kills_the_command(vm: banger.Vm) -> None:
    with vm.exec_stream(["sh", "-c", "echo started; exec sleep 300"]) as stream:
        first = next(stream)

    time.sleep(1)
    sleeping = vm.exec(["sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null | grep -cx sleep || true"])

    assert first == banger.Stdout(b"started\n")
    assert sleeping.stdout == "0\n"


def test_kill_ends_the_command(vm: banger.Vm) -> None:
    with vm.exec_stream(["sleep", "300"]) as stream:
        stream.kill()
        result = stream.wait()

    assert result.exit_code > 128


def test_a_snapshot_is_listed_until_deleted(client: banger.Client, vm: banger.Vm) -> None:
    name = f"sdk-snap-{os.getpid()}"

    snap = vm.snapshot(name)
    listed = [s.name for s in client.snapshots()]
    client.delete_snapshot(name)

    assert (snap.name, snap.vm) == (name, vm.name)
    assert name in listed
    assert name not in [s.name for s in client.snapshots()]
