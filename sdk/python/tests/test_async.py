"""The async client against a real aegisd (fake backend): the same basics."""

from __future__ import annotations

import asyncio
import os

import pytest

import aegis
from aegis import AsyncAegis, PortSpec, ServeTarget

from conftest import free_port


@pytest.fixture
async def aclient(daemon):
    async with AsyncAegis(daemon.socket) as c:
        yield c


async def test_run_and_stream(aclient):
    r = await aclient.run(["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (r.exit_code, r.stdout, r.stderr) == (5, b"out\n", b"err\n")
    events = [ev async for ev in aclient.stream(["sh", "-c", "echo a; sleep 0.1; echo b"])]
    assert isinstance(events[-1], aegis.End) and events[-1].task.exit_code == 0
    assert b"".join(e.data for e in events[:-1]) == b"a\nb\n"
    r = await aclient.run(["cat"], stdin=b"piped")
    assert r.stdout == b"piped"


async def test_errors(aclient, tmp_path):
    with pytest.raises(aegis.NotFound):
        await aclient.get_task("task-000000000000")
    with pytest.raises(aegis.InvalidRequest) as ei:
        await aclient.create_task([])
    assert ei.value.status == 400
    async with AsyncAegis(tmp_path / "aegisd.sock") as c:
        with pytest.raises(aegis.DaemonNotRunning, match="aegis up"):
            await c.status()


async def test_instance_exec_files_lease(aclient, tmp_path):
    port = free_port()
    inst = await aclient.create_instance(ServeTarget(
        command=["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        expose=[PortSpec(port, "http")], name=f"aweb-{port}"))
    try:
        r = await aclient.exec(inst.id, ["sh", "-c", "echo hi; exit 2"])
        assert (r.exit_code, r.stdout) == (2, b"hi\n")

        src = tmp_path / "data"
        src.mkdir()
        blob = os.urandom(1 << 20)
        (src / "blob").write_bytes(blob)
        await aclient.upload(inst.id, src, "/")
        assert (await aclient.stat(inst.id, "/data/blob")).size == len(blob)
        out = tmp_path / "out"
        out.mkdir()
        assert "data/blob" in await aclient.download(inst.id, "/data", out)
        assert (out / "data" / "blob").read_bytes() == blob

        async with aclient.lease(inst.id, ttl=1) as lease:
            await asyncio.sleep(1.8)
            assert [l.id for l in await aclient.list_leases(inst.id)] == [lease.id]
        assert await aclient.list_leases(inst.id) == []
    finally:
        await aclient.remove_instance(inst.id)
