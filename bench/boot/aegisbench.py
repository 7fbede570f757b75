"""Shared helpers of the Aegis boot and serve benchmarks (bench/boot, bench/serve).

- `Daemon`: a private aegisd (own home, the shared cache symlinked in) started and stopped by
  the benchmark; only processes it started are ever signalled, by pid.
- `build_bare_initramfs`: the minimal initramfs whose /init syncs and resets the machine
  (a static C program, cpio'd with `cpio -o -H newc`).
- `bare_argv`: the bare QEMU command line derived from the argv Aegis really used, so that
  the bare VMM boots the same kernel with the same machine flags.
- `ConsoleWatcher`: timestamps, on the host, each line QEMU writes to a console file (polls
  every few ms), including files of VMs that aegisd removes afterwards.
- small statistics and machine-description helpers.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# `AEGIS_BENCH_PROFILE=debug` measures the debug build (a quick check of a script; figures
# for the record come from release builds).
PROFILE = os.environ.get("AEGIS_BENCH_PROFILE", "release")
AEGIS = REPO / "target" / PROFILE / "aegis"
AEGISD = REPO / "target" / PROFILE / "aegisd"
HARNESS = REPO / "target/x86_64-unknown-linux-gnu/harness/aegis-harness"

INIT_C = r"""
#include <sys/reboot.h>
#include <unistd.h>
int main(void) { sync(); reboot(RB_AUTOBOOT); return 0; }
"""


class BenchError(Exception):
    pass


def sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` cleans up."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def default_cache() -> Path:
    home = os.environ.get("AEGIS_HOME") or os.path.expanduser("~/.aegis")
    return Path(os.environ.get("AEGIS_CACHE", os.path.join(home, "cache")))


def check_binaries() -> None:
    missing = [p for p in (AEGIS, AEGISD, HARNESS) if not p.exists()]
    if missing:
        raise BenchError(
            "missing " + ", ".join(map(str, missing)) + "; run `scripts/build.sh --release` first"
        )


def snapshot_binaries(tmp: Path) -> None:
    """Copies aegis, aegisd and the harness into `tmp/bin` and uses the copies: a rebuild in
    the work tree during the run (other people's cargo) cannot change what is measured."""
    global AEGIS, AEGISD, HARNESS
    check_binaries()
    bindir = tmp / "bin"
    bindir.mkdir()
    copies = []
    for p in (AEGIS, AEGISD, HARNESS):
        dst = bindir / p.name
        shutil.copy2(p, dst)
        copies.append(dst)
    AEGIS, AEGISD, HARNESS = copies


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) of `pid`, in clock ticks."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# processes


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) from /proc/PID/status, Pss from smaps_rollup."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(value.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def children(pid: int, comm_prefix: str = "") -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(stat).read()
        except OSError:
            continue
        # comm may contain spaces: it is between the first '(' and the last ')'.
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and comm.startswith(comm_prefix):
            found.append(int(stat.split("/")[2]))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    return open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")[:-1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for our purposes.
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Daemon:
    """A private aegisd: `home` with the shared cache symlinked in, started in __enter__,
    stopped with `aegis down` (then SIGTERM/SIGKILL to its own pid only) in __exit__."""

    def __init__(self, tmp: Path, cache: Path, log_filter: str | None = None, name: str = "home"):
        self.home = tmp / name
        self.cache = cache
        self.log_path = tmp / f"aegisd-{name}.log"
        self.log_filter = log_filter
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AEGIS_HOME"] = str(self.home)
        env["AEGIS_HARNESS"] = str(HARNESS)
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> "Daemon":
        self.home.mkdir(parents=True)
        (self.home / "cache").symlink_to(self.cache)
        env = self.env
        if self.log_filter:
            env["AEGIS_LOG"] = self.log_filter
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(AEGISD), "--home", str(self.home), "--backend", "qemu", "--router-addr", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"aegisd exited at start-up; see {self.log_path}")
            r = self.cli("status", check=False, capture=True)
            if r.returncode == 0:
                return self
            time.sleep(0.05)
        raise BenchError("aegisd did not answer within 30 s")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        try:
            self.cli("down", check=False, capture=True, timeout=60)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, check: bool = True, capture: bool = False, timeout: float = 300):
        r = subprocess.run(
            [str(AEGIS), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise BenchError(f"aegis {' '.join(args)} exited {r.returncode}: {r.stderr or ''}".strip())
        return r

    def inspect_task(self, task_id: str) -> dict:
        return json.loads(self.cli("task", "inspect", task_id, capture=True).stdout)

    def inspect_instance(self, name: str) -> dict:
        return json.loads(self.cli("instance", "inspect", name, capture=True).stdout)

    def qemu_children(self) -> list[int]:
        return children(self.pid, "qemu-system")

    def router_addr(self) -> str | None:
        """The shared router address from the daemon log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        m = re.search(r"shared HTTP router listening addr=(\S+)", text)
        return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# bare QEMU


def build_bare_initramfs(tmp: Path) -> Path:
    """/init = a static program that calls sync() then reboot(RB_AUTOBOOT)."""
    src = tmp / "init.c"
    src.write_text(INIT_C)
    root = tmp / "bare-root"
    root.mkdir()
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(root / "init"), str(src)], check=True)
    cpio = tmp / "bare-initramfs.cpio"
    with open(cpio, "wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            input=b"init\n",
            stdout=out,
            check=True,
        )
    return cpio


def option_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def bare_argv(aegis_argv: list[str], initramfs: Path, console: Path) -> list[str]:
    """The bare VMM: Aegis's binary, machine, accelerator, CPU, vCPUs, memory, global flags,
    kernel and kernel arguments (without the `aegis.*` ones), the console in a file as Aegis
    does; no disks, no channel, no QMP; the minimal initramfs."""
    binary = aegis_argv[0]
    args = aegis_argv[1:]
    keep_with_value = ["-M", "-accel", "-cpu", "-smp", "-m", "-kernel"]
    out = [binary]
    for flag in keep_with_value:
        for v in option_values(args, flag):
            out += [flag, v]
    for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]:
        if flag in args:
            out.append(flag)
    out += ["-initrd", str(initramfs)]
    append = option_values(args, "-append")[0]
    out += ["-append", " ".join(w for w in append.split() if not w.startswith("aegis."))]
    out += ["-chardev", f"file,id=con0,path={console}", "-serial", "chardev:con0"]
    return out


def bare_with_devices_argv(
    aegis_argv: list[str], run_dir: str, initramfs: Path, new_run_dir: Path, scratch: Path
) -> list[str]:
    """Aegis's exact QEMU argv (same disks, virtio-serial channel, QMP socket) with only the
    initramfs swapped for the minimal one: isolates what Aegis's devices cost the boot."""
    out = []
    skip = False
    args = aegis_argv[1:]
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "-name":
            skip = True
            continue
        if i > 0 and args[i - 1] == "-initrd":
            a = str(initramfs)
        elif i > 0 and args[i - 1] == "-append":
            a = " ".join(w for w in a.split() if not w.startswith("aegis."))
        a = a.replace(f"{run_dir}/scratch.ext4", str(scratch)).replace(run_dir, str(new_run_dir))
        out.append(a)
    return [aegis_argv[0], *out]


# ---------------------------------------------------------------------------------------------
# console timestamps


class ConsoleWatcher(threading.Thread):
    """Polls for console files (a glob, plus explicitly added paths) every `period` s and
    records (host wall time, line) for every complete line. Files are kept open, so lines
    written just before a VM's directory is removed are still read."""

    def __init__(self, pattern: str, period: float = 0.005):
        super().__init__(daemon=True)
        self.pattern = pattern
        self.period = period
        self.extra: set[str] = set()
        self.files: dict[str, tuple] = {}
        self.lines: dict[str, list[tuple[float, str]]] = {}
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()

    def add(self, path: str) -> None:
        with self.lock:
            self.extra.add(path)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.poll()
            time.sleep(self.period)
        self.poll()

    def poll(self) -> None:
        with self.lock:
            paths = set(glob.glob(self.pattern)) | self.extra
        for p in paths:
            if p not in self.files:
                try:
                    self.files[p] = (open(p, "rb"), bytearray())
                except OSError:
                    continue
                self.lines.setdefault(p, [])
        now = time.time()
        for p, (fh, buf) in self.files.items():
            try:
                data = fh.read()
            except OSError:
                continue
            if not data:
                continue
            buf.extend(data)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                with self.lock:
                    self.lines[p].append((now, line.decode(errors="replace").rstrip("\r")))

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=5)
        for fh, _ in self.files.values():
            fh.close()

    def get(self, path: str) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.lines.get(path, []))


def first(lines: list[tuple[float, str]], needle: str) -> float | None:
    for t, line in lines:
        if needle in line:
            return t
    return None


# ---------------------------------------------------------------------------------------------
# daemon log


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\w+)\s+(.*)$")


def parse_log(path: Path) -> list[tuple[float, str]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", raw))
        if not m:
            continue
        ts = dt.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=dt.timezone.utc).timestamp()
        out.append((ts, m.group(3)))
    return out


# ---------------------------------------------------------------------------------------------
# statistics and machine facts


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p: float) -> float:
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def load1() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def machine() -> dict[str, str]:
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"
    )
    mhz = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("cpu MHz")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")

    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except Exception:
            return "?"

    return {
        "nproc": first_line(["nproc"]),
        "cpu": cpu,
        "cpu_mhz": mhz,
        "memory": mem,
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "qemu": first_line(["qemu-system-x86_64", "--version"]),
        "load_start": loadavg(),
    }


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except Exception:
        return "?"


def fmt_s(x: float) -> str:
    return f"{x:.3f} s"


def fmt_ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"
