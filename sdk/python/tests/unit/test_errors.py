"""A non-2xx answer becomes the exception class of its code, with message and hint."""

from __future__ import annotations

import pytest
from fakes import FakeDaemon, error

import banger
from banger.errors import error_from_response


@pytest.mark.parametrize(
    "status, code, cls",
    [
        (400, "invalid_argument", banger.InvalidArgument),
        (403, "permission_denied", banger.PermissionDenied),
        (404, "not_found", banger.NotFound),
        (409, "already_exists", banger.AlreadyExists),
        (409, "failed_precondition", banger.FailedPrecondition),
        (504, "timeout", banger.Timeout),
        (503, "unavailable", banger.Unavailable),
        (502, "vmm_failed", banger.VmmFailed),
        (502, "agent_failed", banger.AgentFailed),
        (502, "host_failed", banger.HostFailed),
        (500, "internal", banger.Internal),
    ],
)
def test_each_code_maps_to_its_class(status: int, code: str, cls: type[banger.BangerError]) -> None:
    body = (
        b'{"code": "%s", "message": "it broke", "hint": "try again", "chain": ["deep cause"]}' % code.encode()
    )

    err = error_from_response(status, body)

    assert type(err) is cls
    assert (err.code, err.message, err.hint, err.chain, err.status) == (
        code,
        "it broke",
        "try again",
        ["deep cause"],
        status,
    )
    assert str(err) == "it broke: deep cause (hint: try again)"


def test_a_code_this_sdk_does_not_know_is_still_a_banger_error() -> None:
    err = error_from_response(418, b'{"code": "teapot", "message": "short and stout", "hint": null}')

    assert type(err) is banger.BangerError
    assert (err.code, err.message, err.hint) == ("teapot", "short and stout", None)


def test_a_body_that_is_not_the_structured_error_maps_by_status() -> None:
    err = error_from_response(404, b"<html>nothing here</html>")

    assert type(err) is banger.NotFound
    assert err.message == "HTTP 404: <html>nothing here</html>"


def test_an_unexpected_status_without_a_body_is_internal() -> None:
    err = error_from_response(502, b"")

    assert type(err) is banger.Internal
    assert err.message == "HTTP 502"


def test_daemon_unavailable_is_an_unavailable() -> None:
    assert issubclass(banger.DaemonUnavailable, banger.Unavailable)
    assert banger.DaemonUnavailable("x").code == "unavailable"


def test_an_answer_through_the_client_raises_the_typed_error(fake: FakeDaemon) -> None:
    fake.on(
        "GET", "/api/v1/vms/ghost", error(404, "not_found", "no VM named ghost", "banger vm list shows them")
    )

    with pytest.raises(banger.NotFound) as caught:
        fake.client().get("ghost")

    assert caught.value.hint == "banger vm list shows them"
