"""bench/images (issue 4): OCI image pull, first/warm boot by layer count, and app release
publish-to-first-boot, side by side in one run.

Run it through bench/images/run.sh. A real registry (Debian's `docker-registry`) on loopback
serves two images built here as OCI layouts and pushed with `skopeo copy`; both hold the same
files: a static busybox root (/bin/busybox + one symlink per applet) plus CONTENT_MB of the
host's /usr/lib/python3.11 and /usr/share/doc (thousands of small files, a few big ones):

  variant A: everything in 1 layer;
  variant B: the same files in 5 layers (busybox root, then the rest in 4 contiguous chunks of
             about equal size).

(1) pull: interleaved, N times each: `aegis image pull REF` into a daemon home without any of
    the image's blobs or disks (`aegis image rm` before each pull; checked on disk) vs
    `skopeo copy docker://REF dir:TMP` (downloads and verifies blobs only). aegisd's log
    (`layer disk made ... ms=`, `image pulled`) splits aegis's time into download and disks.
(2) boot: `aegis run --image REF -- true` right after each pull, page cache dropped first
    (first boot), then WARM more times per variant, interleaved (warm boot).
(3) apps: `aegis app create` on each variant, time of `aegis app publish --from SITE` (SITE/www/index.html), then
    time from `aegis app serve` returning to the first HTTP 200 through the instance's port.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "boot"))
import aegisbench as ab  # noqa: E402

LOG_FILTER = "info"
CONTENT_SOURCES = ["/usr/lib/python3.11", "/usr/share/doc"]
VARIANTS = {"A": 1, "B": 5}
APP_CMD = ["httpd", "-f", "-p", "8080", "-h", "/app/www"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Procs:
    """Processes this benchmark started directly (the registry); stopped by pid."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---------------------------------------------------------------------------------------------
# the registry and the images


def start_registry(tmp: Path, procs: Procs) -> str:
    port = free_port()
    cfg = tmp / "registry.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp / 'registry-data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    p = procs.start(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                    stderr=open(tmp / "registry.log", "wb"))
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                if r.status == 200:
                    return f"127.0.0.1:{port}"
        except Exception:
            pass
        if p.poll() is not None or time.monotonic() > deadline:
            raise ab.BenchError(f"docker-registry did not answer on 127.0.0.1:{port}; see {tmp}/registry.log")
        time.sleep(0.05)


