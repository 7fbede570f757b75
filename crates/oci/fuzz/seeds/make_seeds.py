#!/usr/bin/env python3
"""Writes the seed corpora of the aegis-oci fuzz targets into corpus/<target>/.

Run from crates/oci/fuzz: python3 seeds/make_seeds.py. The unpack seeds aim at the fixed
scratch directory of common/contained.rs ($TMPDIR/aegis-oci-fuzz, TMPDIR defaulting to /tmp).
"""
import base64, gzip, io, json, os, struct, tarfile

SCRATCH = os.path.join(os.environ.get("TMPDIR", "/tmp"), "aegis-oci-fuzz")
OUT = "corpus"


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    # seed-*: the committed seeds; libFuzzer adds its own finds beside them (git-ignored).
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def tar(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for kind, name, arg in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                data = arg.encode() if isinstance(arg, str) else arg
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = arg
                t.addfile(info)
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = arg
                t.addfile(info)
    return buf.getvalue()


def raw_header(name, size_field, typeflag=b"0"):
    """A ustar header with an arbitrary (possibly lying) size field."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field
    h[136:148] = b"14000000000\0"
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


out = f"{SCRATCH}/outside"
put("unpack", "plain", tar([("dir", "etc", None), ("file", "etc/hello", "hi\n"),
                            ("sym", "etc/link", "hello"), ("hard", "etc/hard", "etc/hello")]))
put("unpack", "dotdot", tar([("file", "../outside/pwned", "x"), ("file", "a/../../x", "x")]))
put("unpack", "absolute", tar([("file", f"{out}/pwned", "x")]))
put("unpack", "symlink-escape", tar([("sym", "escape", "../outside"), ("file", "escape/pwned", "x"),
                                     ("dir", "d", None), ("sym", "d/up", "../../.."),
                                     ("file", "d/up/outside/pwned2", "x")]))
put("unpack", "symlink-absolute", tar([("sym", "abs", out), ("file", "abs/pwned", "x"),
                                       ("sym", "canary", f"{out}/canary"), ("file", "canary", "new")]))
put("unpack", "hardlink-escape", tar([("hard", "h", "../outside/canary"), ("hard", "h1", f"{out}/canary"),
                                      ("sym", "up", ".."), ("hard", "h2", "up/outside/canary"),
                                      ("sym", "c", f"{out}/canary"), ("hard", "h3", "c")]))
put("unpack", "whiteouts", tar([("dir", "o", None), ("file", "o/x", "x"), ("file", "o/.wh..wh..opq", ""),
                                ("file", ".wh.o", ""), ("file", "etc/.wh...", ""),
                                ("file", ".wh.outside", ""), ("file", "up/.wh.canary", "")]))
put("unpack", "long-names", tar([("file", "d" * 150 + "/" + "f" * 200, "long"),
                                 ("sym", "l" * 120, "t" * 300)], fmt=tarfile.GNU_FORMAT))
put("unpack", "pax-names", tar([("file", "p" * 300, "pax"), ("sym", "q" * 200, "../" * 90)],
                               fmt=tarfile.PAX_FORMAT))
put("unpack", "huge-size-header",
    raw_header(b"big", b"77777777777\0") + b"\0" * 1024)
put("unpack", "huge-gnu-longname",
    raw_header(b"././@LongLink", b"77777777777\0", b"L") + b"x" * 512 + b"\0" * 1024)
put("unpack", "huge-pax-header",
    raw_header(b"pax", b"00000000040\0", b"x") + b"99999999999 path=x\n".ljust(512, b"\0")
    + raw_header(b"f", b"00000000000\0") + b"\0" * 1024)
put("unpack", "gzip", gzip.compress(tar([("sym", "escape", "../outside"), ("file", "escape/pwned", "x")])))
put("unpack", "gzip-bomb", gzip.compress(tar([("file", "zeros", b"\0" * (8 << 20))]), 9))

put("manifest", "oci-manifest", json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 7},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 32}]}).encode())
put("manifest", "docker-manifest", json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "a" * 64, "size": -1},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": "sha256:" + "c" * 64, "size": 9223372036854775807, "urls": ["http://x"]}]}).encode())
put("manifest", "oci-index", json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "d" * 64, "size": 5,
                   "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                  {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "e" * 64, "size": 5,
                   "platform": {"os": "linux", "architecture": "amd64"}}]}).encode())
put("manifest", "manifest-list-no-type", json.dumps({
    "schemaVersion": 2, "manifests": [{"digest": "sha256:" + "f" * 64, "size": 1}]}).encode())
put("manifest", "schema1", json.dumps({
    "schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "fsLayers": [{"blobSum": "sha256:" + "a" * 64}]}).encode())

put("config", "docker-config", json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/e"], "Cmd": ["c"], "Env": ["A=B"], "WorkingDir": "/w", "User": "1:1",
               "ExposedPorts": {"80/tcp": {}}, "Labels": {"k": "v"}},
    "rootfs": {"type": "layers", "diff_ids": []}}).encode())
put("config", "nulls", b'{"config": {"Cmd": null, "Env": null, "Labels": null}}')

put("auth", "docker-config-json", json.dumps({"auths": {
    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:q").decode()},
    "127.0.0.1:5000": {"username": "u", "password": "p"}, "ghcr.io": {}}, "credsStore": "desktop"}).encode())
put("auth", "bearer-challenge", b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')
put("auth", "mixed-challenges", b'Basic realm="a, \\"b\\"", Bearer realm=http://127.0.0.1/t,service=x')
