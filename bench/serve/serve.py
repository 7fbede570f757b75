"""bench/serve (issue 3): wake latencies and steady state of serve mode, side by side in one run.

Run it through bench/serve/run.sh. The served app is `python3 -m http.server 8000` on the
Debian image (the default), exposed as `--expose 8000:http`; every request is `GET /` (the
directory listing of the guest's /), measured with curl's `time_starttransfer` (curl start to
the first response byte) through the router port of the instance.

(a) cold wake: a new instance per iteration (no memory snapshot exists yet), first byte of the
    200 through the router; interleaved with a bare QEMU boot of the same kernel to power-off
    (the boot benchmark's (a)); ratio of medians.
(b) resume: `aegis pause web`, then curl; median and p99 of the first byte. Each resume is
    followed by one request to the running instance (warm baseline).
(c) restore: `aegis stop web` (VM terminated; its memory snapshot was cached after its first
    cold boot), then curl; ratio cold / restore.
(d) steady state: wrk through the instance's router port; haproxy in front of that port; and,
    as the path without Aegis, a bare QEMU running the same kernel, image and app with a
    virtio-net NIC and QEMU's user-mode port forward (`hostfwd`), with and without haproxy.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "boot"))
import aegisbench as ab  # noqa: E402

LOG_FILTER = "info,aegisd=debug,aegis_vmm=debug,aegis_image=debug"
APP = ["python3", "-m", "http.server", "8000"]

DIRECT_INIT = """#!/bin/busybox sh
# PID 1 of the direct (no Aegis) baseline VM: the Debian image read-only, a NIC for QEMU's
# user-mode networking, then the same app as the Aegis instance, in the image's root.
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B mount -t ext4 -o ro /dev/vda /newroot
$B mount -t proc proc /newroot/proc
$B mount -t devtmpfs dev /newroot/dev
$B mount -t tmpfs tmp /newroot/tmp
$B ip link set lo up
$B ip addr add 10.0.2.15/24 dev eth0
$B ip link set eth0 up
echo "direct: starting the app"
cd /newroot
exec $B chroot /newroot /bin/sh -c 'cd / && exec python3 -m http.server 8000'
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


TRACE_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{6}) (==|=>|<=) (.*)$")