class Layer:
    """One layer tar being built in memory: entries as tarfile does them, owner root, a fixed
    mtime for the entries made here (host files keep theirs), parents added as needed."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()
        self.files = 0

    def _norm(self, ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        if not path or path in self.dirs:
            return
        self.dir(os.path.dirname(path))
        ti = tarfile.TarInfo(path + "/")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 1_700_000_000
        self.tar.addfile(self._norm(ti))
        self.dirs.add(path)

    def data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(os.path.dirname(path))
        ti = tarfile.TarInfo(path)
        ti.size, ti.mode, ti.mtime = len(data), mode, 1_700_000_000
        self.tar.addfile(self._norm(ti), io.BytesIO(data))
        self.files += 1

    def symlink(self, path: str, target: str) -> None:
        self.dir(os.path.dirname(path))
        ti = tarfile.TarInfo(path)
        ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, target, 0o777, 1_700_000_000
        self.tar.addfile(self._norm(ti))

    def host(self, src: str) -> None:
        """A host file, directory or symlink, stored under its own path."""
        arc = src.lstrip("/")
        self.dir(os.path.dirname(arc))
        ti = self.tar.gettarinfo(src, arcname=arc)
        if ti.isdir():
            if arc in self.dirs:
                return
            self.dirs.add(arc)
            self.tar.addfile(self._norm(ti))
        elif ti.isreg():
            with open(src, "rb") as f:
                self.tar.addfile(self._norm(ti), f)
            self.files += 1
        elif ti.issym():
            self.tar.addfile(self._norm(ti))
            self.files += 1

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def busybox_into(layer: Layer) -> None:
    bb = Path("/bin/busybox")
    out = subprocess.run(["file", "-L", str(bb)], capture_output=True, text=True).stdout
    if "statically linked" not in out:
        raise ab.BenchError("/bin/busybox is not static: apt-get install busybox-static")
    for d in ["bin", "etc", "tmp", "var", "root", "proc", "sys", "dev", "run", "usr"]:
        layer.dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.data("bin/busybox", bb.read_bytes(), 0o755)
    layer.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    layer.data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    applets = subprocess.run([str(bb), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            layer.symlink(f"bin/{a}", "busybox")


def content_files(budget: int) -> tuple[list[tuple[str, int]], int]:
    """(path, size) of host files under CONTENT_SOURCES, sorted, until `budget` bytes of
    regular files; directories and symlinks included as met."""
    out, total = [], 0
    for root in CONTENT_SOURCES:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            out.append((dirpath, 0))
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    out.append((p, 0))
                elif stat.S_ISREG(st.st_mode) and os.access(p, os.R_OK):
                    if total + st.st_size > budget:
                        continue
                    out.append((p, st.st_size))
                    total += st.st_size
    return out, total


def build_images(content_mb: int) -> dict[str, list[bytes]]:
    files, total = content_files(content_mb * 2**20)
    say(f"images: {sum(1 for _, s in files if s)} regular files, {total / 2**20:.1f} MiB of host files")
    # A: one layer.
    a = Layer()
    busybox_into(a)
    for p, _ in files:
        a.host(p)
    # B: busybox root, then 4 contiguous chunks of about total/4 bytes each.
    b = [Layer()]
    busybox_into(b[0])
    chunk = total / 4
    done = 0
    cur = Layer()
    for p, size in files:
        if done >= chunk * len(b) and len(b) < 4:
            b.append(cur)
            cur = Layer()
        cur.host(p)
        done += size
    b.append(cur)
    if len(b) != 5:
        raise ab.BenchError(f"variant B has {len(b)} layers instead of 5")
    return {"A": [a.bytes()], "B": [x.bytes() for x in b]}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(layers: list[bytes], d: Path, tag: str) -> dict:
    """An OCI image layout in `d`; returns sizes and digests of what it holds."""
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        dig = sha256(data)
        (blobs / dig[7:]).write_bytes(data)
        return dig, len(data)

    descs, diff_ids, info = [], [], []
    for tar in layers:
        diff_ids.append(sha256(tar))
        gz = gzip.compress(tar, compresslevel=6, mtime=0)
        dig, size = put(gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dig, "size": size})
        info.append({"digest": dig, "gz": size, "tar": len(tar)})
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"], "WorkingDir": "/",
                   "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    }
    dc, sc = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": descs,
    }
    dm, sm = put(json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": sm,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (d / "index.json").write_text(json.dumps(index))
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return {"layers": info, "config": dc, "manifest": dm}


# ---------------------------------------------------------------------------------------------
# measurements


def timed(argv: list[str], env=None, timeout: float = 900) -> tuple[float, float, subprocess.CompletedProcess]:
    t0 = time.time()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    t1 = time.time()
    if r.returncode != 0:
        raise ab.BenchError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return t0, t1, r


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def blobs_present(d: ab.Daemon, info: dict) -> tuple[int, int]:
    """(layer blobs, layer disks) of this image present in the daemon home."""
    hexes = [l["digest"][7:] for l in info["layers"]]
    blobs = sum(1 for h in hexes if (d.home / "images" / "blobs" / "sha256" / h).exists())
    disks = sum(1 for h in hexes if (d.home / "layers" / f"{h}.erofs").exists())
    return blobs, disks


def http_200(port: int, deadline: float) -> float:
    """Polls GET / until a 200; returns the wall time it arrived."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=max(1, deadline - time.time())) as r:
                if r.status == 200:
                    r.read()
                    return time.time()
        except Exception:
            pass
        if time.time() > deadline:
            raise ab.BenchError(f"no HTTP 200 on 127.0.0.1:{port} before the deadline")
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=8, help="pulls (each side) and first boots per variant")
    ap.add_argument("--warm", type=int, default=10, help="warm boots per variant")
    ap.add_argument("--apps", type=int, default=5, help="publish + first-boot iterations per variant")
    ap.add_argument("--content-mb", type=int, default=90)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ab.sigterm_as_interrupt()
    ab.check_binaries()
    for tool in ["qemu-system-x86_64", "docker-registry", "skopeo", "file"]:
        if not shutil.which(tool):
            raise ab.BenchError(f"{tool} is not installed")
    if os.geteuid() != 0:
        raise ab.BenchError("run as root (the first boots drop the page cache)")
    tmp = Path(tempfile.mkdtemp(prefix="aegis-bi-", dir="/tmp"))
    procs = Procs()
    try:
        return run(args, tmp, procs)
    finally:
        procs.stop_all()
        if os.environ.get("KEEP_TMP"):
            say(f"bench/images: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path, procs: Procs) -> int:
    ab.snapshot_binaries(tmp)
    mach = ab.machine()
    say(f"bench/images: tmp {tmp}, load {ab.loadavg()}")
    R: dict = {"machine": mach, "args": vars(args), "loads": []}
    loads = R["loads"]

    t = time.time()
    tars = build_images(args.content_mb)
    registry = start_registry(tmp, procs)
    refs, infos = {}, {}
    for v, layers in tars.items():
        layout = tmp / f"layout-{v}"
        infos[v] = write_layout(layers, layout, "1")
        refs[v] = f"{registry}/bench/layers{len(layers)}:1"
        timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{refs[v]}"])
        shutil.rmtree(layout)
        say(f"  pushed {refs[v]}: {len(layers)} layer(s), "
            f"{sum(l['gz'] for l in infos[v]['layers']) / 2**20:.1f} MiB gzip, "
            f"{sum(l['tar'] for l in infos[v]['layers']) / 2**20:.1f} MiB tar")
    del tars
    R["prep_s"] = time.time() - t
    R["refs"], R["infos"] = refs, infos
    R["skopeo_version"] = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    R["registry_version"] = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "docker-registry"],
                                           capture_output=True, text=True).stdout.strip()

    with ab.Daemon(tmp, ab.default_cache(), LOG_FILTER) as d:
        # ---- (1) pulls + (2) first boots, interleaved.
        pulls = {v: [] for v in VARIANTS}
        skopeo = {v: [] for v in VARIANTS}
        first = {v: [] for v in VARIANTS}
        steps = [("skopeo", "A"), ("aegis", "A"), ("skopeo", "B"), ("aegis", "B")]
        for i in range(args.iterations):
            k = i % len(steps)
            for who, v in steps[k:] + steps[:k]:
                if who == "skopeo":
                    dest = tmp / "skopeo-dir"
                    loads.append(ab.load1())
                    t0, t1, _ = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                       f"docker://{refs[v]}", f"dir:{dest}"])
                    skopeo[v].append(t1 - t0)
                    shutil.rmtree(dest)
                    say(f"  {i + 1}/{args.iterations} skopeo copy {v}: {t1 - t0:.3f} s")
                    continue
                if d.cli("image", "inspect", refs[v], check=False, capture=True).returncode == 0:
                    d.cli("image", "rm", refs[v], capture=True)
                if blobs_present(d, infos[v]) != (0, 0):
                    raise ab.BenchError(f"blobs or disks of {refs[v]} left after aegis image rm: "
                                        f"{blobs_present(d, infos[v])}")
                loads.append(ab.load1())
                t0, t1, _ = timed([str(ab.AEGIS), "image", "pull", refs[v]], env=d.env)
                present = blobs_present(d, infos[v])
                pulls[v].append({"t0": t0, "t1": t1, "s": t1 - t0, "present": present})
                drop_caches()
                loads.append(ab.load1())
                b0, b1, _ = timed([str(ab.AEGIS), "run", "--image", refs[v], "--", "true"], env=d.env)
                first[v].append({"t0": b0, "t1": b1, "s": b1 - b0})
                say(f"  {i + 1}/{args.iterations} aegis image pull {v}: {t1 - t0:.3f} s "
                    f"(blobs/disks present {present}); first boot {b1 - b0:.3f} s")
        R["pulls"], R["skopeo"], R["first"] = pulls, skopeo, first
        R["disk_files"] = {v: {l["digest"]: (d.home / "layers" / f"{l['digest'][7:]}.erofs").stat().st_size
                               for l in infos[v]["layers"]
                               if (d.home / "layers" / f"{l['digest'][7:]}.erofs").exists()}
                           for v in VARIANTS}

        # ---- (2) warm boots, interleaved.
        warm = {v: [] for v in VARIANTS}
        for i in range(args.warm):
            for v in (["A", "B"] if i % 2 == 0 else ["B", "A"]):
                loads.append(ab.load1())
                b0, b1, _ = timed([str(ab.AEGIS), "run", "--image", refs[v], "--", "true"], env=d.env)
                warm[v].append({"t0": b0, "t1": b1, "s": b1 - b0})
                say(f"  {i + 1}/{args.warm} warm boot {v}: {b1 - b0:.3f} s")
        R["warm"] = warm

        # ---- (3) app publish and release first boot.
        apps = {v: [] for v in VARIANTS}
        R["apps"] = apps
        help_r = d.cli("app", "--help", check=False, capture=True)
        if help_r.returncode != 0:
            R["apps_missing"] = (help_r.stderr or help_r.stdout).strip()
            say(f"  (3) skipped: `aegis app` is not available: {R['apps_missing']}")
        else:
            site = tmp / "site"  # published under /app: /app/www/index.html
            www = site / "www"
            www.mkdir(parents=True)
            (www / "index.html").write_text("<!doctype html><title>bench</title><p>hello from a release</p>\n")
            for i in range(args.apps):
                for v in (["A", "B"] if i % 2 == 0 else ["B", "A"]):
                    name = f"site-{v.lower()}-{i}"
                    d.cli("app", "create", name, "--image", refs[v], "--expose", "8080", "--", *APP_CMD,
                          capture=True)
                    loads.append(ab.load1())
                    p0, p1, pr = timed([str(ab.AEGIS), "app", "publish", name, "--from", str(site)], env=d.env)
                    s0, s1, sr = timed([str(ab.AEGIS), "app", "serve", name], env=d.env)
                    inst = d.inspect_instance(name)
                    port = int(inst["endpoints"][0]["host_port"])
                    h = http_200(port, time.time() + 200)
                    apps[v].append({"publish": p1 - p0, "serve": s1 - s0, "first_200": h - s1,
                                    "p0": p0, "s1": s1, "h": h, "publish_out": (pr.stdout + pr.stderr).strip(),
                                    "serve_out": (sr.stdout + sr.stderr).strip()})
                    say(f"  {i + 1}/{args.apps} app {v}: publish {p1 - p0:.3f} s, serve {s1 - s0:.3f} s, "
                        f"serve -> first 200 {h - s1:.3f} s")
                    d.cli("app", "rm", name, capture=True)
        time.sleep(0.2)
        R["log"] = ab.parse_log(d.log_path)
    R["load_end"] = ab.loadavg()
    write_report(R, Path(args.out))
    return 0


