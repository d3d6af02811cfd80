"""Each SDK method sends the request the API contract gives, and reads its answer."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import httpx
import pytest
from fake_bangerd import DAEMON
from fakes import IMAGE, SNAPSHOT, VM, FakeDaemon

import banger


def no_content() -> httpx.Response:
    return httpx.Response(204)


@pytest.fixture
def vm(fake: FakeDaemon) -> banger.Vm:
    fake.on("GET", "/api/v1/vms/box", httpx.Response(200, json=VM))
    vm = fake.client().get("box")
    fake.requests.clear()
    return vm


def body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


Act = Callable[[banger.Client, banger.Vm], Any]

CASES: dict[str, Any] = {
    "status": (lambda c, v: c.status(), "GET", "/api/v1/status", {}, None, httpx.Response(200, json=DAEMON)),
    "list_vms": (lambda c, v: c.list_vms(), "GET", "/api/v1/vms", {}, None, httpx.Response(200, json=[VM])),
    "get": (lambda c, v: c.get("box"), "GET", "/api/v1/vms/box", {}, None, httpx.Response(200, json=VM)),
    "images": (lambda c, v: c.images(), "GET", "/api/v1/images", {}, None, httpx.Response(200, json=[IMAGE])),
    "image": (
        lambda c, v: c.image("default"),
        "GET",
        "/api/v1/images/default",
        {},
        None,
        httpx.Response(200, json=IMAGE),
    ),
    "delete_image": (
        lambda c, v: c.delete_image("old"),
        "DELETE",
        "/api/v1/images/old",
        {},
        None,
        no_content(),
    ),
    "warm_image": (
        lambda c, v: c.warm_image("default", pool=1),
        "POST",
        "/api/v1/images/default/warm",
        {},
        {"pool": 1},
        httpx.Response(200, json=SNAPSHOT),
    ),
    "warm_image_without_a_pool": (
        lambda c, v: c.warm_image("default", pool=0, vcpu=2),
        "POST",
        "/api/v1/images/default/warm",
        {},
        {"pool": 0, "vcpu": 2},
        httpx.Response(200, json=SNAPSHOT),
    ),
    "warm_image_back_to_the_default_pool": (
        lambda c, v: c.warm_image("default", pool="default"),
        "POST",
        "/api/v1/images/default/warm",
        {},
        {"pool": "default"},
        httpx.Response(200, json=SNAPSHOT),
    ),
    "snapshots": (
        lambda c, v: c.snapshots(),
        "GET",
        "/api/v1/snapshots",
        {},
        None,
        httpx.Response(200, json=[SNAPSHOT]),
    ),
    "delete_snapshot": (
        lambda c, v: c.delete_snapshot("snap"),
        "DELETE",
        "/api/v1/snapshots/snap",
        {},
        None,
        no_content(),
    ),
    "start": (
        lambda c, v: v.start(),
        "POST",
        "/api/v1/vms/box/start",
        {},
        None,
        httpx.Response(200, json=VM),
    ),
    "stop": (lambda c, v: v.stop(), "POST", "/api/v1/vms/box/stop", {}, None, httpx.Response(200, json=VM)),
    "restart": (
        lambda c, v: v.restart(),
        "POST",
        "/api/v1/vms/box/restart",
        {},
        None,
        httpx.Response(200, json=VM),
    ),
    "refresh": (lambda c, v: v.refresh(), "GET", "/api/v1/vms/box", {}, None, httpx.Response(200, json=VM)),
    "delete": (lambda c, v: v.delete(), "DELETE", "/api/v1/vms/box", {}, None, no_content()),
    "read_file": (
        lambda c, v: v.read_file("/etc/hostname"),
        "GET",
        "/api/v1/vms/box/files",
        {"path": "/etc/hostname"},
        None,
        httpx.Response(200, content=b"box\n"),
    ),
    "export_patch": (
        lambda c, v: v.export_patch(),
        "GET",
        "/api/v1/vms/box/workspace/patch",
        {},
        None,
        httpx.Response(200, text="diff --git a/x b/x\n"),
    ),
    "snapshot": (
        lambda c, v: v.snapshot(),
        "POST",
        "/api/v1/vms/box/snapshots",
        {},
        {},
        httpx.Response(201, json=SNAPSHOT),
    ),
    "snapshot_named": (
        lambda c, v: v.snapshot("before"),
        "POST",
        "/api/v1/vms/box/snapshots",
        {},
        {"name": "before"},
        httpx.Response(201, json=SNAPSHOT),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_request_shape(case: str, fake: FakeDaemon, vm: banger.Vm) -> None:
    act, method, path, params, sent, answer = CASES[case]
    fake.on(method, path, answer)

    act(vm._client, vm)

    request = fake.requests[-1]
    assert (request.method, request.url.path, dict(request.url.params), body(request)) == (
        method,
        path,
        params,
        sent,
    )


def test_answers_are_parsed_into_types(fake: FakeDaemon) -> None:
    fake.on("GET", "/api/v1/vms", httpx.Response(200, json=[VM]))
    fake.on("GET", "/api/v1/status", httpx.Response(200, json=DAEMON))
    fake.on("GET", "/api/v1/snapshots", httpx.Response(200, json=[SNAPSHOT]))
    fake.on("GET", "/api/v1/images", httpx.Response(200, json=[IMAGE]))
    client = fake.client()

    vms = client.list_vms()
    status = client.status()
    snaps = client.snapshots()
    images = client.images()

    assert [(v.name, v.info.state, v.info.ip, v.info.boot) for v in vms] == [
        ("box", "running", "172.30.0.2", banger.BootTimings(3, 900))
    ]
    assert (status.version, status.pid) == ("0.1.0", 7)
    assert (snaps[0].name, snaps[0].vm, snaps[0].warm) == ("snap", "box", False)
    assert (images[0].name, images[0].rootfs_bytes) == ("default", 1000)


def test_fields_a_newer_daemon_adds_are_ignored(fake: FakeDaemon) -> None:
    fake.on("GET", "/api/v1/vms/box", httpx.Response(200, json={**VM, "gpu": "none"}))

    vm = fake.client().get("box")

    assert vm.info.id == "01J0VM"


def test_create_sends_only_the_fields_given(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))

    vm = fake.client().create(
        "box", image="default", vcpu=2, publish=["8080:80"], policy={"mode": "open"}, user="dev:1500"
    )

    assert body(fake.requests[-1]) == {
        "name": "box",
        "image": "default",
        "vcpu": 2,
        "publish": ["8080:80"],
        "policy": {"mode": "open"},
        "user": "dev:1500",
    }
    assert vm.name == "box"


def test_create_sends_an_idle_timeout(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))

    fake.client().create("box", idle_timeout_secs=300)

    assert body(fake.requests[-1]) == {"name": "box", "idle_timeout_secs": 300}


def test_a_run_or_a_create_can_bypass_the_pool(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))

    fake.client().create("box", warm=True, no_pool=True)

    assert body(fake.requests[-1]) == {"name": "box", "warm": True, "no_pool": True}
    assert banger._protocol.run_spec(None, None, no_pool=True)["no_pool"] is True
    assert "no_pool" not in banger._protocol.run_spec(None)


def test_create_as_a_context_manager_deletes_the_vm(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("DELETE", "/api/v1/vms/box", no_content())

    with fake.client().create() as vm:
        vm_name = vm.name

    assert vm_name == "box"
    assert fake.calls() == [("POST", "/api/v1/vms"), ("DELETE", "/api/v1/vms/box")]


def test_a_vm_deleted_inside_its_block_is_fine(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on(
        "DELETE",
        "/api/v1/vms/box",
        no_content(),
        httpx.Response(404, json={"code": "not_found", "message": "gone"}),
    )

    with fake.client().create() as vm:
        vm.delete()

    assert fake.calls()[-2:] == [("DELETE", "/api/v1/vms/box"), ("DELETE", "/api/v1/vms/box")]


def test_the_blocks_own_error_wins_over_a_failed_delete(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(503, json={"code": "unavailable", "message": "busy"}))

    with pytest.raises(KeyError), pytest.warns(RuntimeWarning, match="could not delete VM box"):
        with fake.client().create():
            raise KeyError("the block's own")


def test_names_are_escaped_in_paths(fake: FakeDaemon) -> None:
    fake.on("GET", "/api/v1/vms/a%2Fb", httpx.Response(200, json=VM))

    fake.client().get("a/b")

    assert fake.requests[-1].url.raw_path == b"/api/v1/vms/a%2Fb"


@pytest.mark.parametrize(
    "mode, sent", [(None, None), (0o755, "0755"), ("0600", "0600"), ("644", "0644"), (0o4755, "4755")]
)
def test_write_file_sends_the_bytes_and_an_octal_mode(
    mode: Optional[Any], sent: Optional[str], fake: FakeDaemon, vm: banger.Vm
) -> None:
    fake.on("PUT", "/api/v1/vms/box/files", no_content())

    vm.write_file("/root/hello.txt", "héllo", mode=mode)

    request = fake.requests[-1]
    assert request.content == "héllo".encode()
    assert request.url.params.get("path") == "/root/hello.txt"
    assert request.url.params.get("mode") == sent


@pytest.mark.parametrize("mode", ["rwx", "0o9", -1, 0o10000])
def test_write_file_refuses_what_is_not_a_file_mode(mode: Any, fake: FakeDaemon, vm: banger.Vm) -> None:
    with pytest.raises(ValueError):
        vm.write_file("/x", b"", mode=mode)

    assert fake.requests == []


def test_read_file_returns_the_bytes(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on("GET", "/api/v1/vms/box/files", httpx.Response(200, content=b"\x00\xffbinary"))

    assert vm.read_file("/bin/x") == b"\x00\xffbinary"


def test_a_missing_guest_file_is_not_found(fake: FakeDaemon, vm: banger.Vm) -> None:
    fake.on(
        "GET", "/api/v1/vms/box/files", httpx.Response(404, json={"code": "not_found", "message": "no /nope"})
    )

    with pytest.raises(banger.NotFound):
        vm.read_file("/nope")


def test_a_dead_socket_is_daemon_unavailable() -> None:
    client = banger.Client("/nonexistent/bangerd.sock", autostart=False)

    with pytest.raises(banger.DaemonUnavailable) as caught:
        client.status()

    assert "no bangerd answers on /nonexistent/bangerd.sock" in str(caught.value)


def test_a_connection_lost_mid_request_is_daemon_unavailable() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    client = banger.Client(transport=httpx.MockTransport(drop))

    with pytest.raises(banger.DaemonUnavailable, match="lost the connection"):
        client.list_vms()
