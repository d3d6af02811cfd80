"""Every route the SDK calls is one the daemon's OpenAPI document declares, with the
same method: the SDK and the daemon cannot drift apart unnoticed."""

from __future__ import annotations

import io
import re
from typing import Any

import httpx

import banger
from banger import _protocol as proto

BODY = proto.Body(io.BytesIO(), 0)
SDK_CALLS: list[proto.Call[Any]] = [
    proto.status(),
    proto.list_vms(),
    proto.create_vm({}),
    proto.get_vm("NAME"),
    proto.delete_vm("NAME"),
    proto.vm_action("NAME", "start"),
    proto.vm_action("NAME", "stop"),
    proto.vm_action("NAME", "restart"),
    proto.exec_call("NAME", {}),
    proto.exec_stdin("ID", b"", eof=False),
    proto.exec_resize("ID", 1, 1),
    proto.exec_kill("ID"),
    proto.write_file("NAME", "/p", b"", None),
    proto.read_file("NAME", "/p"),
    proto.put_archive("NAME", "/p", BODY),
    proto.get_archive("NAME", "/p"),
    proto.prepare_workspace("NAME", "/p", BODY),
    proto.export_patch("NAME", "/p"),
    proto.snapshot("NAME", None),
    proto.list_snapshots(),
    proto.delete_snapshot("NAME"),
    proto.list_images(),
    proto.get_image("NAME"),
    proto.delete_image("NAME"),
    proto.warm_image("NAME"),
]


def template(path: str) -> str:
    """`/api/v1/vms/NAME/exec` and `/api/v1/vms/{name}/exec` both become `/api/v1/vms/{}/exec`."""
    return re.sub(r"/(NAME|ID|\{[^}/]+\})(?=/|$)", "/{}", path)


def test_every_route_the_sdk_calls_is_in_the_openapi_document() -> None:
    client = banger.Client()
    client.status()
    with httpx.Client(transport=httpx.HTTPTransport(uds=client.socket), base_url=proto.BASE_URL) as http:
        doc = http.get(f"{proto.PREFIX}/openapi.json").json()

    served = {(method.upper(), template(path)) for path, ops in doc["paths"].items() for method in ops}
    used = {(call.method, template(call.path)) for call in SDK_CALLS}

    assert doc["openapi"].startswith("3.")
    assert used - served == set()
