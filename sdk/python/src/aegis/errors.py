"""Typed exceptions for the Aegis API.

Every non-2xx answer of ``aegisd`` has the body ``{"error": {"code": ..., "message": ...}}``;
the SDK raises the :class:`AegisError` subclass that matches ``code``::

    from aegis import Aegis, NotFound

    with Aegis() as client:
        try:
            client.get_task("t-nope")
        except NotFound as e:
            print(e.code, e.status, e.message)   # not_found 404 ...
"""

from __future__ import annotations

import json
from typing import Any


class AegisError(Exception):
    """Base class of every error the SDK raises.

    ``code`` is the API's machine-readable error code (``not_found``, ...), ``message`` its
    one-line explanation, ``status`` the HTTP status (``None`` when no answer was received).
    """

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.message} ({self.code}, HTTP {self.status})"
        return self.message


class InvalidRequest(AegisError):
    """400: the request is malformed or a value is out of range."""

    code = "invalid_request"


class NotFound(AegisError):
    """404: no such task, instance, exec, image, app, workspace or path."""

    code = "not_found"


class Conflict(AegisError):
    """409: the object exists already or is in a state that forbids the call."""

    code = "conflict"


class LimitReached(AegisError):
    """429: a daemon limit (VMs, instances, ports, ...) is reached."""

    code = "limit_reached"


class InternalError(AegisError):
    """500: the daemon failed; its log says more."""

    code = "internal"


class Unavailable(AegisError):
    """503: the daemon or the VM cannot serve the call now (stopping, VM stopped, ...)."""

    code = "unavailable"


class InsufficientStorage(AegisError):
    """507: not enough disk space on the host or in the guest."""

    code = "insufficient_storage"


class DaemonNotRunning(AegisError):
    """Nothing answers on the daemon's socket: start it with ``aegis up``."""

    code = "daemon_not_running"


class StreamInterrupted(AegisError):
    """A streamed answer (output feed, archive, pull) ended before it was complete."""

    code = "stream_interrupted"


class Timeout(AegisError):
    """The daemon did not answer within the client's timeout."""

    code = "timeout"


class ProtocolError(AegisError):
    """The daemon's answer could not be understood (not the API's JSON)."""

    code = "protocol_error"


ERRORS_BY_CODE: dict[str, type[AegisError]] = {
    cls.code: cls
    for cls in (InvalidRequest, NotFound, Conflict, LimitReached, InternalError, Unavailable,
                InsufficientStorage)
}


def error_from_response(status: int, body: bytes, what: str) -> AegisError:
    """The exception for a non-2xx answer ``body`` with HTTP ``status`` to request ``what``."""
    code: str | None = None
    message: str | None = None
    try:
        doc: Any = json.loads(body)
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message")
    except ValueError:
        pass
    if code is None or message is None:
        text = body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
        return ProtocolError(
            f"{what}: HTTP {status} without the API's error body: {text}", status=status
        )
    cls = ERRORS_BY_CODE.get(code, AegisError)
    return cls(message, code=code, status=status)
