"""The sync client against a real aegisd (fake backend)."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import aegis
from aegis import Aegis, PortSpec, ServeTarget

from conftest import free_port


def test_status(client):
    st = client.status()
    assert st.status == "running" and st.backend == "fake"
    assert "debian" in st.builtin_images


def test_run_gives_exit_code_and_both_streams(client):
    r = client.run(["sh", "-c", "echo out; printf 'caf\\303\\251' >&2; exit 3"])
    assert r.exit_code == 3
    assert r.task.state == "exited"
    assert r.stdout == b"out\n" and r.stdout_text == "out\n"
    assert r.stderr == "café".encode() and r.stderr_text == "café"
    assert client.get_task(r.task.id).exit_code == 3
    assert r.task.id in [t.id for t in client.list_tasks()]
    client.remove_task(r.task.id)
    with pytest.raises(aegis.NotFound):
        client.get_task(r.task.id)


def test_run_feeds_stdin(client):
    r = client.run(["sh", "-c", "tr a-z A-Z; echo done >&2"], stdin=iter([b"abc", b"def"]))
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"ABCDEF", b"done\n")


def test_stream_yields_output_in_order_then_end(client):
    events = list(client.stream(
        ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done; echo e >&2"]))
    assert isinstance(events[-1], aegis.End)
    assert events[-1].task.exit_code == 0
    out = [e for e in events[:-1] if e.stream == "stdout"]
    assert b"".join(e.data for e in out) == b"1\n2\n3\n"
    # Offsets are contiguous: a feed can be resumed from them.
    offset = 0
    for e in out:
        assert e.offset == offset
        offset += len(e.data)
    # Resumed from offset 2, the feed sends the rest only.
    tail = list(client.task_output(events[-1].task.id, stdout_offset=2, stderr_offset=2))
    assert b"".join(e.data for e in tail if isinstance(e, aegis.Output)) == b"2\n3\n"
    assert isinstance(tail[-1], aegis.End)


def test_bad_request_is_a_typed_400(client):
    with pytest.raises(aegis.InvalidRequest) as ei:
        client.create_task([])
    e = ei.value
    assert (e.code, e.status) == ("invalid_request", 400)
    assert "command" in e.message and isinstance(e, aegis.AegisError)


def test_unknown_ids_are_not_found(client):
    for call in (lambda: client.get_task("task-000000000000"),
                 lambda: client.get_instance("no-such-instance"),
                 lambda: client.get_exec("exec-000000000000"),
                 lambda: client.get_workspace("no-such-workspace"),
                 lambda: list(client.task_output("task-000000000000"))):
        with pytest.raises(aegis.NotFound) as ei:
            call()
        assert ei.value.code == "not_found" and ei.value.status == 404 and ei.value.message


def test_daemon_not_running(tmp_path):
    with Aegis(tmp_path / "aegisd.sock", timeout=2) as c:
        with pytest.raises(aegis.DaemonNotRunning) as ei:
            c.status()
    msg = str(ei.value)
    assert "aegis up" in msg and str(tmp_path / "aegisd.sock") in msg
    # A socket file nothing listens on (a daemon that crashed) says so as well.
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    with Aegis(stale, timeout=2) as c:
        with pytest.raises(aegis.DaemonNotRunning, match="aegis up"):
            list(c.task_output("task-1"))
    # A home without a daemon.
    with Aegis(home=tmp_path / "nohome") as c:
        with pytest.raises(aegis.DaemonNotRunning, match="no socket at"):
            c.list_tasks()


def test_a_feed_cut_by_the_daemon_raises_instead_of_hanging(own_daemon):
    with Aegis(own_daemon.socket) as c:
        task = c.create_task(["sh", "-c", "echo started; sleep 5"])
        feed = c.task_output(task.id)
        first = next(feed)
        assert first.data == b"started\n"
        own_daemon.kill()
        t0 = time.monotonic()
        with pytest.raises(aegis.StreamInterrupted, match=task.id):
            for _ in feed:
                pass
        assert time.monotonic() - t0 < 10


@pytest.fixture
def web(client):
    port = free_port()
    name = f"web-{port}"
    inst = client.create_instance(ServeTarget(
        command=["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        expose=[PortSpec(port, "http")], name=name))
    yield inst
    client.remove_instance(inst.id)
    with pytest.raises(aegis.NotFound):
        client.get_instance(inst.id)


def http_get(url: str) -> int:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_instance_serves_and_execs(client, web):
    assert web.target.expose == [PortSpec(web.target.expose[0].guest_port, "http")]
    (ep,) = client.endpoints(web.name)
    assert ep.url == f"http://127.0.0.1:{ep.host_port}"
    assert http_get(ep.url) == 200  # wakes it
    assert client.get_instance(web.name).state == "running"
    assert web.id in [i.id for i in client.list_instances()]

    r = client.exec(web.name, ["sh", "-c", "echo hi; echo oops >&2; exit 4"],
                    env={"GREETING": "x"})
    assert (r.exit_code, r.stdout, r.stderr) == (4, b"hi\n", b"oops\n")
    assert r.exec.state == "exited" and r.exec.instance == web.id

    r = client.exec(web.name, ["sh", "-c", 'cat; echo "$GREETING"'], stdin=b"in\n",
                    env={"GREETING": "hello"})
    assert (r.exit_code, r.stdout) == (0, b"in\nhello\n")

    # A long process: signalled, followed by offsets, its exit code read afterwards.
    ex = client.start_exec(web.name, ["sh", "-c", "echo up; exec sleep 30"])
    feed = client.exec_output(ex.id)
    assert next(feed).data == b"up\n"
    client.signal_exec(ex.id, 15)
    assert list(feed) == []
    assert client.get_exec(ex.id).exit_code == 128 + 15

    # The instance's own log (http.server logs requests on stderr).
    logs = b"".join(e.data for e in client.instance_logs(web.name) if e.stream == "stderr")
    assert b"GET / " in logs

    assert client.pause_instance(web.name).state == "paused"
    assert client.resume_instance(web.name).state == "running"
    assert client.stop_instance(web.name).state == "terminated"


def test_files_round_trip(client, web, tmp_path):
    src = tmp_path / "payload"
    (src / "sub").mkdir(parents=True)
    (src / "small.txt").write_text("hello\n")
    (src / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (src / "sub" / "run.sh").chmod(0o750)
    big = os.urandom(4 << 20)  # several chunks each way
    (src / "big.bin").write_bytes(big)

    client.upload(web.name, src, "/")
    st = client.stat(web.name, "/payload/big.bin")
    assert (st.kind, st.size) == ("file", len(big))
    listing = client.list_dir(web.name, "/payload")
    assert [e.name for e in listing.entries] == ["big.bin", "small.txt", "sub"]
    assert client.stat(web.name, "/payload/sub/run.sh").mode & 0o777 == 0o750

    out = tmp_path / "out"
    out.mkdir()
    names = client.download(web.name, "/payload", out)
    assert "payload/big.bin" in names
    assert (out / "payload" / "big.bin").read_bytes() == big
    assert (out / "payload" / "small.txt").read_text() == "hello\n"
    assert (out / "payload" / "sub" / "run.sh").stat().st_mode & 0o777 == 0o750

    with pytest.raises(aegis.NotFound):
        client.upload(web.name, src / "small.txt", "/no/such/dir")
    with pytest.raises(aegis.InvalidRequest):
        client.stat(web.name, "relative/path")


def test_watch_sees_a_file_written(client, web):
    # The fake backend runs guest commands on the host with the guest root as their working
    # directory (the files API resolves guest paths under it): relative paths only.
    client.exec(web.name, ["mkdir", "-p", "watched"])
    events = []

    def writer():
        time.sleep(0.3)
        client.exec(web.name, ["sh", "-c", "echo x > watched/result.json"])

    t = threading.Thread(target=writer)
    t.start()
    feed = client.watch(web.name, "/watched")
    for ev in feed:
        events.append(ev)
        if ev.kind == "written":
            break
    feed.close()
    t.join()
    assert ("written", "result.json", False) in [(e.kind, e.name, e.dir) for e in events]


def test_lease_context_manager_renews_and_releases(client, web):
    with client.lease(web.name, ttl=1, holder="sdk-test") as lease:
        assert lease.holder == "sdk-test" and lease.ttl_secs == 1
        time.sleep(2.2)  # past its TTL: alive only because it was renewed
        assert [l.id for l in client.list_leases(web.name)] == [lease.id]
        assert lease.id in [l.id for l in client.awake_because(web.name).leases]
    assert client.list_leases(web.name) == []


def test_images_apps_workspaces(client):
    images = {i.reference: i for i in client.list_images()}
    assert images["debian"].kind == "builtin"
    assert client.get_image("debian").reference == "debian"
    with pytest.raises(aegis.AegisError):
        client.get_app("no-such-app")
    assert isinstance(client.list_apps(), list)

    ws = client.create_workspace("sdk-ws", mode="shared")
    assert (ws.name, ws.mode) == ("sdk-ws", "shared")
    assert "sdk-ws" in [w.name for w in client.list_workspaces()]
    with pytest.raises(aegis.Conflict):
        client.create_workspace("sdk-ws")
    client.remove_workspace("sdk-ws")
    with pytest.raises(aegis.NotFound):
        client.get_workspace("sdk-ws")


def test_a_failed_pull_raises_from_the_iterator(client):
    # Nothing listens on port 1: the pull fails, as an error event or an error status.
    with pytest.raises(aegis.AegisError) as ei:
        for _ in client.pull_image("127.0.0.1:1/sdk/nothing:1"):
            pass
    assert ei.value.code in aegis.errors.ERRORS_BY_CODE, ei.value
    assert "127.0.0.1:1" in str(ei.value)


def test_app_unknown_is_not_found(client):
    with pytest.raises(aegis.NotFound):
        client.get_app("no-such-app")
    with pytest.raises(aegis.NotFound):
        client.create_app("sdk-app", "localhost:5999/not/pulled:1")


def test_timeout_is_typed(tmp_path):
    # A socket that accepts connections but never answers.
    path = tmp_path / "silent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(8)
    try:
        t0 = time.monotonic()
        with Aegis(path, timeout=0.3) as c:
            with pytest.raises(aegis.Timeout, match="timeout"):
                c.status()
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()