def curl(port: int, timeout: float = 180, trace: Path | None = None) -> dict:
    """One `GET /` with curl. `start` places curl's transfer start on the wall clock from its
    exit (late by curl's teardown, a few ms). With `trace`, curl's `--trace-time` times of the
    TCP connect, the request sent and the first response byte are added; they are exact
    relative to each other, but not on the wall clock (curl combines the wall clock's whole
    seconds with the monotonic clock's fraction), so only their differences are used."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", str(int(timeout)),
            "-w", "%{http_code} %{time_connect} %{time_starttransfer} %{time_total} %{size_download}"]
    if trace:
        argv += ["--trace-ascii", str(trace), "--trace-time"]
    t0 = time.time()
    r = subprocess.run(argv + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    t1 = time.time()
    code, connect, ttfb, total, size = r.stdout.split()
    res = {"t0": t0, "t1": t1, "start": t1 - float(total), "code": int(code), "connect": float(connect),
           "ttfb": float(ttfb), "total": float(total), "size": int(size)}
    if trace:
        midnight = time.mktime(time.localtime(t0)[:3] + (0, 0, 0, 0, 0, -1))
        for line in trace.read_text(errors="replace").splitlines():
            m = TRACE_LINE.match(line)
            if not m:
                continue
            h, mi, se, us, kind, what = m.groups()
            ts = midnight + int(h) * 3600 + int(mi) * 60 + int(se) + int(us) / 1e6
            if ts < t0 - 43200:  # the day changed during the request
                ts += 86400
            if kind == "==" and what.startswith("Info: Connected to"):
                res.setdefault("c_conn", ts)
            elif kind == "=>" and what.startswith("Send header"):
                res.setdefault("c_sent", ts)
            elif kind == "<=" and what.startswith("Recv header"):
                res.setdefault("c_first", ts)
        trace.unlink()
    return res


def must_200(res: dict, what: str) -> dict:
    if res["code"] != 200:
        raise ab.BenchError(f"{what}: HTTP {res['code']} (expected 200)")
    return res


def create_instance(d: ab.Daemon, name: str, pause_after: str, terminate_after: str) -> int:
    d.cli("run", "--detach", "--name", name, "--expose", "8000:http",
          "--pause-after", pause_after, "--terminate-after", terminate_after, "--", *APP, capture=True)
    info = d.inspect_instance(name)
    return int(info["endpoints"][0]["host_port"])


def state(d: ab.Daemon, name: str) -> str:
    return d.inspect_instance(name)["state"]


def pause_when_idle(d: ab.Daemon, name: str, timeout: float = 60) -> int:
    """`aegis pause NAME`, retried while aegisd refuses because the router is still opening a
    connection into the guest (after a wrk round, connections wrk gave up on may still be in
    flight to the busy guest); returns how many times it was refused."""
    t0 = time.monotonic()
    refused = 0
    while True:
        r = d.cli("pause", name, check=False, capture=True)
        if r.returncode == 0:
            return refused
        refused += 1
        if "opening a connection" not in (r.stderr or "") or time.monotonic() - t0 > timeout:
            raise ab.BenchError(f"aegis pause {name} exited {r.returncode}: {r.stderr.strip()}")
        time.sleep(0.2)


def build_direct_initramfs(tmp: Path) -> Path:
    busybox = shutil.which("busybox")
    if not busybox:
        raise ab.BenchError("busybox (static) is needed for the direct baseline: apt-get install busybox-static")
    out = subprocess.run(["file", "-L", busybox], capture_output=True, text=True).stdout
    if "statically linked" not in out:
        raise ab.BenchError(f"{busybox} is not statically linked: apt-get install busybox-static")
    root = tmp / "direct-root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    init = root / "init"
    init.write_text(DIRECT_INIT)
    init.chmod(0o755)
    cpio = tmp / "direct-initramfs.cpio"
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    with open(cpio, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                       stdout=f, check=True)
    return cpio


def direct_argv(aegis_argv: list[str], initramfs: Path, console: Path, rootfs: str, port: int) -> list[str]:
    """Same binary/machine/CPU/memory/kernel/kernel args as Aegis; the Debian image as vda
    (read-only); a virtio-net NIC on QEMU user-mode networking forwarding 127.0.0.1:port to
    guest port 8000. No channel, no QMP."""
    argv = ab.bare_argv(aegis_argv, initramfs, console)
    return argv + [
        "-drive", f"file={rootfs},if=none,id=d0,format=raw,readonly=on,cache=writeback",
        "-device", "virtio-blk-device,drive=d0",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8000",
        "-device", "virtio-net-device,netdev=n0",
    ]


WRK_LAT = re.compile(r"^\s+(50|75|90|99)%\s+(\S+)", re.M)


def to_ms(v: str) -> float:
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, duration: str, conns: int, threads: int) -> dict:
    r = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--timeout", "10s", "--latency",
                        f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=120)
    t = r.stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
        total = int(re.search(r"(\d+) requests in", t).group(1))
    except AttributeError:
        raise ab.BenchError(f"cannot parse wrk output:\n{t}\n{r.stderr}")
    lat = {k: to_ms(v) for k, v in WRK_LAT.findall(t)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    return {"rps": rps, "total": total, "p50": lat.get("50", float("nan")), "p99": lat.get("99", float("nan")),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "sock": tuple(map(int, sock.groups())) if sock else (0, 0, 0, 0), "raw": t}


def haproxy_cfg(listen: int, backend: int, threads: int) -> str:
    return f"""global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{listen}
    default_backend app
backend app
    server app1 127.0.0.1:{backend}
