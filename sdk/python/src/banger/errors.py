"""Typed errors: one class per banger error code, each carrying code, message and hint."""

from __future__ import annotations

import json
from typing import Any, Optional


class BangerError(Exception):
    """A failure reported by banger: `code` is one of the daemon's closed set of error
    codes, `message` what failed, `hint` what to do about it (or None), `chain` the
    causes below the message (outermost first), `status` the HTTP status if any."""

    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        hint: Optional[str] = None,
        chain: Optional[list[str]] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.hint = hint
        self.chain: list[str] = list(chain or [])
        self.status = status

    def __str__(self) -> str:
        text = self.message
        for cause in self.chain:
            text += f": {cause}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, hint={self.hint!r})"


class InvalidArgument(BangerError):
    """The request was malformed or a value was out of range (HTTP 400)."""

    code = "invalid_argument"


class NotFound(BangerError):
    """The named VM, image, snapshot or guest file does not exist (HTTP 404)."""

    code = "not_found"


class AlreadyExists(BangerError):
    """The name is taken (HTTP 409)."""

    code = "already_exists"


class FailedPrecondition(BangerError):
    """The object is in the wrong state for this request (HTTP 409)."""

    code = "failed_precondition"


class PermissionDenied(BangerError):
    """The caller may not do this (HTTP 403)."""

    code = "permission_denied"


class Timeout(BangerError):
    """An operation took longer than allowed (HTTP 504)."""

    code = "timeout"


class Unavailable(BangerError):
    """The daemon or a resource it needs is not available (HTTP 503)."""

    code = "unavailable"


class VmmFailed(BangerError):
    """The VMM or the guest failed (HTTP 502)."""

    code = "vmm_failed"


class AgentFailed(BangerError):
    """The guest agent answered with an error (HTTP 502)."""

    code = "agent_failed"


class HostFailed(BangerError):
    """A host resource is missing or a host call failed (HTTP 502)."""

    code = "host_failed"


class Internal(BangerError):
    """A bug or an unclassified failure (HTTP 500)."""

    code = "internal"


class DaemonUnavailable(Unavailable):
    """No daemon could be reached or started, or the connection to it was lost."""


class UnsafeArchive(PermissionDenied):
    """`Vm.download` refused an archive entry that would land outside the destination
    (an absolute path, `..`, a link pointing out) or is a device or FIFO."""


ERRORS: dict[str, type[BangerError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Timeout,
        Unavailable,
        VmmFailed,
        AgentFailed,
        HostFailed,
        Internal,
    )
}

# The class for a status whose body is not banger's structured error.
_BY_STATUS: dict[int, type[BangerError]] = {
    400: InvalidArgument,
    403: PermissionDenied,
    404: NotFound,
    409: FailedPrecondition,
    503: Unavailable,
    504: Timeout,
}


def error_from(fields: dict[str, Any], status: Optional[int] = None) -> BangerError:
    """The exception for a `{code, message, hint, chain}` object (a response body or an
    exec stream's `error` event)."""
    code = str(fields.get("code") or "internal")
    cls = ERRORS.get(code, BangerError)
    chain = fields.get("chain")
    return cls(
        str(fields.get("message") or code),
        code=code,
        hint=fields.get("hint") if isinstance(fields.get("hint"), str) else None,
        chain=[str(c) for c in chain] if isinstance(chain, list) else None,
        status=status,
    )


def error_from_response(status: int, body: bytes) -> BangerError:
    """The exception for a non-2xx answer: its structured body when it has one, else a
    class chosen by the status with the body's text as the message."""
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    if isinstance(fields, dict) and isinstance(fields.get("message"), str):
        return error_from(fields, status)
    cls = _BY_STATUS.get(status, Internal)
    text = body.decode("utf-8", "replace").strip()[:500]
    return cls(f"HTTP {status}: {text}" if text else f"HTTP {status}", status=status)
