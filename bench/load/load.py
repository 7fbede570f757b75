"""bench/load (issue 9): many connections across many instances, mixing wakes and steady
traffic, for a bounded time; aegisd's RSS and open file descriptors before, during and after.

Run it through bench/load/run.sh. A private aegisd (own home, the shared cache symlinked in)
serves N instances of `busybox httpd` (the busybox image, 128 MiB each, `--pause-after` short)
answering `ok` from an index page.
Half of the instances get steady traffic for the whole run; the other half get bursts with
quiet gaps longer than their pause timer, so they pause and are woken again by the next burst.
C client connections run at once (asyncio; each sends one `GET /` and reads the whole answer,
busybox httpd closes after each response, then it reconnects) until the time is up.

What it records: requests answered 200 and failed, wakes (resumes, restores, cold boots from
the instances' counters), aegisd's VmRSS and fd count sampled every 0.5 s (before, peak, after
the traffic, and after the instances settled), and whether the growth stays within the stated
bounds, both against the warm baseline (every instance created and woken once, so each holds
its VM's sockets and its router listener): fds back to within 16 of it, RSS within 64 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "boot"))
import aegisbench as ab  # noqa: E402

FD_BOUND = 16
RSS_BOUND_KIB = 64 * 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    return ab.read_status(pid)["VmRSS"]


class Sampler(threading.Thread):
    """Samples aegisd's RSS and fd count every `period` seconds."""

    def __init__(self, pid: int, period: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append((time.monotonic(), rss_kib(self.pid), fds(self.pid)))
            except OSError:
                return
            self.stopped.wait(self.period)

    def peak(self) -> tuple[int, int]:
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)


