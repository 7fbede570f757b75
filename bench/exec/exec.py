"""Exec round trip: `aegis exec ID -- true` on a running and on a paused instance, against
`aegis run -- true` (a fresh microVM), measured interleaved in one run with a private aegisd.

Each sample is the wall time of one CLI process, start to exit (CLI start, API calls, wake if
any, spawn in the guest, exit reported, output feed closed). Only processes this script starts
are signalled, by pid.
"""

from __future__ import annotations

import argparse
import json
import datetime as dt
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.3f} s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default=str(REPO / "target/release"))
    ap.add_argument("--spawn-rtt", default=str(REPO / "target/release/examples/spawn_rtt"),
                    help="the raw session Spawn baseline (cargo build --release -p aegis-vmm "
                         "--example spawn_rtt)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    bindir = Path(a.bin)
    aegis, aegisd = bindir / "aegis", bindir / "aegisd"
    harness = REPO / "target/x86_64-unknown-linux-gnu/harness/aegis-harness"
    spawn_rtt = Path(a.spawn_rtt)
    for p in (aegis, aegisd, harness, spawn_rtt):
        if not p.exists():
            sys.exit(f"missing {p}; run scripts/build.sh --release (or pass --bin target/debug)")
    cache = Path(os.environ.get("AEGIS_CACHE", os.path.expanduser("~/.aegis/cache")))
    home = Path(tempfile.mkdtemp(prefix="aegis-bench-exec-"))
    (home / "cache").symlink_to(cache)
    env = dict(os.environ, AEGIS_HOME=str(home), AEGIS_HARNESS=str(harness))
    log = open(home / "aegisd.log", "w")
    daemon = subprocess.Popen(
        [str(aegisd), "--home", str(home), "--backend", "qemu", "--router-addr", "127.0.0.1:0"],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )

    def cli(*args: str, check: bool = True) -> float:
        t = time.monotonic()
        r = subprocess.run([str(aegis), *args], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True)
        dt_ = time.monotonic() - t
        if check and r.returncode != 0:
            raise RuntimeError(f"aegis {' '.join(args)}: {r.returncode} {r.stderr.decode()}")
        return dt_

    try:
        for _ in range(300):
            if subprocess.run([str(aegis), "status"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        port = str(free_port())
        cli("run", "--detach", "--name", "web", "--expose", port, "--pause-after", "1h",
            "--", "python3", "-m", "http.server", port, "--bind", "127.0.0.1")
        cli("resume", "web")
        loads = [os.getloadavg()[0]]
        running, paused, runs = [], [], []
        for i in range(a.iterations):
            running.append(cli("exec", "web", "--", "true"))
            cli("pause", "web")
            paused.append(cli("exec", "web", "--", "true"))
            if i < a.runs:
                runs.append(cli("run", "--", "true"))
            loads.append(os.getloadavg()[0])
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

    # The floor: the same `true` through a raw session Spawn to a VM of its own, no aegisd.
    r = subprocess.run([str(spawn_rtt), str(a.iterations)], capture_output=True, text=True,
                       env=dict(os.environ, AEGIS_TEST_HARNESS=str(harness)), timeout=900)
    if r.returncode != 0:
        sys.exit(f"spawn_rtt failed ({r.returncode}): {r.stderr.strip()}")
    raw = [ms / 1000 for ms in json.loads(r.stdout.strip().splitlines()[-1])["samples_ms"]]
    loads.append(os.getloadavg()[0])

    rows = [
        ("`aegis exec web -- true`, instance running", running),
        ("`aegis exec web -- true`, instance paused (resumed by the exec)", paused),
        ("`aegis run -- true` (fresh microVM)", runs),
        ("raw session `Spawn` of `true` to `Exited` (no aegisd, API or CLI: `spawn_rtt`)", raw),
    ]
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    out = [
        "# Exec round trip",
        "",
        f"Recorded by `bench/exec/run.sh` (issue 10) on {dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC, "
        f"git {git}, binaries `{bindir}`.",
        "",
        "## Machine",
        "",
        f"- {os.cpu_count()} CPUs, {cpu}; {platform.platform()}",
        f"- {qemu}, accelerator TCG (`/dev/kvm` is PVM here)",
        f"- 1-min load average: min {min(loads):.2f}, max {max(loads):.2f} during the run "
        "(other engineers' builds share the cores: absolute numbers are inflated and noisy)",
        "",
        "## Results (wall time of one CLI process; p99 is nearest-rank, the maximum for N < 100)",
        "",
        "| measurement | N | min | median | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, xs in rows:
        out.append(f"| {name} | {len(xs)} | {fmt(min(xs))} | {fmt(statistics.median(xs))} "
                   f"| {fmt(percentile(xs, 99))} |")
    Path(a.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
