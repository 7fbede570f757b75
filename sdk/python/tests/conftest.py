"""A real aegisd with the fake backend (guest commands run as host processes) in a private
home, as the Rust tests' TestDaemon starts one.

Binaries: ``AEGISD`` (default ``<repo>/target/debug/aegisd``, built with
``cargo build -p aegisd --features fake``) and ``AEGIS_HARNESS`` (default
``<repo>/target/x86_64-unknown-linux-gnu/harness/aegis-harness``, from ``scripts/build.sh``).
A missing binary fails the tests; it never skips them.

The fake backend boots nothing, but the daemon checks that a kernel and the built-in images
exist before it starts a "VM": the private home gets empty stand-ins for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from aegis import Aegis

REPO = Path(__file__).resolve().parents[3]


def _binary(env: str, default: Path, how: str) -> Path:
    path = Path(os.environ.get(env) or default)
    if not path.is_file():
        pytest.fail(f"{path} is missing (set {env} to override): {how}", pytrace=False)
    return path


class Daemon:
    """One aegisd process in a temporary home."""

    def __init__(self) -> None:
        self.aegisd = _binary("AEGISD", REPO / "target/debug/aegisd",
                              "build it with `cargo build -p aegisd --features fake`")
        self.harness = _binary(
            "AEGIS_HARNESS", REPO / "target/x86_64-unknown-linux-gnu/harness/aegis-harness",
            "build it with `scripts/build.sh`")
        self.home = Path(tempfile.mkdtemp(prefix="aegis-sdk-test-"))
        for image in ("busybox", "debian"):
            d = self.home / "cache" / "images" / image
            d.mkdir(parents=True)
            (d / "rootfs.ext4").touch()
        self.kernel = self.home / "vmlinux-stand-in"
        self.kernel.touch()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.home / "aegisd.sock"

    def log(self) -> str:
        try:
            return (self.home / "aegisd.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        env = dict(os.environ, AEGIS_HARNESS=str(self.harness), AEGIS_KERNEL=str(self.kernel),
                   AEGIS_LOG="debug")
        env.pop("AEGIS_HOME", None)
        log = open(self.home / "aegisd.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.aegisd), "--home", str(self.home), "--backend", "fake",
             "--router-addr", "127.0.0.1:0"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        with Aegis(self.socket, timeout=2) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"aegisd exited early ({self.proc.returncode}); log:\n"
                                f"{self.log()}", pytrace=False)
                try:
                    c.status()
                    return
                except Exception:
                    time.sleep(0.05)
        pytest.fail(f"aegisd did not become ready within 30 s; log:\n{self.log()}",
                    pytrace=False)

    def kill(self) -> None:
        """Kills the daemon hard (a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    d.start()
    yield d
    d.stop()


@pytest.fixture
def own_daemon():
    """A daemon of the test's own (for tests that kill it)."""
    d = Daemon()
    d.start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with Aegis(daemon.socket) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