async def one_request(port: int, timeout: float) -> str | None:
    """None when answered 200, else why not: a timeout, the OS error, or the status line."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(b"GET / HTTP/1.0\r\nHost: load\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), timeout)
        writer.close()
        status = data.split(b"\r\n", 1)[0]
        if data.startswith(b"HTTP/1.") and b" 200 " in status:
            return None
        return f"status {status[:40].decode(errors='replace')!r}" if data else "closed, no answer"
    except asyncio.TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except OSError as e:
        return type(e).__name__


def count(counts: dict, why: str | None) -> None:
    counts["ok" if why is None else "failed"] += 1
    if why is not None:
        counts["why"][why] = counts["why"].get(why, 0) + 1


async def client(port: int, deadline: float, bursty: bool, burst: float, gap: float,
                 counts: dict[str, int], timeout: float) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        if bursty:
            # All bursty clients share one clock, so their instances really go quiet together.
            phase = (time.monotonic() - start) % (burst + gap)
            if phase >= burst:
                await asyncio.sleep(min(burst + gap - phase, max(0.0, deadline - time.monotonic())))
                continue
        count(counts, await one_request(port, timeout))


async def traffic(ports: list[int], conns: int, duration: float, burst: float, gap: float,
                  timeout: float) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "why": {}}
    deadline = time.monotonic() + duration
    half = len(ports) // 2
    tasks = []
    for i in range(conns):
        idx = i % len(ports)
        tasks.append(client(ports[idx], deadline, idx >= half, burst, gap, counts, timeout))
    await asyncio.gather(*tasks)
    return counts


async def wake_all(ports: list[int], timeout: float) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "why": {}}
    for why in await asyncio.gather(*(one_request(p, timeout) for p in ports)):
        count(counts, why)
    return counts


def seconds(duration: str) -> float:
    """`4s`, `1m` or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if duration and duration[-1] in units:
        return float(duration[:-1]) * units[duration[-1]]
    return float(duration)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--pause-after", default="4s")
    p.add_argument("--burst", type=float, default=6.0)
    p.add_argument("--gap", type=float, default=9.0)
    p.add_argument("--timeout", type=float, default=60.0, help="per request, including a wake")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    ab.sigterm_as_interrupt()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.conns * 2 + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    machine = ab.machine()
    rev = ab.git_rev()
    with tempfile.TemporaryDirectory(prefix="aegis-load-") as tmpdir:
        tmp = Path(tmpdir)
        ab.snapshot_binaries(tmp)
        with ab.Daemon(tmp, ab.default_cache()) as d:
            names = [f"load{i}" for i in range(args.instances)]
            for n in names:
                d.cli("run", "--detach", "--name", n, "--image", "busybox", "--memory", "128M",
                      "--pause-after", args.pause_after, "--expose", "8000:http", "--",
                      "sh", "-c", "mkdir -p /srv && echo ok > /srv/index.html && "
                      "exec httpd -f -p 8000 -h /srv")
            ports = []
            for n in names:
                info = d.inspect_instance(n)
                ports.append(int(info["endpoints"][0]["url"].rsplit(":", 1)[1].rstrip("/")))
            start_rss, start_fds = rss_kib(d.pid), fds(d.pid)
            # Warm-up: wake every instance once (cold boots, one at a time on 2 emulated cores).
            warm = asyncio.run(wake_all(ports, args.timeout))
            warm_rss, warm_fds = rss_kib(d.pid), fds(d.pid)
            sampler = Sampler(d.pid)
            sampler.start()
            t0 = time.monotonic()
            counts = asyncio.run(traffic(ports, args.conns, args.duration, args.burst, args.gap,
                                         args.timeout))
            elapsed = time.monotonic() - t0
            after_rss, after_fds = rss_kib(d.pid), fds(d.pid)
            # Settle: every connection is closed; let the idle timers pause everything.
            time.sleep(seconds(args.pause_after) + 3)
            sampler.stopped.set()
            sampler.join()
            settled_rss, settled_fds = rss_kib(d.pid), fds(d.pid)
            peak_rss, peak_fds = sampler.peak()
            stats = {"cold_boots": 0, "snapshot_restores": 0, "resumes": 0, "pauses": 0}
            states: dict[str, int] = {}
            for n in names:
                info = d.inspect_instance(n)
                for k in stats:
                    stats[k] += info["stats"][k]
                states[info["state"]] = states.get(info["state"], 0) + 1

    fd_ok = settled_fds - warm_fds <= FD_BOUND
    rss_ok = settled_rss - warm_rss <= RSS_BOUND_KIB
    lines = [
        "# bench/load: connections across instances, wakes mixed with steady traffic",
        "",
        f"- commit: {rev}",
        f"- machine: {json.dumps(machine)}",
        f"- {args.instances} instances (busybox httpd, 128 MiB, pause after {args.pause_after}), "
        f"{args.conns} concurrent client connections for {args.duration:.0f} s; half the "
        f"instances steady, half in bursts of {args.burst:.0f} s with {args.gap:.0f} s quiet",
        "",
        "| measure | value |",
        "|---|---|",
        f"| warm-up requests ok / failed | {warm['ok']} / {warm['failed']} |",
        f"| requests ok / failed | {counts['ok']} / {counts['failed']} |",
        f"| failures by cause | {json.dumps(counts['why']) if counts['why'] else '-'} |",
        f"| requests per second | {counts['ok'] / elapsed:.0f} |",
        f"| wakes: cold boots / restores / resumes; pauses | {stats['cold_boots']} / "
        f"{stats['snapshot_restores']} / {stats['resumes']}; {stats['pauses']} |",
        f"| instance states after settling | {json.dumps(states)} |",
        f"| aegisd RSS start / warm / peak / after / settled (MiB) | {start_rss / 1024:.1f} / "
        f"{warm_rss / 1024:.1f} / {peak_rss / 1024:.1f} / {after_rss / 1024:.1f} / "
        f"{settled_rss / 1024:.1f} |",
        f"| aegisd fds start / warm / peak / after / settled | {start_fds} / {warm_fds} / "
        f"{peak_fds} / {after_fds} / {settled_fds} |",
        f"| bound: settled fds <= warm + {FD_BOUND} | {'met' if fd_ok else 'MISSED'} |",
        f"| bound: settled RSS <= warm + {RSS_BOUND_KIB // 1024} MiB | "
        f"{'met' if rss_ok else 'MISSED'} |",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0 if fd_ok and rss_ok and counts["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
