"""Streaming tar for uploads and downloads: never a whole file in memory.

An upload's archive is written by :mod:`tarfile` in a thread into a bounded queue that the
request body reads from; a download's archive is read by :mod:`tarfile` (stream mode
``r|``) from a file object fed by the response's chunks.
"""

from __future__ import annotations

import os
import queue
import tarfile
import threading
from pathlib import Path
from typing import Iterator

CHUNK = 256 * 1024
_END = object()


class _QueueWriter:
    def __init__(self, q: "queue.Queue[object]"):
        self.q = q

    def write(self, b: bytes) -> int:
        if b:
            self.q.put(bytes(b))
        return len(b)


def tar_chunks(local_path: str | os.PathLike[str], arcname: str | None = None) -> Iterator[bytes]:
    """The tar stream of ``local_path`` (a file or, recursively, a directory), in chunks.

    Entries are named from its last component (``/a/b/dir`` -> ``dir/...``), as the
    daemon's own archives are.
    """
    src = Path(local_path)
    if not src.exists() and not src.is_symlink():
        raise FileNotFoundError(f"upload: {src} does not exist")
    name = arcname or src.name
    q: "queue.Queue[object]" = queue.Queue(maxsize=8)
    stop = threading.Event()

    def produce() -> None:
        try:
            with tarfile.open(fileobj=_QueueWriter(q), mode="w|", format=tarfile.PAX_FORMAT,
                              bufsize=CHUNK) as tf:
                tf.add(str(src), arcname=name, recursive=True,
                       filter=lambda ti: None if stop.is_set() else ti)
            q.put(_END)
        except BaseException as e:  # handed to the reading side
            q.put(e)

    t = threading.Thread(target=produce, name="aegis-upload-tar", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue.
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


class ChunkReader:
    """A read-only binary file over chunks handed in by ``feed`` (a queue) or an iterator."""

    def __init__(self, chunks: Iterator[bytes] | None = None):
        self._it = chunks
        self.q: "queue.Queue[object]" = queue.Queue(maxsize=8)
        self._buf = b""
        self._eof = False

    def _next(self) -> bytes | None:
        if self._it is not None:
            return next(self._it, None)
        item = self.q.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self._next()
            if chunk is None:
                self._eof = True
                break
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def end(self) -> None:
        self.q.put(_END)


def extract(reader: ChunkReader, local_dir: str | os.PathLike[str]) -> list[str]:
    """Unpacks the tar stream from ``reader`` into ``local_dir``; returns the member names.
    Uses tarfile's ``data`` filter (no absolute names, no escapes, no devices)."""
    dest = Path(local_dir)
    if not dest.is_dir():
        raise NotADirectoryError(f"download: {dest} is not an existing directory")
    names: list[str] = []
    with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tf:
        for member in tf:
            names.append(member.name)
            if _HAS_FILTER:
                tf.extract(member, dest, filter="data")
            else:  # Python without PEP 706: refuse what the data filter would
                _check_member(member, dest)
                tf.extract(member, dest)
    return names


_HAS_FILTER = hasattr(tarfile, "data_filter")


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    target = (dest / member.name).resolve()
    if member.name.startswith("/") or not target.is_relative_to(dest.resolve()):
        raise tarfile.OutsideDestinationError(member, str(target)) if hasattr(
            tarfile, "OutsideDestinationError") else ValueError(
            f"download: archive member {member.name!r} would land outside {dest}")
    if member.isdev():
        raise ValueError(f"download: archive member {member.name!r} is a device node")
