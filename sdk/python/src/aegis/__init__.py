"""Python SDK for Aegis, a local microVM runtime: a client of ``aegisd``'s HTTP API on its
unix socket (``$AEGIS_HOME/aegisd.sock``, default ``~/.aegis/aegisd.sock``).

::

    from aegis import Aegis, ServeTarget, PortSpec

    with Aegis() as client:
        r = client.run(["sh", "-c", "echo hello"])
        print(r.exit_code, r.stdout_text)

:class:`Aegis` is synchronous; :class:`AsyncAegis` has the same methods for asyncio.
Errors are :class:`AegisError` subclasses carrying the API's ``code`` and ``message``.
"""

from .aclient import AsyncAegis
from .client import Aegis
from .errors import (AegisError, Conflict, DaemonNotRunning, InsufficientStorage, InternalError,
                     InvalidRequest, LimitReached, NotFound, ProtocolError, StreamInterrupted,
                     Timeout, Unavailable)
from .models import (App, AppServed, AppServing, AwakeBecause, End, Endpoint, Exec, ExecResult,
                     FileInfo, ImageInfo, Instance, Lease, Output, OutputEvent, PortSpec,
                     PullDone, PullEvent, PullProgress, Release, RunResult, ServeTarget, Status,
                     Task, TtySize, WatchEvent, Workspace)

__version__ = "0.1.0"

__all__ = [
    "Aegis", "AsyncAegis",
    "AegisError", "Conflict", "DaemonNotRunning", "InsufficientStorage", "InternalError",
    "InvalidRequest", "LimitReached", "NotFound", "ProtocolError", "StreamInterrupted",
    "Timeout", "Unavailable",
    "App", "AppServed", "AppServing", "AwakeBecause", "End", "Endpoint", "Exec", "ExecResult",
    "FileInfo", "ImageInfo", "Instance", "Lease", "Output", "OutputEvent", "PortSpec",
    "PullDone", "PullEvent", "PullProgress", "Release", "RunResult", "ServeTarget", "Status",
    "Task", "TtySize", "WatchEvent", "Workspace",
]
