"""The synchronous client, :class:`Aegis`."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from . import models as m
from . import _tar
from ._core import (BASE_URL, DEFAULT_TIMEOUT, Feed, Req, _Api, default_socket, not_running,
                    seg)
from .errors import AegisError, StreamInterrupted, Timeout, error_from_response


class Aegis(_Api):
    """A client of ``aegisd`` over its unix socket::

        from aegis import Aegis

        with Aegis() as client:               # $AEGIS_HOME/aegisd.sock or ~/.aegis/aegisd.sock
            r = client.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\\n", b"err\\n")

    ``socket`` (or ``home``) names the daemon; ``timeout`` bounds each plain call, in
    seconds; ``stream_timeout`` bounds the wait for the next piece of a streamed answer
    (None: wait as long as the stream lives, as following a running command must).
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None, *,
                 home: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 stream_timeout: float | None = None):
        self.socket = Path(socket) if socket is not None else default_socket(home)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                                  base_url=BASE_URL, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Aegis":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def _error(self, e: Exception, what: str) -> AegisError:
        if isinstance(e, httpx.ConnectError):
            return not_running(self.socket, e)
        if isinstance(e, httpx.TimeoutException):
            return Timeout(f"{what}: no answer from aegisd within the client's timeout "
                           f"({e.__class__.__name__}); raise `timeout=` if the call is slow")
        return AegisError(f"{what}: {e.__class__.__name__}: {e}")

    def _call(self, req: Req, parse: Callable[[Any], Any] | None = None) -> Any:
        try:
            r = self._http.request(req.method, req.path, **req.kwargs())
        except httpx.HTTPError as e:
            raise self._error(e, req.what) from e
        if r.status_code >= 400:
            raise error_from_response(r.status_code, r.content, req.what)
        if parse is None:
            return None
        from ._core import parse_json
        return parse(parse_json(req.what, r.content))

    @contextmanager
    def _open_stream(self, req: Req, timeout: httpx.Timeout) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(req.method, req.path, timeout=timeout, **req.kwargs()) as r:
                if r.status_code >= 400:
                    r.read()
                    raise error_from_response(r.status_code, r.content, req.what)
                yield r
        except httpx.HTTPError as e:
            raise self._error(e, req.what) from e

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.stream_timeout)

    def _stream(self, req: Req, make_feed: Callable[[str], Feed]) -> Iterator[Any]:
        feed = make_feed(req.what)
        with self._open_stream(req, self._stream_timeout()) as r:
            try:
                for line in r.iter_lines():
                    item = feed.line(line)
                    if item is not None:
                        yield item
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise feed.interrupted(e) from e
        feed.eof()

    # ------------------------------------------------------------ tasks

    def run(self, command: list[str], image: str | None = None, *,
            stdin: bytes | Any | None = None,
            on_output: Callable[[m.Output], None] | None = None,
            **options: Any) -> m.RunResult:
        """Runs ``command`` in a fresh microVM and waits for it: a :class:`RunResult` with
        ``exit_code``, ``stdout``/``stderr`` (bytes) and ``stdout_text``/``stderr_text``::

            r = client.run(["python3", "-c", "print(6 * 7)"], image="debian")
            print(r.exit_code, r.stdout_text)

        ``stdin`` (bytes, iterable of bytes or binary file) is the command's stdin;
        ``on_output`` sees each :class:`Output` event as it arrives; other keyword
        arguments are :meth:`create_task`'s (``env``, ``timeout_secs``, ...).
        """
        task = self.create_task(command, image, stdin=stdin is not None, **options)
        if stdin is not None:
            self.task_stdin(task.id, stdin)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        for ev in self.task_output(task.id):
            if isinstance(ev, m.Output):
                out[ev.stream].append(ev.data)
                if on_output:
                    on_output(ev)
            else:
                task = ev.task
        return m.RunResult(task, b"".join(out["stdout"]), b"".join(out["stderr"]))

    def stream(self, command: list[str], image: str | None = None,
               **options: Any) -> Iterator[m.OutputEvent]:
        """Starts a task and yields its output events as they come, the last one an
        :class:`End` with the ended task::

            for ev in client.stream(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done"]):
                print(ev)
        """
        task = self.create_task(command, image, **options)
        yield from self.task_output(task.id)

    # ------------------------------------------------------------ exec

    def exec(self, instance: str, command: list[str], *, stdin: bytes | Any | None = None,
             on_output: Callable[[m.Output], None] | None = None,
             **options: Any) -> m.ExecResult:
        """Runs ``command`` in an instance (waking it) and waits for it: an
        :class:`ExecResult` with ``exit_code``, ``stdout``, ``stderr``::

            r = client.exec("web", ["sh", "-c", "ls /srv"])
        """
        ex = self.start_exec(instance, command, stdin=stdin is not None, **options)
        if stdin is not None:
            self.exec_stdin(ex.id, stdin)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        for ev in self.exec_output(ex.id):
            out[ev.stream].append(ev.data)
            if on_output:
                on_output(ev)
        ex = self.get_exec(ex.id)
        if ex.state == "running":
            raise StreamInterrupted(
                f"exec {ex.id} in {instance}: its output feed ended while it still runs; the "
                "daemon stopped or the connection was lost (resume with exec_output offsets)")
        return m.ExecResult(ex, b"".join(out["stdout"]), b"".join(out["stderr"]))

    # ------------------------------------------------------------ files

    def read_archive(self, instance: str, guest_path: str) -> Iterator[bytes]:
        """The tar stream of ``guest_path`` (a directory recursively), in chunks. A guest
        failure midway raises :class:`StreamInterrupted` (never a silently short archive)."""
        req = Req("GET", f"/v1/instances/{seg(instance)}/files/archive",
                  params={"path": guest_path})
        with self._open_stream(req, self._stream_timeout()) as r:
            try:
                yield from r.iter_bytes(_tar.CHUNK)
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise Feed(req.what, lambda d: d).interrupted(e) from e

    def upload(self, instance: str, local_path: str | os.PathLike[str], guest_dir: str) -> None:
        """Copies a local file or directory into the existing guest directory ``guest_dir``
        (``upload("web", "./site", "/srv")`` makes ``/srv/site``), streaming."""
        self.write_archive(instance, guest_dir, _tar.tar_chunks(local_path))

    def download(self, instance: str, guest_path: str,
                 local_dir: str | os.PathLike[str]) -> list[str]:
        """Copies a guest file or directory into the existing local directory ``local_dir``
        (``download("web", "/srv/site", ".")`` makes ``./site``), streaming; returns the
        names unpacked."""
        return _tar.extract(_tar.ChunkReader(self.read_archive(instance, guest_path)),
                            local_dir)

    # ------------------------------------------------------------ leases

    @contextmanager
    def lease(self, instance: str, ttl: int = 60, holder: str | None = None
              ) -> Iterator[m.Lease]:
        """Keeps ``instance`` awake for the block: creates a lease of ``ttl`` seconds, renews
        it in a background thread every ``ttl/3`` seconds, releases it on exit::

            with client.lease("web", ttl=60) as lease:
                ...   # the instance is not paused here
        """
        lease = self.create_lease(instance, ttl, holder)
        stop = threading.Event()
        failure: list[BaseException] = []

        def renew() -> None:
            while not stop.wait(max(ttl / 3, 0.5)):
                try:
                    self.renew_lease(instance, lease.id)
                except BaseException as e:  # reported on exit
                    failure.append(e)
                    return

        t = threading.Thread(target=renew, name=f"aegis-lease-{lease.id}", daemon=True)
        t.start()
        try:
            yield lease
        finally:
            stop.set()
            t.join()
            try:
                self.release_lease(instance, lease.id)
            except AegisError as e:
                if e.code != "not_found":
                    raise
        if failure:
            raise AegisError(f"lease {lease.id} on {instance} could not be renewed: "
                             f"{failure[0]}") from failure[0]