"""


class Procs:
    """Processes this benchmark started directly (bare QEMU, haproxy); stopped by pid."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=int, default=5, help="cold wakes (and bare boots)")
    ap.add_argument("--resume", type=int, default=40, help="pause/resume iterations (>= 30)")
    ap.add_argument("--restore", type=int, default=10, help="stop/restore iterations")
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ab.sigterm_as_interrupt()
    ab.check_binaries()
    for tool in ["qemu-system-x86_64", "gcc", "cpio", "curl", "wrk", "haproxy", "busybox"]:
        if not shutil.which(tool):
            raise ab.BenchError(f"{tool} is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="aegis-bs-", dir="/tmp"))
    procs = Procs()
    try:
        return run(args, tmp, procs)
    finally:
        procs.stop_all()
        if os.environ.get("KEEP_TMP"):
            print(f"bench/serve: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args, tmp: Path, procs: Procs) -> int:
    ab.snapshot_binaries(tmp)
    mach = ab.machine()
    say(f"bench/serve: tmp {tmp}, load {ab.loadavg()}")
    bare_initramfs = ab.build_bare_initramfs(tmp)
    direct_initramfs = build_direct_initramfs(tmp)
    R: dict = {"machine": mach, "args": vars(args)}
    loads = []

    with ab.Daemon(tmp, ab.default_cache(), LOG_FILTER) as d:
        watcher = ab.ConsoleWatcher(str(d.home / "run" / "vm-*" / "console.log"))
        watcher.start()
        try:
            # ---- web: the instance for (b) and (c); its first cold boot caches the snapshot.
            say("web: first cold boot (caches the memory snapshot)")
            web_port = create_instance(d, "web", "10m", "20m")
            first = must_200(curl(web_port), "web cold boot")
            web = d.inspect_instance("web")
            if not web["snapshot_cached"]:
                raise ab.BenchError("no memory snapshot was cached after the first cold boot")
            R["web_first_cold"] = first
            qemus = d.qemu_children()
            aegis_argv = ab.cmdline(qemus[0])
            R["aegis_argv"] = aegis_argv
            R["kernel"] = os.path.realpath(ab.option_values(aegis_argv, "-kernel")[0])
            rootfs = next(a.split("file=", 1)[1].split(",", 1)[0] for a in aegis_argv
                          if a.startswith("file=") and "readonly=on" in a)
            R["rootfs"] = os.path.realpath(rootfs)
            snapdir = d.home / "snapshots" / web["id"]
            R["snapshot_bytes"] = {p.name: (p.stat().st_size, p.stat().st_blocks * 512)
                                   for p in snapdir.iterdir() if p.is_file()} if snapdir.is_dir() else {}
            R["web_qemu_rss"] = ab.read_status(qemus[0])

            # ---- (a) cold wake vs bare boot, interleaved. `web` is paused meanwhile (quiet).
            d.cli("pause", "web", capture=True)
            cold, bare = [], []
            bare_dir = tmp / "bare"
            bare_dir.mkdir()
            for i in range(args.cold):
                for v in (["bare", "cold"] if i % 2 == 0 else ["cold", "bare"]):
                    loads.append(ab.load1())
                    if v == "bare":
                        console = bare_dir / f"console-{i}.log"
                        argv = ab.bare_argv(aegis_argv, bare_initramfs, console)
                        t0 = time.perf_counter()
                        p = procs.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        rc = p.wait(timeout=180)
                        dur = time.perf_counter() - t0
                        if rc != 0:
                            raise ab.BenchError(f"bare QEMU exited {rc}")
                        bare.append(dur)
                        say(f"  (a) {i + 1}/{args.cold} bare QEMU boot: {dur:.3f} s")
                    else:
                        name = f"cold-{i}"
                        port = create_instance(d, name, "10m", "20m")
                        res = must_200(curl(port, trace=tmp / "trace.txt"), f"cold wake {name}")
                        res["id"] = d.inspect_instance(name)["id"]
                        cold.append(res)
                        say(f"  (a) {i + 1}/{args.cold} cold wake {name}: first byte {res['ttfb']:.3f} s")
                        d.cli("instance", "rm", name, capture=True)
                    time.sleep(0.3)
            R["cold"], R["bare"] = cold, bare

            # ---- (b) pause -> resume, with a warm request after each.
            say(f"(b) {args.resume} x (aegis pause web; curl; curl)")
            resume, warm = [], []
            for i in range(args.resume):
                d.cli("pause", "web", capture=True)
                st = state(d, "web")
                if st != "paused":
                    raise ab.BenchError(f"web is {st} after aegis pause")
                loads.append(ab.load1())
                r1 = must_200(curl(web_port, trace=tmp / "trace.txt"), "resume")
                resume.append(r1)
                warm.append(must_200(curl(web_port, trace=tmp / "trace.txt"), "warm"))
                time.sleep(0.1)
            R["resume"], R["warm"] = resume, warm
            say(f"  resume first byte median {ab.median([r['ttfb'] for r in resume]) * 1000:.1f} ms, "
                f"warm {ab.median([r['ttfb'] for r in warm]) * 1000:.1f} ms")

            # ---- (c) stop -> restore from the memory snapshot.
            say(f"(c) {args.restore} x (aegis stop web; curl)")
            restore = []
            for i in range(args.restore):
                d.cli("stop", "web", capture=True)
                st = state(d, "web")
                if st != "terminated":
                    raise ab.BenchError(f"web is {st} after aegis stop")
                loads.append(ab.load1())
                r1 = must_200(curl(web_port, trace=tmp / "trace.txt"), "restore")
                restore.append(r1)
                say(f"  restore {i + 1}/{args.restore}: first byte {r1['ttfb']:.3f} s")
                time.sleep(0.3)
            R["restore"] = restore
            R["web_stats"] = d.inspect_instance("web")["stats"]

            # ---- (d) steady state.
            say("(d) steady state")
            d.cli("stop", "web", capture=True)  # one Aegis VM at a time from here on
            steady_port = create_instance(d, "steady", "10m", "20m")
            must_200(curl(steady_port), "steady cold boot")
            direct_port = free_port()
            direct_console = tmp / "direct-console.log"
            watcher.add(str(direct_console))
            direct = procs.start(direct_argv(aegis_argv, direct_initramfs, direct_console, R["rootfs"], direct_port),
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "direct-qemu.log", "wb"))
            deadline = time.monotonic() + 180
            while True:
                try:
                    if curl(direct_port, timeout=5)["code"] == 200:
                        break
                except Exception:
                    pass
                if direct.poll() is not None or time.monotonic() > deadline:
                    raise ab.BenchError(f"the direct baseline VM did not serve; console: "
                                        f"{direct_console.read_text(errors='replace')[-800:]}")
                time.sleep(0.5)
            con = watcher.get(str(direct_console))
            R["direct_app_start"] = (ab.first(con, "direct: starting the app"), ab.first(con, "Serving HTTP"))
            hp_router, hp_direct = free_port(), free_port()
            haproxies = {}
            for listen, backend, name in [(hp_router, steady_port, "router"), (hp_direct, direct_port, "direct")]:
                cfg = tmp / f"haproxy-{name}.cfg"
                cfg.write_text(haproxy_cfg(listen, backend, 2))
                haproxies[name] = procs.start(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                              stderr=open(tmp / f"haproxy-{name}.log", "wb"))
            steady_qemu = d.qemu_children()
            if len(steady_qemu) != 1:
                raise ab.BenchError(f"expected only the steady instance's QEMU, found {steady_qemu}")
            # Whose CPU time a request costs on each path (host side), in clock ticks.
            cpu_pids = {
                "router": {"aegisd": d.pid, "QEMU": steady_qemu[0]},
                "haproxy_router": {"haproxy": haproxies["router"].pid, "aegisd": d.pid, "QEMU": steady_qemu[0]},
                "direct": {"QEMU": direct.pid},
                "haproxy_direct": {"haproxy": haproxies["direct"].pid, "QEMU": direct.pid},
            }
            time.sleep(0.5)
            targets = {
                "router": steady_port,
                "haproxy_router": hp_router,
                "direct": direct_port,
                "haproxy_direct": hp_direct,
            }
            sizes = {k: must_200(curl(p), k)["size"] for k, p in targets.items()}
            R["sizes"] = sizes

            def only(vm: str) -> None:
                """Keep the other VM stopped while one is measured (fair share of the 2 cores)."""
                if vm == "aegis":
                    direct.send_signal(signal.SIGSTOP)
                    if state(d, "steady") == "paused":
                        d.cli("resume", "steady", capture=True)
                else:
                    if state(d, "steady") == "running":
                        refused = pause_when_idle(d, "steady")
                        R["pause_refused"] = R.get("pause_refused", 0) + refused
                        if refused:
                            say(f"  (aegis pause steady refused {refused} x: a connection was opening)")
                    direct.send_signal(signal.SIGCONT)

            for name, port in targets.items():  # warm-up
                only("aegis" if "router" in name else "direct")
                wrk(port, "1s", args.conns, args.threads)
            steady: dict[str, list] = {k: [] for k in targets}
            for rnd in range(args.rounds):
                for name, port in targets.items():
                    only("aegis" if "router" in name else "direct")
                    time.sleep(0.2)
                    loads.append(ab.load1())
                    before = {k: ab.cpu_ticks(p)[0] for k, p in cpu_pids[name].items()}
                    res = wrk(port, args.duration, args.conns, args.threads)
                    res["cpu_ms_per_req"] = {
                        k: (ab.cpu_ticks(p)[0] - before[k]) * 1000 / ab.CLK_TCK / max(res["total"], 1)
                        for k, p in cpu_pids[name].items()}
                    steady[name].append(res)
                    say(f"  round {rnd + 1}/{args.rounds} {name}: {res['rps']:.0f} req/s, p50 {res['p50']:.1f} ms, "
                        f"p99 {res['p99']:.1f} ms, non-2xx {res['non2xx']}, socket errors {res['sock']}, "
                        f"CPU ms/req {res['cpu_ms_per_req']}")
            direct.send_signal(signal.SIGCONT)
            R["steady"] = steady
            R["steady_stats"] = d.inspect_instance("steady")["stats"]
        finally:
            watcher.stop()
        log = ab.parse_log(d.log_path)
    R["loads"] = loads
    R["load_end"] = ab.loadavg()
    R["log"] = log
    R["watcher"] = watcher
    R["home"] = str(d.home)
    write_report(R, Path(args.out))
    return 0


# ---------------------------------------------------------------------------------------------
# breakdowns


def first_after(log, t0: float, t1: float, needle: str, inst: str | None = None):
    for t, m in log:
        if t0 - 0.005 <= t <= t1 + 0.01 and needle in m and (inst is None or inst in m):
            return t, m
    return None


def cold_breakdown(R: dict, res: dict) -> dict | None:
    log, w = R["log"], R["watcher"]
    t0, t1, inst = res["t0"], res["t1"], res["id"]
    booting = first_after(log, t0, t1, 'state="booting"', inst)
    started = first_after(log, t0, t1, "QEMU started")
    snap = first_after(log, t0, t1, "memory snapshot cached", inst)
    ready = first_after(log, t0, t1, "cold boot ready", inst)
    if not (booting and started and snap and ready):
        return None
    vm = re.search(r"vm=(vm-[0-9a-f]+)", started[1]).group(1)
    con = w.get(f"{R['home']}/run/{vm}/console.log")
    snap_ms = int(re.search(r"ms=(\d+)", snap[1]).group(1)) / 1000
    marks = {
        "curl": res["start"],
        "booting": booting[0],
        "qemu": started[0],
        "h_start": ab.first(con, "aegis harness"),
        "h_conn": ab.first(con, "host connected"),
        "snap_start": snap[0] - snap_ms,
        "ready": ready[0],
        "first_byte": res["start"] + res["ttfb"],
    }
    return marks if all(v is not None for v in marks.values()) else None


COLD_STEPS = [
    ("curl", "booting", "curl transfer start (connect, request) -> router holds it, wake begins (+-5 ms: see below)"),
    ("booting", "qemu", "scratch disk (mkfs.ext4) + QEMU spawn"),
    ("qemu", "h_start", "QEMU start-up + kernel boot to the harness banner"),
    ("h_start", "h_conn", "harness: mounts, switch_root, channel; host connects"),
    ("h_conn", "snap_start", "Hello, Spawn python3, python3 starts and listens, readiness probe (every 50 ms) succeeds"),
    ("snap_start", "ready", "memory snapshot on the critical path: pause, migrate to file, copy scratch disk, resume"),
    ("ready", "first_byte", "the held request is proxied; python3 answers the first request"),
]


def restore_breakdown(R: dict, res: dict) -> dict | None:
    log = R["log"]
    t0, t1 = res["t0"], res["t1"]
    booting = first_after(log, t0, t1, 'state="booting"')
    qrest = first_after(log, t0, t1, "restored vm=")
    done = first_after(log, t0, t1, "restored from memory snapshot")
    if not (booting and qrest and done):
        return None
    q_ms = int(re.search(r"ms=(\d+)", qrest[1]).group(1)) / 1000
    vm = re.search(r"vm=(vm-[0-9a-f]+)", qrest[1]).group(1)
    con = R["watcher"].get(f"{R['home']}/run/{vm}/console.log")
    h_new = min((t for t in (ab.first(con, "a new host said Hello"), ab.first(con, "host connected"))
                 if t is not None), default=None)
    marks = {
        "curl": res["start"],
        "booting": booting[0],
        "q_start": qrest[0] - q_ms,
        "q_done": qrest[0],
        "h_new": h_new,
        "ready": done[0],
        "first_byte": res["start"] + res["ttfb"],
    }
    return marks if all(v is not None for v in marks.values()) else None


RESTORE_STEPS = [
    ("curl", "booting", "curl transfer start (connect, request) -> router holds it, wake begins (+-5 ms)"),
    ("booting", "q_start", "copy the snapshot's scratch disk (sparse), resolve assets"),
    ("q_start", "q_done", "QEMU: start with -incoming defer, migrate-incoming from the file, cont"),
    ("q_done", "h_new", "host reconnects the channel and says Hello; the harness logs the new session"),
    ("h_new", "ready", "handshake + clock done, guest port probe succeeds"),
    ("ready", "first_byte", "the held request is proxied; python3 answers"),
]


def resume_ms(R: dict) -> list[int]:
    """aegisd's own measure of each resume (QMP `cont` + guest clock), from its log."""
    out = []
    for res in R["resume"]:
        ev = first_after(R["log"], res["t0"], res["t1"], "resumed instance")
        if ev:
            out.append(int(re.search(r"ms=(\d+)", ev[1]).group(1)))
    return out


def steps_table(marks: list[dict], table) -> str:
    rows = ["| step | median | min | max |", "|---|---:|---:|---:|"]
    tot = 0.0
    for a, b, label in table:
        xs = [m[b] - m[a] for m in marks]
        tot += ab.median(xs)
        rows.append(f"| {label} | {ab.fmt_ms(ab.median(xs))} | {ab.fmt_ms(min(xs))} | {ab.fmt_ms(max(xs))} |")
    rows.append(f"| **sum of medians** | **{ab.fmt_ms(tot)}** | | |")
    return "\n".join(rows)


def sent_first(runs: list[dict]) -> float:
    return ab.median([r["c_first"] - r["c_sent"] for r in runs if "c_first" in r and "c_sent" in r])


def write_report(R: dict, out: Path) -> None:
    m = R["machine"]
    a = R["args"]
    cold = [r["ttfb"] for r in R["cold"]]
    bare = R["bare"]
    resume = [r["ttfb"] for r in R["resume"]]
    warm = [r["ttfb"] for r in R["warm"]]
    restore = [r["ttfb"] for r in R["restore"]]
    loads = R["loads"]

    cold_ratio = ab.median(cold) / ab.median(bare)
    restore_speedup = ab.median(cold) / ab.median(restore)
    res_med, res_p99 = ab.median(resume), ab.pct(resume, 99)

    def mmm(xs, f=ab.fmt_s):
        return f"{f(min(xs))} | {f(ab.median(xs))} | {f(max(xs))}"

    wake = ["| measurement | N | min | median | max | p99 |", "|---|---:|---:|---:|---:|---:|"]
    wake.append(f"| bare QEMU boot to power-off (same kernel, minimal initramfs) | {len(bare)} | {mmm(bare)} | |")
    wake.append(f"| (a) cold wake: first byte of HTTP 200 through the router, new instance | {len(cold)} | {mmm(cold)} | |")
    wake.append(f"| (c) restore from memory snapshot (`aegis stop`, then curl) | {len(restore)} | {mmm(restore)} | {ab.fmt_s(ab.pct(restore, 99))} |")
    wake.append(f"| (b) resume from pause (`aegis pause`, then curl) | {len(resume)} | {mmm(resume, ab.fmt_ms)} | {ab.fmt_ms(res_p99)} |")
    wake.append(f"| running instance (request right after each resume), baseline | {len(warm)} | {mmm(warm, ab.fmt_ms)} | {ab.fmt_ms(ab.pct(warm, 99))} |")
    wake_table = "\n".join(wake)

    cold_marks = [x for x in (cold_breakdown(R, r) for r in R["cold"]) if x]
    restore_marks = [x for x in (restore_breakdown(R, r) for r in R["restore"]) if x]
    cold_bd = steps_table(cold_marks, COLD_STEPS) if cold_marks else "(no complete breakdown)"
    restore_bd = steps_table(restore_marks, RESTORE_STEPS) if restore_marks else "(no complete breakdown)"
    rms = resume_ms(R)
    conn_sent = ab.median([r["c_sent"] - r["c_conn"] for r in R["resume"] if "c_sent" in r and "c_conn" in r])
    resume_bd = (f"- aegisd's resume (QMP `cont` answered, guest clock set, state running), as it logs it: "
                 f"median {ab.median(rms):.0f} ms, max {max(rms) if rms else float('nan'):.0f} ms (1 ms resolution) over {len(rms)} resumes\n"
                 f"- curl, TCP connect to the router port -> request sent: {ab.fmt_ms(conn_sent)} (the router accepts at once, "
                 f"paused or not)\n"
                 f"- curl, request sent -> first byte: {ab.fmt_ms(sent_first(R['resume']))} after a pause vs "
                 f"{ab.fmt_ms(sent_first(R['warm']))} on the running instance (medians)")

    st = R["steady"]
    labels = {
        "router": "Aegis router port (wake logic, session stream per connection) -> guest",
        "haproxy_router": "haproxy (mode http) -> Aegis router port -> guest",
        "direct": "no Aegis: bare QEMU, same kernel/image/app, virtio-net + QEMU user-net `hostfwd`",
        "haproxy_direct": "haproxy (mode http) -> the same `hostfwd` port",
    }
    srows = ["| path | req/s (median round) | p50 | p99 | all rounds (req/s) | non-2xx | socket errors (c/r/w/t) | host CPU per request (median round) |",
             "|---|---:|---:|---:|---|---:|---|---|"]
    med = {}
    for k, runs in st.items():
        s = sorted(runs, key=lambda x: x["rps"])
        mr = s[len(s) // 2]
        med[k] = mr
        errs = "/".join(str(sum(x["sock"][i] for x in runs)) for i in range(4))
        rounds = ", ".join("%.1f" % x["rps"] for x in runs)
        non2xx = sum(x["non2xx"] for x in runs)
        cpu = ", ".join(f"{who} {v:.2f} ms" for who, v in mr["cpu_ms_per_req"].items())
        srows.append(f"| {labels[k]} | {mr['rps']:.1f} | {mr['p50']:.1f} ms | {mr['p99']:.1f} ms | "
                     f"{rounds} | {non2xx} | {errs} | {cpu} |")
    steady_table = "\n".join(srows)
    r_vs_hr = med["router"]["rps"] / med["haproxy_router"]["rps"]
    r_vs_d = med["router"]["rps"] / med["direct"]["rps"]
    r_vs_hd = med["router"]["rps"] / med["haproxy_direct"]["rps"]

    das = R.get("direct_app_start") or (None, None)
    python_start = (f"For scale: in the direct VM, `python3 -m http.server` took {das[1] - das[0]:.2f} s from exec to "
                    f"\"Serving HTTP\" on its console (same image, same TCG vCPU); in Aegis this is inside the cold "
                    f"wake's Spawn-to-listening step." if all(das) else "")
    snap = R["snapshot_bytes"]
    def size(n):
        return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} B"

    snap_txt = ", ".join(f"`{k}` {size(v[0])} apparent / {size(v[1])} on disk" for k, v in sorted(snap.items()))
    ws = R["web_stats"]

    md = f"""# Serve mode: wake latencies and steady state

Recorded by `bench/serve/run.sh` (issue 3) on {time.strftime('%Y-%m-%d %H:%M %Z')}, git {ab.git_rev()}.
All measurements of one run, side by side; loopback only.

## Machine

- {m['nproc']} CPUs usable, {m['cpu']} ({m['cpu_mhz']} MHz), {m['memory']} RAM; {m['os']}, kernel {m['kernel']}
- {m['qemu']}, accelerator TCG (`/dev/kvm` is PVM here: no KVM guest boots)
- load average: {m['load_start']} at the start, {R['load_end']} at the end; 1-min load sampled before each
  measurement: min {min(loads):.2f}, median {ab.median(loads):.2f}, max {max(loads):.2f}. Other engineers'
  builds and test suites shared the 2 cores during the run: absolute numbers are inflated and noisy.
- guest: kernel `{R['kernel']}`, image `{R['rootfs']}` (debian), 1 vCPU, 512 MiB (Aegis defaults)
- app: `{' '.join(APP)}` behind `--expose 8000:http`; every request is `GET /` (a ~{R['sizes']['router']}-byte
  directory listing of the guest's `/`), `curl -w %{{time_starttransfer}}` (curl start to first byte)

## Wake latencies

{wake_table}

- **(a) cold wake / bare QEMU boot (medians): {ab.median(cold):.3f} / {ab.median(bare):.3f} = {cold_ratio:.2f}x**
- **(b) resume from pause to HTTP 200: median {ab.fmt_ms(res_med)}, p99 {ab.fmt_ms(res_p99)}** (target median <= 10 ms:
  {"meets" if res_med <= 0.010 else "misses"}; goal <= 3 ms: {"meets" if res_med <= 0.003 else "misses"}). p99 is nearest-rank, i.e. the
  maximum for N < 100. The same app answers a request to the running instance in
  {ab.fmt_ms(ab.median(warm))} (median): resume adds {ab.fmt_ms(res_med - ab.median(warm))} to a request.
- **(c) restore vs cold wake: {ab.median(cold):.3f} / {ab.median(restore):.3f} = {restore_speedup:.1f}x faster**
  (target >= 8x: {"meets" if restore_speedup >= 8 else "misses"}; goal >= 15x: {"meets" if restore_speedup >= 15 else "misses"}).
- instance `web` after the run: {ws}. Its snapshot: {snap_txt}. `web`'s QEMU while running (before the wake
  loops): VmRSS {R['web_qemu_rss']['VmRSS'] / 1024:.0f} MiB.

Raw first-byte times (s):

- bare QEMU boots: {', '.join(f'{x:.3f}' for x in bare)}
- cold wakes: {', '.join(f'{x:.3f}' for x in cold)}
- restores: {', '.join(f'{x:.3f}' for x in restore)}
- resumes: {', '.join(f'{x * 1000:.1f}' for x in resume)} (ms)
- running baseline: {', '.join(f'{x * 1000:.1f}' for x in warm)} (ms)

### Where a cold wake spends its time

From aegisd's debug log (`AEGIS_LOG={LOG_FILTER}`) and host-side timestamps of the guest
console (harness messages, polled every 5 ms); medians over {len(cold_marks)} cold wakes. curl's transfer start is
placed on the wall clock from its exit (minus `time_total`), a few ms late, so the first step
can even come out slightly negative:

{cold_bd}

### Where a restore spends its time

Medians over {len(restore_marks)} restores:

{restore_bd}

### Where a resume spends its time

{resume_bd}

So the wake itself costs about {ab.fmt_ms(sent_first(R['resume']) - sent_first(R['warm']))} (difference of the medians); the rest is the
request's path into the guest (a new session stream, the harness dialing 127.0.0.1:8000) and
python3 answering it under TCG, which a running instance pays too. Time stamps of curl's
`--trace-time` are exact relative to each other but not on the wall clock, so they are not
mixed with aegisd's log here.

## Steady state

wrk `-t{a['threads']} -c{a['conns']} -d{a['duration']} --timeout 10s --latency`, {a['rounds']} interleaved rounds, the median
round per path shown. Only the VM being measured runs: the other one is paused (`aegis pause`
for the instance, retried every 0.2 s while aegisd refuses it because the router is still
opening a connection into the guest: {R.get('pause_refused', 0)} refusals in this run; SIGSTOP
for the bare QEMU). `python3 -m http.server` speaks HTTP/1.0 and closes
every connection after its response, so each request is a new guest connection on every path.

{steady_table}

- router / haproxy-in-front-of-the-router: {r_vs_hr:.2f}
- router / direct (no Aegis, user-net port forward): {r_vs_d:.2f}
- router / haproxy in front of the direct path: {r_vs_hd:.2f} (the issue's target, router >= 0.9 of the reference
  proxy, is about the proxy itself; see below)
- response bodies: {', '.join(f'{k} {v} B' for k, v in R['sizes'].items())}

Host CPU per request is the utime + stime each process accumulated during the median round,
divided by its requests (10 ms tick resolution): `aegisd` is the router plus the host end of the
virtio-serial session, `QEMU` is the guest (python3, the guest kernel's TCP, and on the Aegis
path the harness forwarding the connection over virtio-serial) plus QEMU's device emulation.
On every path the single TCG vCPU running python3 is the bottleneck, not the proxy: a few
tens of requests per second, whatever is in front. The p99 near or above 1 s on all paths is the
app's, not a proxy's: `http.server` listens with a backlog of 5 (`socketserver`'s
`request_queue_size`), so with 16 concurrent connections some connection attempts in the guest
wait for a SYN retransmission (1 s).

There is no direct TCP path from the host to a guest port under Aegis: the guest has no NIC
(ingress rides the virtio-serial session; DESIGN.md decision 5), so "the same guest port
without the router's wake logic" cannot be reached inside Aegis. The "direct" rows are the
closest cheap equivalent: the same kernel, image, VM size and app in a bare QEMU with a
virtio-net NIC and QEMU's user-mode networking `hostfwd` (a different transport into the guest,
no Aegis process involved). A socat in front of the router port would not be a baseline (it only
adds a hop); haproxy in front of the router port is reported as the issue asks. The router's own
proxying cost against haproxy with a native (non-VM) backend, where the proxy is the bottleneck,
is measured by `bench/router/run.sh` (`bench/results/router-*.md`).

{python_start}

## Command lines

Aegis's QEMU for the instance:

```
{' '.join(R['aegis_argv'])}
```

The bare boot is the boot benchmark's (a); the direct baseline adds
`-drive file=<debian rootfs>,if=none,id=d0,format=raw,readonly=on -device virtio-blk-device,drive=d0
-netdev user,id=n0,hostfwd=tcp:127.0.0.1:PORT-:8000 -device virtio-net-device,netdev=n0` and an
initramfs whose busybox /init mounts the image read-only, configures `eth0` (10.0.2.15/24) and
execs `python3 -m http.server 8000` chrooted into it.
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(wake_table)
    print(f"\ncold/bare = {cold_ratio:.2f}; restore speedup = {restore_speedup:.1f}x; resume median {res_med * 1000:.1f} ms p99 {res_p99 * 1000:.1f} ms")
    print("\ncold wake breakdown:\n" + cold_bd)
    print("\nrestore breakdown:\n" + restore_bd)
    print("\nresume:\n" + resume_bd)
    print(f"sent->first byte: resume {sent_first(R['resume']) * 1000:.1f} ms, warm {sent_first(R['warm']) * 1000:.1f} ms")
    print("\n" + steady_table)
    print(f"\nrouter/haproxy->router {r_vs_hr:.2f}; router/direct {r_vs_d:.2f}; router/haproxy->direct {r_vs_hd:.2f}")
    print(f"\nrecorded in {out}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ab.BenchError as e:
        print(f"bench/serve: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench/serve: interrupted", file=sys.stderr)
        sys.exit(130)
