"""The part of the client shared by :class:`aegis.Aegis` and :class:`aegis.AsyncAegis`.

Every plain API call is written once here, in :class:`_Api`, as a request description and a
parser handed to ``self._call`` (or ``self._stream`` for NDJSON feeds). The sync client's
``_call`` returns the parsed value, the async client's returns an awaitable of it; so both
clients have the same methods with the same arguments. Calls that take several requests
(``run``, ``exec``, ``upload``, ``download``, ``lease``) are written per client.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from . import models as m
from .errors import AegisError, DaemonNotRunning, ProtocolError, StreamInterrupted

BASE_URL = "http://aegisd"
DEFAULT_TIMEOUT = 30.0
_NO_BODY = object()


def default_socket(home: str | os.PathLike[str] | None = None) -> Path:
    """The daemon's socket: ``<home>/aegisd.sock``, home being ``home``, else
    ``$AEGIS_HOME``, else ``~/.aegis``."""
    if home is None:
        home = os.environ.get("AEGIS_HOME") or Path.home() / ".aegis"
    return Path(home) / "aegisd.sock"


def not_running(socket: Path, cause: BaseException) -> DaemonNotRunning:
    """The error for a socket nothing answers on, saying why and what to do."""
    if not socket.exists():
        why = f"there is no socket at {socket}"
    elif not socket.is_socket():
        why = f"{socket} exists but is not a unix socket"
    else:
        why = f"nothing answers on {socket} ({cause.__class__.__name__}: {cause})"
    return DaemonNotRunning(
        f"aegisd is not running: {why}. Start it with `aegis up` (same AEGIS_HOME), or pass "
        f"the socket of the daemon that runs (Aegis(socket=...) or Aegis(home=...))"
    )


def seg(value: str) -> str:
    """One percent-encoded path segment."""
    return quote(str(value), safe="")


@dataclass
class Req:
    """One HTTP request to the API; ``what`` names it in error messages."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = _NO_BODY
    content: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"headers": dict(self.headers)}
        if self.params:
            kw["params"] = {
                k: (("true" if v else "false") if isinstance(v, bool) else v)
                for k, v in self.params.items()
                if v is not None
            }
        if self.json is not _NO_BODY:
            kw["content"] = json.dumps(self.json).encode()
            kw["headers"]["content-type"] = "application/json"
        elif self.content is not None:
            kw["content"] = self.content
        return kw