# ---------------------------------------------------------------------------------------------
# report


def in_window(log, t0: float, t1: float, needle: str):
    return [(t, m) for t, m in log if t0 - 0.005 <= t <= t1 + 0.05 and needle in m]


def field(m: str, key: str) -> str | None:
    x = re.search(rf"\b{key}=(\S+)", m)
    return x.group(1) if x else None


def pull_split(log, p: dict) -> dict | None:
    """Download (CLI start to the first disk build's start), disks (sum of their ms), the rest."""
    made = in_window(log, p["t0"], p["t1"], "layer disk made")
    pulled = in_window(log, p["t0"], p["t1"], "image pulled")
    if not made or not pulled:
        return None
    ms = [int(field(m, "ms") or 0) for _, m in made]
    start = min(t - int(field(m, "ms") or 0) / 1000 for t, m in made)
    return {"download": start - p["t0"], "disks": sum(ms) / 1000, "per_disk_ms": ms,
            "other": (p["t1"] - p["t0"]) - (start - p["t0"]) - sum(ms) / 1000}


def write_report(R: dict, out: Path) -> None:
    m = R["machine"]
    a = R["args"]
    infos, refs, log = R["infos"], R["refs"], R["log"]
    med = ab.median
    loads = R["loads"]
    gz = {v: sum(l["gz"] for l in infos[v]["layers"]) for v in VARIANTS}
    tar = {v: sum(l["tar"] for l in infos[v]["layers"]) for v in VARIANTS}

    def mib(n):
        return f"{n / 2**20:.1f} MiB"

    def mmm(xs):
        return f"{ab.fmt_s(min(xs))} | {ab.fmt_s(med(xs))} | {ab.fmt_s(max(xs))}" if xs else "- | - | -"

    # (1) pull
    rows = ["| variant | tool | N | min | median | max | MB/s (gzip bytes / median) | MB/s (tar bytes / median) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    splits = {}
    for v in VARIANTS:
        ps = [p["s"] for p in R["pulls"][v]]
        ss = R["skopeo"][v]
        for tool, xs in (("`skopeo copy docker:// dir:`", ss), ("`aegis image pull`", ps)):
            rows.append(f"| {v} ({VARIANTS[v]} layer{'s' if VARIANTS[v] > 1 else ''}) | {tool} | {len(xs)} | {mmm(xs)} | "
                        f"{gz[v] / 1e6 / med(xs):.1f} | {tar[v] / 1e6 / med(xs):.1f} |")
        splits[v] = [x for x in (pull_split(log, p) for p in R["pulls"][v]) if x]
    pull_table = "\n".join(rows)
    ratio_lines = []
    for v in VARIANTS:
        ps = [p["s"] for p in R["pulls"][v]]
        ratio_lines.append(f"- **{v}: aegis / skopeo = {med(ps):.3f} / {med(R['skopeo'][v]):.3f} = "
                           f"{med(ps) / med(R['skopeo'][v]):.2f}**")
    split_rows = ["| variant | aegis pull (median) | download, verify, store blobs: CLI start -> first disk build starts | "
                  "layer disks: unpack + mkfs.erofs (sum over disks) | rest (record, CLI) | download only vs skopeo (medians) | "
                  "download MB/s (gzip) | disks MB/s (tar) | per-disk ms (median run) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v in VARIANTS:
        sp = splits[v]
        if not sp:
            split_rows.append(f"| {v} | (no split: log lines missing) | | | | | | | |")
            continue
        dl = med([x["download"] for x in sp])
        mid = sorted(sp, key=lambda x: x["disks"])[len(sp) // 2]
        split_rows.append(
            f"| {v} | {ab.fmt_s(med([p['s'] for p in R['pulls'][v]]))} | {ab.fmt_s(dl)} | "
            f"{ab.fmt_s(med([x['disks'] for x in sp]))} | {ab.fmt_s(med([x['other'] for x in sp]))} | "
            f"{dl / med(R['skopeo'][v]):.2f} | {gz[v] / 1e6 / dl:.1f} | "
            f"{tar[v] / 1e6 / med([x['disks'] for x in sp]):.1f} | {', '.join(map(str, mid['per_disk_ms']))} |")
    split_table = "\n".join(split_rows)

    layer_rows = ["| variant | layer | gzip | tar | layer disk (EROFS) |", "|---|---:|---:|---:|---:|"]
    for v in VARIANTS:
        for i, l in enumerate(infos[v]["layers"]):
            disk = R["disk_files"][v].get(l["digest"])
            layer_rows.append(f"| {v} | {i + 1} | {mib(l['gz'])} | {mib(l['tar'])} | {mib(disk) if disk else '?'} |")
    layer_table = "\n".join(layer_rows)

    # (2) boot
    brows = ["| variant | boot | N | min | median | max |", "|---|---|---:|---:|---:|---:|"]
    for v in VARIANTS:
        brows.append(f"| {v} ({VARIANTS[v]} layer{'s' if VARIANTS[v] > 1 else ''}) | first (after pull, page cache dropped) | "
                     f"{len(R['first'][v])} | {mmm([x['s'] for x in R['first'][v]])} |")
        brows.append(f"| {v} | warm | {len(R['warm'][v])} | {mmm([x['s'] for x in R['warm'][v]])} |")
    boot_table = "\n".join(brows)
    fa, fb = med([x["s"] for x in R["first"]["A"]]), med([x["s"] for x in R["first"]["B"]])
    wa, wb = med([x["s"] for x in R["warm"]["A"]]), med([x["s"] for x in R["warm"]["B"]])

    # (3) apps
    apps = R["apps"]
    if R.get("apps_missing"):
        app_txt = (f"Not measured: `aegis app` is not available in the binaries this run used "
                   f"(`{R['apps_missing']}`). No number is recorded.")
    else:
        arows = ["| image of the app | N | `aegis app publish --from SITE` min / median / max | `aegis app serve` median | "
                 "`app serve` returned -> first HTTP 200 min / median / max | layer disks made on the first request (median ms) | "
                 "`cold boot ready` (median ms) |",
                 "|---|---:|---|---:|---|---:|---:|"]
        for v in VARIANTS:
            xs = apps[v]
            if not xs:
                continue
            made = [sum(int(field(mm, "ms") or 0) for _, mm in in_window(log, x["s1"], x["h"], "layer disk made")) for x in xs]
            ready = [int(field(mm, "ms") or 0) for x in xs for _, mm in in_window(log, x["s1"], x["h"], "cold boot ready")]
            pub = [x["publish"] for x in xs]
            f2 = [x["first_200"] for x in xs]
            arows.append(f"| {v} ({VARIANTS[v]} + 1 directory layer) | {len(xs)} | {mmm(pub).replace(' | ', ' / ')} | "
                         f"{ab.fmt_s(med([x['serve'] for x in xs]))} | {mmm(f2).replace(' | ', ' / ')} | "
                         f"{med(made):.0f} | {med(ready):.0f} |")
        one = next((x for v in VARIANTS for x in apps[v]), None)
        app_txt = "\n".join(arows)
        if one:
            app_txt += ("\n\nWhat the CLI printed, first iteration:\n\n```\n$ aegis app publish NAME --from SITE\n"
                        f"{one['publish_out']}\n$ aegis app serve NAME\n{one['serve_out']}\n```")
        if apps["A"] and apps["B"]:
            app_txt += (f"\n\nRatio B/A of the medians: publish {med([x['publish'] for x in apps['B']]) / med([x['publish'] for x in apps['A']]):.2f}, "
                        f"serve -> first 200 {med([x['first_200'] for x in apps['B']]) / med([x['first_200'] for x in apps['A']]):.2f}.")

    md = f"""# Images: pull vs skopeo, first and warm boot by layer count, release publish to first boot

Recorded by `bench/images/run.sh` (issue 4) on {time.strftime('%Y-%m-%d %H:%M %Z')}, git {ab.git_rev()}.
All measurements of one run, side by side; the registry is on loopback.

## Machine

- {m['nproc']} CPUs usable, {m['cpu']} ({m['cpu_mhz']} MHz), {m['memory']} RAM; {m['os']}, kernel {m['kernel']}
- {m['qemu']}, accelerator TCG
- registry: Debian `docker-registry` {R['registry_version']} on 127.0.0.1 (filesystem storage in the run's
  temporary directory); {R['skopeo_version']}
- load average: {m['load_start']} at the start, {R['load_end']} at the end; 1-min load sampled before each
  measurement: min {min(loads):.2f}, median {med(loads):.2f}, max {max(loads):.2f}. Other engineers' builds
  and VM tests shared the 2 cores during this run, so absolute times are inflated and noisy; what is
  compared is interleaved (order rotated each iteration), so prefer the ratios.

## The images

Both hold the same files: a static busybox root (`/bin/busybox` from Debian `busybox-static`, a
symlink per applet, `/etc/passwd`, `/etc/group`) plus the first {a['content_mb']} MiB (sorted walk) of the host's
{' and '.join('`' + s + '`' for s in CONTENT_SOURCES)}. Layers are tar+gzip (Python `gzip`, level 6),
pushed with `skopeo copy oci:... docker://...`.

- **A** `{refs['A']}`: 1 layer; **B** `{refs['B']}`: 5 layers (the busybox root, then
  the host files in 4 contiguous chunks of about equal size).
- total: A {mib(gz['A'])} gzip / {mib(tar['A'])} tar; B {mib(gz['B'])} gzip / {mib(tar['B'])} tar.

{layer_table}

## 1. Pull: `aegis image pull` vs `skopeo copy`

N = {a['iterations']} of each, interleaved (skopeo A, aegis A, skopeo B, aegis B, rotated each
iteration). Every aegis pull starts from a home without any blob or disk of the image (`aegis
image rm` before it, checked on disk); it downloads and verifies the blobs **and** makes the
layers' EROFS disks (unpack + `mkfs.erofs`), which is what makes the image bootable.
`skopeo copy --src-tls-verify=false docker://REF dir:TMP` downloads and verifies the blobs only
(no unpacking) into a fresh directory on the same file system. MB = 10^6 bytes.

{pull_table}

{chr(10).join(ratio_lines)}

Where aegis's pull time goes (aegisd's log at `AEGIS_LOG={LOG_FILTER}`: the `ms` of each
`layer disk made` line, timed by aegisd around the disk build; download = from the CLI's start to
the start of the first disk build, i.e. CLI, manifest, config and layer blobs streamed to disk
and hashed; rest = wall time minus the other two: the gaps between disk builds, the record and the CLI's
exit; aegisd makes several disks at once (one per core), so the sum over disks can exceed its
wall time and `rest` is then negative):

{split_table}

## 2. First boot and warm boot, 5 layers vs 1

`aegis run --image REF -- true`, CLI start to exit. First boot: right after each pull above, after
`sync; echo 3 > /proc/sys/vm/drop_caches` (disks just made, page cache cold: kernel, initramfs,
QEMU and the disks are read from disk again). Warm: N = {a['warm']} more per variant afterwards,
interleaved A/B.

{boot_table}

- **first boot B/A = {fb:.3f} / {fa:.3f} = {fb / fa:.2f}**
- **warm boot B/A = {wb:.3f} / {wa:.3f} = {wb / wa:.2f}**
- first / warm: A {fa / wa:.2f}, B {fb / wb:.2f}

## 3. Release publish to first boot

Per iteration: `aegis app create site-X-i --image REF --expose 8080 -- {' '.join(APP_CMD)}`, then
`aegis app publish site-X-i --from SITE` (SITE = `www/index.html`, one small file, so `/app/www/index.html` in the guest), timed; `aegis app serve
site-X-i`, then `GET /` (Python urllib, retried every 20 ms until a 200) to the instance's
host port from `aegis instance inspect`: the time from `app serve` returning to the first 200
includes the first cold boot of the release (the router holds the request while the VM boots)
and making the directory layer's disk. Then `aegis app rm`. N = {a['apps']} per image,
interleaved.

{app_txt}

## Method notes

- Binaries: `target/release/{{aegis,aegisd}}` and the static harness, copied to the run's temporary
  directory first. aegisd ran in its own temporary home (the Aegis cache symlinked in) with
  `--backend qemu --router-addr 127.0.0.1:0`; everything the script started (registry, aegisd,
  VMs) was stopped by pid and the temporary directory removed.
- Preparing the images (walk, tar, gzip, push) took {R['prep_s']:.0f} s and is not measured.
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ab.BenchError as e:
        print(f"bench/images: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench/images: interrupted", file=sys.stderr)
        sys.exit(130)
