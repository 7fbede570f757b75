"""The asynchronous client, :class:`AsyncAegis`: the same methods as :class:`aegis.Aegis`,
awaited (streams are async iterators, ``lease`` an async context manager)."""

from __future__ import annotations

import asyncio
import os
import queue
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import httpx

from . import models as m
from . import _tar
from ._core import (BASE_URL, DEFAULT_TIMEOUT, Feed, Req, _Api, default_socket, not_running,
                    parse_json, seg)
from .errors import AegisError, StreamInterrupted, Timeout, error_from_response

_DONE = object()


async def _aiter_sync(source: Any) -> AsyncIterator[bytes]:
    """A sync body (iterable of bytes or binary file) as an async iterator; blocking reads
    happen in a worker thread."""
    if hasattr(source, "read"):
        while True:
            chunk = await asyncio.to_thread(source.read, _tar.CHUNK)
            if not chunk:
                return
            yield chunk
    else:
        it = iter(source)
        while True:
            chunk = await asyncio.to_thread(next, it, _DONE)
            if chunk is _DONE:
                return
            yield chunk  # type: ignore[misc]


class AsyncAegis(_Api):
    """The asyncio client::

        import asyncio
        from aegis import AsyncAegis

        async def main():
            async with AsyncAegis() as client:
                r = await client.run(["echo", "hi"])
                print(r.exit_code, r.stdout_text)
                async for ev in client.task_output(r.task.id, follow=False):
                    print(ev)

        asyncio.run(main())

    Arguments as :class:`aegis.Aegis`'s.
    """

    def __init__(self, socket: str | os.PathLike[str] | None = None, *,
                 home: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT,
                 stream_timeout: float | None = None):
        self.socket = Path(socket) if socket is not None else default_socket(home)
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(self.socket)),
                                       base_url=BASE_URL, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncAegis":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ transport

    def _error(self, e: Exception, what: str) -> AegisError:
        if isinstance(e, httpx.ConnectError):
            return not_running(self.socket, e)
        if isinstance(e, httpx.TimeoutException):
            return Timeout(f"{what}: no answer from aegisd within the client's timeout "
                           f"({e.__class__.__name__}); raise `timeout=` if the call is slow")
        return AegisError(f"{what}: {e.__class__.__name__}: {e}")

    def _kwargs(self, req: Req) -> dict[str, Any]:
        kw = req.kwargs()
        body = kw.get("content")
        if body is not None and not isinstance(body, (bytes, bytearray, str)) \
                and not hasattr(body, "__aiter__"):
            kw["content"] = _aiter_sync(body)
        return kw

    async def _call(self, req: Req, parse: Callable[[Any], Any] | None = None) -> Any:
        try:
            r = await self._http.request(req.method, req.path, **self._kwargs(req))
        except httpx.HTTPError as e:
            raise self._error(e, req.what) from e
        if r.status_code >= 400:
            raise error_from_response(r.status_code, r.content, req.what)
        if parse is None:
            return None
        return parse(parse_json(req.what, r.content))

    @asynccontextmanager
    async def _open_stream(self, req: Req) -> AsyncIterator[httpx.Response]:
        timeout = httpx.Timeout(self.timeout, read=self.stream_timeout)
        try:
            async with self._http.stream(req.method, req.path, timeout=timeout,
                                         **self._kwargs(req)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise error_from_response(r.status_code, r.content, req.what)
                yield r
        except httpx.HTTPError as e:
            raise self._error(e, req.what) from e

    async def _stream(self, req: Req, make_feed: Callable[[str], Feed]) -> AsyncIterator[Any]:
        feed = make_feed(req.what)
        async with self._open_stream(req) as r:
            try:
                async for line in r.aiter_lines():
                    item = feed.line(line)
                    if item is not None:
                        yield item
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise feed.interrupted(e) from e
        feed.eof()

    # ------------------------------------------------------------ tasks

    async def run(self, command: list[str], image: str | None = None, *,
                  stdin: bytes | Any | None = None,
                  on_output: Callable[[m.Output], None] | None = None,
                  **options: Any) -> m.RunResult:
        """As :meth:`aegis.Aegis.run`: ``r = await client.run(["echo", "hi"])``."""
        task = await self.create_task(command, image, stdin=stdin is not None, **options)
        if stdin is not None:
            await self.task_stdin(task.id, stdin)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async for ev in self.task_output(task.id):
            if isinstance(ev, m.Output):
                out[ev.stream].append(ev.data)
                if on_output:
                    on_output(ev)
            else:
                task = ev.task
        return m.RunResult(task, b"".join(out["stdout"]), b"".join(out["stderr"]))

    async def stream(self, command: list[str], image: str | None = None,
                     **options: Any) -> AsyncIterator[m.OutputEvent]:
        """As :meth:`aegis.Aegis.stream`: ``async for ev in client.stream([...])``."""
        task = await self.create_task(command, image, **options)
        async for ev in self.task_output(task.id):
            yield ev

    # ------------------------------------------------------------ exec

    async def exec(self, instance: str, command: list[str], *,
                   stdin: bytes | Any | None = None,
                   on_output: Callable[[m.Output], None] | None = None,
                   **options: Any) -> m.ExecResult:
        """As :meth:`aegis.Aegis.exec`: ``r = await client.exec("web", ["ls", "/"])``."""
        ex = await self.start_exec(instance, command, stdin=stdin is not None, **options)
        if stdin is not None:
            await self.exec_stdin(ex.id, stdin)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async for ev in self.exec_output(ex.id):
            out[ev.stream].append(ev.data)
            if on_output:
                on_output(ev)
        ex = await self.get_exec(ex.id)
        if ex.state == "running":
            raise StreamInterrupted(
                f"exec {ex.id} in {instance}: its output feed ended while it still runs; the "
                "daemon stopped or the connection was lost (resume with exec_output offsets)")
        return m.ExecResult(ex, b"".join(out["stdout"]), b"".join(out["stderr"]))

    # ------------------------------------------------------------ files

    async def read_archive(self, instance: str, guest_path: str) -> AsyncIterator[bytes]:
        """As :meth:`aegis.Aegis.read_archive`, an async iterator of chunks."""
        req = Req("GET", f"/v1/instances/{seg(instance)}/files/archive",
                  params={"path": guest_path})
        async with self._open_stream(req) as r:
            try:
                async for chunk in r.aiter_bytes(_tar.CHUNK):
                    yield chunk
            except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                raise Feed(req.what, lambda d: d).interrupted(e) from e

    async def upload(self, instance: str, local_path: str | os.PathLike[str],
                     guest_dir: str) -> None:
        """As :meth:`aegis.Aegis.upload` (the archive is made in a worker thread)."""
        await self.write_archive(instance, guest_dir, _tar.tar_chunks(local_path))

    async def download(self, instance: str, guest_path: str,
                       local_dir: str | os.PathLike[str]) -> list[str]:
        """As :meth:`aegis.Aegis.download` (unpacked in a worker thread)."""
        reader = _tar.ChunkReader()
        job = asyncio.create_task(asyncio.to_thread(_tar.extract, reader, local_dir))
        try:
            async for chunk in self.read_archive(instance, guest_path):
                while True:
                    if job.done():  # the extractor failed: stop feeding it
                        return await job
                    try:
                        reader.q.put_nowait(chunk)
                        break
                    except queue.Full:
                        await asyncio.sleep(0.005)
        except BaseException as e:
            # Stop the extractor: hand it the error (it may be blocked on an empty queue).
            await self._hand(reader, job, e if isinstance(e, Exception)
                             else AegisError("download cancelled"))
            await asyncio.gather(job, return_exceptions=True)
            raise
        await self._hand(reader, job, _tar._END)
        return await job

    @staticmethod
    async def _hand(reader: _tar.ChunkReader, job: "asyncio.Task[Any]", item: object) -> None:
        while not job.done():
            try:
                reader.q.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    # ------------------------------------------------------------ leases

    @asynccontextmanager
    async def lease(self, instance: str, ttl: int = 60,
                    holder: str | None = None) -> AsyncIterator[m.Lease]:
        """As :meth:`aegis.Aegis.lease`: ``async with client.lease("web", ttl=60) as l:``;
        renewed by an asyncio task, released on exit."""
        lease = await self.create_lease(instance, ttl, holder)

        async def renew() -> None:
            while True:
                await asyncio.sleep(max(ttl / 3, 0.5))
                await self.renew_lease(instance, lease.id)

        renewer = asyncio.create_task(renew())
        try:
            yield lease
        finally:
            renewer.cancel()
            results = await asyncio.gather(renewer, return_exceptions=True)
            try:
                await self.release_lease(instance, lease.id)
            except AegisError as e:
                if e.code != "not_found":
                    raise
        failure = results[0]
        if isinstance(failure, Exception):
            raise AegisError(f"lease {lease.id} on {instance} could not be renewed: "
                             f"{failure}") from failure