def parse_json(what: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as e:
        text = body[:200].decode("utf-8", "replace")
        raise ProtocolError(f"{what}: the answer is not JSON ({e}): {text!r}") from None


def model(cls: type) -> Callable[[Any], Any]:
    return lambda doc: m.from_json(cls, doc)


def model_list(cls: type) -> Callable[[Any], Any]:
    return lambda doc: [m.from_json(cls, d) for d in doc]


def output_event(doc: dict[str, Any]) -> m.OutputEvent:
    kind = doc.get("event")
    if kind == "output":
        return m.Output._from_wire(doc)
    if kind == "end":
        return m.End(task=m.from_json(m.Task, doc["task"]))
    raise ProtocolError(f"unknown output event {kind!r} in the feed: {doc!r}")


def pull_event(doc: dict[str, Any]) -> m.PullEvent:
    kind = doc.get("type")
    if kind == "progress":
        return m.from_json(m.PullProgress, doc)
    if kind == "done":
        return m.PullDone(image=m.from_json(m.ImageInfo, doc["image"]))
    if kind == "error":
        from .errors import ERRORS_BY_CODE

        err = doc.get("error") or {}
        cls = ERRORS_BY_CODE.get(err.get("code", ""), AegisError)
        raise cls(f"image pull failed: {err.get('message', doc)}", code=err.get("code"))
    raise ProtocolError(f"unknown pull event {kind!r}: {doc!r}")


class Feed:
    """Parses the lines of one NDJSON stream and checks how it ends.

    ``parse`` turns a decoded line into the item yielded; ``complete`` (optional) says,
    from the items seen, whether the stream may end here. A stream that ends otherwise
    raises :class:`StreamInterrupted` instead of ending quietly short.
    """

    def __init__(self, what: str, parse: Callable[[Any], Any],
                 complete: Callable[[list[Any]], str | None] | None = None):
        self.what = what
        self.parse = parse
        self._complete = complete
        self._last: list[Any] = []

    def line(self, raw: str) -> Any | None:
        if not raw.strip():
            return None
        item = self.parse(parse_json(self.what, raw.encode()))
        self._last = [item]
        return item

    def eof(self) -> None:
        if self._complete is not None:
            problem = self._complete(self._last)
            if problem:
                raise StreamInterrupted(f"{self.what}: {problem}")

    def interrupted(self, cause: BaseException) -> StreamInterrupted:
        return StreamInterrupted(
            f"{self.what}: the stream broke off ({cause.__class__.__name__}: {cause}); "
            "the daemon stopped or the connection was lost. Feeds can be resumed from the "
            "offsets already received"
        )


def task_feed(task_id: str, follow: bool) -> Callable[[str], Feed]:
    def complete(last: list[Any]) -> str | None:
        if follow and not (last and isinstance(last[0], m.End)):
            return (f"the output feed of task {task_id} ended without its `end` event; "
                    "the daemon stopped or the connection was lost")
        return None

    return lambda what: Feed(what, output_event, complete)


class _Api:
    """The API calls written once for both clients (see the module's docstring)."""

    def _call(self, req: Req, parse: Callable[[Any], Any] | None = None) -> Any:
        raise NotImplementedError

    def _stream(self, req: Req, feed: Callable[[str], Feed]) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------ daemon

    def status(self):
        """The daemon's status: ``client.status().backend`` is e.g. ``"qemu"``."""
        return self._call(Req("GET", "/v1/status"), model(m.Status))

    def shutdown(self):
        """Asks the daemon to stop (as ``aegis down``); it answers before it is gone."""
        return self._call(Req("POST", "/v1/shutdown"))

    def openapi(self):
        """The daemon's OpenAPI document, as a dict."""
        return self._call(Req("GET", "/v1/openapi.json"), lambda d: d)

    # ------------------------------------------------------------ tasks

    def create_task(self, command: list[str], image: str | None = None, *,
                    env: dict[str, str] | None = None, workdir: str | None = None,
                    user: str | None = None, vcpus: int | None = None,
                    memory_mib: int | None = None, timeout_secs: int | None = None,
                    stdin: bool = False, workspace: str | None = None,
                    artifacts: list[str] | None = None,
                    max_artifact_bytes: int | None = None):
        """Starts a task (``POST /v1/tasks``) and returns its :class:`Task` at once.

        ``client.create_task(["make", "test"], image="debian", timeout_secs=600)``
        """
        body: dict[str, Any] = {"command": list(command), "stdin": stdin}
        for k, v in (("image", image), ("env", env), ("workdir", workdir), ("user", user),
                     ("vcpus", vcpus), ("memory_mib", memory_mib),
                     ("timeout_secs", timeout_secs), ("workspace", workspace),
                     ("artifacts", artifacts), ("max_artifact_bytes", max_artifact_bytes)):
            if v is not None:
                body[k] = v
        return self._call(Req("POST", "/v1/tasks", json=body), model(m.Task))

    def get_task(self, task_id: str):
        """The task ``task_id`` (:class:`NotFound` if there is none)."""
        return self._call(Req("GET", f"/v1/tasks/{seg(task_id)}"), model(m.Task))

    def list_tasks(self):
        """Every task the daemon keeps."""
        return self._call(Req("GET", "/v1/tasks"), model_list(m.Task))

    def remove_task(self, task_id: str):
        """Deletes an ended task and its output (:class:`Conflict` while it runs)."""
        return self._call(Req("DELETE", f"/v1/tasks/{seg(task_id)}"))

    def cancel_task(self, task_id: str):
        """Cancels a running task; returns the :class:`Task`."""
        return self._call(Req("POST", f"/v1/tasks/{seg(task_id)}/cancel"), model(m.Task))

    def task_output(self, task_id: str, *, follow: bool = True, stdout_offset: int = 0,
                    stderr_offset: int = 0):
        """The task's output as an iterator of :class:`Output` events, then (with
        ``follow``) one :class:`End` carrying the ended task::

            for ev in client.task_output(task.id):
                if isinstance(ev, aegis.Output):
                    sys.stdout.buffer.write(ev.data)

        Resume after a broken connection by passing the offsets already received. A feed
        that ends without its ``end`` event raises :class:`StreamInterrupted`.
        """
        req = Req("GET", f"/v1/tasks/{seg(task_id)}/output",
                  params={"follow": follow, "stdout_offset": stdout_offset,
                          "stderr_offset": stderr_offset})
        return self._stream(req, task_feed(task_id, follow))

    def task_stdin(self, task_id: str, data: Any):
        """Sends ``data`` (bytes, an iterable of bytes or a binary file) as the task's stdin;
        its end is the command's end-of-file. The task must be created with ``stdin=True``."""
        return self._call(Req("POST", f"/v1/tasks/{seg(task_id)}/stdin", content=data,
                              headers={"content-type": "application/octet-stream"}))

    # ------------------------------------------------------------ instances

    def create_instance(self, target: m.ServeTarget):
        """Creates an instance serving ``target`` (``POST /v1/instances``)::

            inst = client.create_instance(ServeTarget(
                command=["python3", "-m", "http.server", "8000"],
                expose=[PortSpec(8000, "http")], name="web"))
            print(inst.endpoints[0].url)
        """
        return self._call(Req("POST", "/v1/instances", json=m.to_json(target)),
                          model(m.Instance))

    def list_instances(self):
        return self._call(Req("GET", "/v1/instances"), model_list(m.Instance))

    def get_instance(self, instance: str):
        """Inspects an instance by id or name."""
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}"), model(m.Instance))

    def pause_instance(self, instance: str):
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/pause"), model(m.Instance))

    def resume_instance(self, instance: str):
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/resume"),
                          model(m.Instance))

    def stop_instance(self, instance: str):
        """Terminates the instance's VM (it wakes again on the next connection or exec)."""
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/stop"), model(m.Instance))

    def remove_instance(self, instance: str):
        """Deletes the instance, stopping its VM."""
        return self._call(Req("DELETE", f"/v1/instances/{seg(instance)}"))

    def endpoints(self, instance: str):
        """Where the instance's exposed ports are reachable: a list of :class:`Endpoint`."""
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}"),
                          lambda d: m.from_json(m.Instance, d).endpoints)

    def awake_because(self, instance: str):
        """Why the instance is (or stays) awake: :class:`AwakeBecause`."""
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}/awake"),
                          model(m.AwakeBecause))

    def instance_logs(self, instance: str, *, follow: bool = False, stdout_offset: int = 0,
                      stderr_offset: int = 0):
        """The instance's stdout and stderr as :class:`Output` events; ``follow`` waits for
        more until the instance goes away (or the iterator is closed)."""
        req = Req("GET", f"/v1/instances/{seg(instance)}/logs",
                  params={"follow": follow, "stdout_offset": stdout_offset,
                          "stderr_offset": stderr_offset})
        return self._stream(req, lambda what: Feed(what, output_event))

    # ------------------------------------------------------------ leases

    def create_lease(self, instance: str, ttl_secs: int, holder: str | None = None):
        """A lease keeping ``instance`` awake for ``ttl_secs`` (prefer :meth:`lease`)."""
        body: dict[str, Any] = {"ttl_secs": ttl_secs}
        if holder is not None:
            body["holder"] = holder
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/leases", json=body),
                          model(m.Lease))

    def renew_lease(self, instance: str, lease_id: str, ttl_secs: int | None = None):
        body = {"ttl_secs": ttl_secs} if ttl_secs is not None else {}
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/leases/{seg(lease_id)}/renew",
                              json=body), model(m.Lease))

    def release_lease(self, instance: str, lease_id: str):
        return self._call(Req("DELETE", f"/v1/instances/{seg(instance)}/leases/{seg(lease_id)}"))

    def list_leases(self, instance: str):
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}/leases"), model_list(m.Lease))

    # ------------------------------------------------------------ exec

    def start_exec(self, instance: str, command: list[str], *,
                   env: dict[str, str] | list[tuple[str, str]] | None = None,
                   workdir: str | None = None, user: str | None = None, stdin: bool = False,
                   tty: m.TtySize | None = None):
        """Starts ``command`` in the instance (waking it) and returns the :class:`Exec` once
        the guest started it; follow it with :meth:`exec_output`, then :meth:`get_exec`."""
        body: dict[str, Any] = {"command": list(command), "stdin": stdin}
        if env:
            items = env.items() if isinstance(env, dict) else env
            body["env"] = [[k, v] for k, v in items]
        if workdir is not None:
            body["workdir"] = workdir
        if user is not None:
            body["user"] = user
        if tty is not None:
            body["tty"] = m.to_json(tty)
        return self._call(Req("POST", f"/v1/instances/{seg(instance)}/exec", json=body),
                          model(m.Exec))

    def get_exec(self, exec_id: str):
        return self._call(Req("GET", f"/v1/execs/{seg(exec_id)}"), model(m.Exec))

    def exec_output(self, exec_id: str, *, follow: bool = True, stdout_offset: int = 0,
                    stderr_offset: int = 0):
        """The exec's output as :class:`Output` events. With ``follow`` the feed ends once
        the exec ended and every byte was sent (there is no end event: read the exit code
        with :meth:`get_exec`). Resumable by offsets."""
        req = Req("GET", f"/v1/execs/{seg(exec_id)}/output",
                  params={"follow": follow, "stdout_offset": stdout_offset,
                          "stderr_offset": stderr_offset})
        return self._stream(req, lambda what: Feed(what, output_event))

    def exec_stdin(self, exec_id: str, data: Any):
        """Sends ``data`` (bytes, an iterable of bytes or a binary file) as the exec's stdin,
        then its end-of-file. The exec must be started with ``stdin=True``."""
        return self._call(Req("POST", f"/v1/execs/{seg(exec_id)}/stdin", content=data,
                              headers={"content-type": "application/octet-stream"}))

    def signal_exec(self, exec_id: str, signal: int = 15):
        """Sends ``signal`` (default SIGTERM) to the exec's process."""
        return self._call(Req("POST", f"/v1/execs/{seg(exec_id)}/signal",
                              params={"signal": int(signal)}))

    def resize_exec(self, exec_id: str, rows: int, cols: int):
        return self._call(Req("POST", f"/v1/execs/{seg(exec_id)}/resize",
                              params={"rows": rows, "cols": cols}))

    # ------------------------------------------------------------ files

    def stat(self, instance: str, path: str):
        """A guest path's :class:`FileInfo` (symlinks not followed)."""
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}/files/stat",
                              params={"path": path}), model(m.FileInfo))

    def list_dir(self, instance: str, path: str):
        """A guest directory's :class:`FileInfo` with its ``entries``."""
        return self._call(Req("GET", f"/v1/instances/{seg(instance)}/files/list",
                              params={"path": path}), model(m.FileInfo))

    def write_archive(self, instance: str, guest_dir: str, tar: Any):
        """Unpacks the tar stream ``tar`` (bytes, iterable of bytes or binary file) into the
        existing guest directory ``guest_dir``."""
        return self._call(Req("PUT", f"/v1/instances/{seg(instance)}/files/archive",
                              params={"path": guest_dir}, content=tar,
                              headers={"content-type": "application/x-tar"}))

    def watch(self, instance: str, guest_dir: str):
        """:class:`WatchEvent` s for changes to ``guest_dir``'s entries, until the iterator
        is closed or the directory goes away::

            for ev in client.watch("web", "/out"):
                if ev.kind == "written" and ev.name == "result.json":
                    break
        """
        req = Req("GET", f"/v1/instances/{seg(instance)}/files/watch", params={"path": guest_dir})
        return self._stream(req, lambda what: Feed(what, model(m.WatchEvent)))

    # ------------------------------------------------------------ images

    def list_images(self):
        return self._call(Req("GET", "/v1/images"), model_list(m.ImageInfo))

    def get_image(self, reference: str):
        return self._call(Req("GET", f"/v1/images/{seg(reference)}"), model(m.ImageInfo))

    def remove_image(self, reference: str):
        return self._call(Req("DELETE", f"/v1/images/{seg(reference)}"))

    def pull_image(self, reference: str):
        """Pulls an OCI image: an iterator of :class:`PullProgress` events ending with one
        :class:`PullDone`; a failed pull raises from the iterator::

            for ev in client.pull_image("alpine:3.21"):
                print(ev)
        """
        def complete(last: list[Any]) -> str | None:
            if not (last and isinstance(last[0], m.PullDone)):
                return "the pull's progress stream ended before its `done` event"
            return None

        req = Req("POST", "/v1/images/pull", json={"reference": reference})
        return self._stream(req, lambda what: Feed(what, pull_event, complete))

    # ------------------------------------------------------------ apps

    def list_apps(self):
        return self._call(Req("GET", "/v1/apps"), model_list(m.App))

    def get_app(self, name: str):
        return self._call(Req("GET", f"/v1/apps/{seg(name)}"), model(m.App))

    def create_app(self, name: str, image: str, *, command: list[str] | None = None,
                   expose: list[m.PortSpec] | None = None):
        """Creates an app bound to a pulled image."""
        body: dict[str, Any] = {"name": name, "image": image}
        if command is not None:
            body["command"] = list(command)
        if expose is not None:
            body["expose"] = m.to_json(expose)
        return self._call(Req("POST", "/v1/apps", json=body), model(m.App))

    def remove_app(self, name: str):
        return self._call(Req("DELETE", f"/v1/apps/{seg(name)}"))

    def list_releases(self, app: str):
        return self._call(Req("GET", f"/v1/apps/{seg(app)}/releases"), model_list(m.Release))

    def publish_release(self, app: str, *, from_dir: str | None = None,
                        dest: str | None = None, label: str | None = None):
        """Publishes the app's next release (``from_dir``: a host directory added as a layer)."""
        body = {k: v for k, v in (("from", from_dir), ("dest", dest), ("label", label))
                if v is not None}
        return self._call(Req("POST", f"/v1/apps/{seg(app)}/releases", json=body),
                          model(m.Release))

    def serve_app(self, app: str, *, release: int | None = None, rollback: bool = False,
                  workspace: str | None = None):
        body: dict[str, Any] = {"rollback": rollback}
        if release is not None:
            body["release"] = release
        if workspace is not None:
            body["workspace"] = workspace
        return self._call(Req("POST", f"/v1/apps/{seg(app)}/serve", json=body),
                          model(m.AppServed))

    # ------------------------------------------------------------ workspaces

    def list_workspaces(self):
        return self._call(Req("GET", "/v1/workspaces"), model_list(m.Workspace))

    def get_workspace(self, name: str):
        return self._call(Req("GET", f"/v1/workspaces/{seg(name)}"), model(m.Workspace))

    def create_workspace(self, name: str, mode: str | None = None):
        """Creates a workspace (``mode``: "isolated", the default, or "shared")."""
        body: dict[str, Any] = {"name": name}
        if mode is not None:
            body["mode"] = mode
        return self._call(Req("POST", "/v1/workspaces", json=body), model(m.Workspace))

    def remove_workspace(self, name: str):
        return self._call(Req("DELETE", f"/v1/workspaces/{seg(name)}"))
