//! A real OCI registry for image tests: Debian's `docker-registry` on loopback, images built
//! here as OCI layouts and pushed with a real tool (`skopeo`).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Finds a tool on PATH or fails naming the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not installed: this test needs it; install the Debian package \
                 `{package}` (scripts/deps.sh does)"
            )
        })
}

/// A `docker-registry` serving `127.0.0.1:<free port>` from a temporary directory; killed on
/// drop.
pub struct LocalRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn start() -> LocalRegistry {
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: \
                 {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = LocalRegistry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.v2_answers() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on 127.0.0.1:{port}/v2/ within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn v2_answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
    }

    /// Flips a byte in the middle of the biggest blob the registry stores (a layer), so that
    /// it no longer matches its digest. Returns the blob's digest.
    pub fn corrupt_biggest_blob(&self) -> String {
        let blobs = self.dir.path().join("data/docker/registry/v2/blobs/sha256");
        let mut biggest: Option<(u64, PathBuf)> = None;
        for prefix in fs::read_dir(&blobs).unwrap().flatten() {
            for blob in fs::read_dir(prefix.path()).unwrap().flatten() {
                let data = blob.path().join("data");
                let len = fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                    biggest = Some((len, data));
                }
            }
        }
        let (len, path) = biggest.expect("the registry stores no blob");
        let mut bytes = fs::read(&path).unwrap();
        bytes[(len / 2) as usize] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let hex = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        format!("sha256:{hex}")
    }

    /// `127.0.0.1:<port>`: the registry part of references to images pushed here.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `image` as `<addr>/<repo>:<tag>` with `skopeo copy`; returns that reference.
    pub fn push(&self, image: &OciImage, repo: &str, tag: &str) -> String {
        let layout = tempfile::tempdir().unwrap();
        image.write_layout(layout.path(), tag);
        self.push_layout(layout.path(), tag, repo, tag)
    }

    /// Pushes what `tag` names in the OCI layout `layout` (an image or a multi-platform
    /// index, all of it) as `<addr>/<repo>:<dest_tag>`; returns that reference.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo: &str, dest_tag: &str) -> String {
        let skopeo = require_tool("skopeo", "skopeo");
        let reference = format!("{}/{repo}:{dest_tag}", self.addr());
        let out = Command::new(skopeo)
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }

    /// The registry's own file holding blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Builds one layer tar.
#[derive(Default)]
pub struct LayerBuilder {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn entry(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: &str,
    ) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        // Written into the header as is: the tar crate refuses to *write* `..` paths, and
        // hostile layers are exactly what some tests need.
        let name = path.as_bytes();
        assert!(name.len() < 100, "test entry path too long: {path}");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let b = self.builder.as_mut().unwrap();
        b.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, 0o755, b"", "")
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, mode, data, "")
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, tar::EntryType::Symlink, 0o777, b"", target)
    }

    /// `.wh.NAME` in `dir`: deletes `dir/NAME` of the layers below.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = format!("{}/.wh.{name}", dir.trim_end_matches('/'));
        self.entry(&path, tar::EntryType::Regular, 0o644, b"", "")
    }

    pub fn build(mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().unwrap()
    }
}

/// A layer with the host's static busybox (`busybox-static`) as `/bin/busybox` and a symlink per
/// applet in `/bin`, plus the directories a Linux root needs.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: install the Debian package `busybox-static`"
    );
    let bytes = fs::read(busybox).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    let mut layer = LayerBuilder::new();
    for dir in [
        "bin/", "etc/", "tmp/", "var/", "root/", "proc/", "sys/", "dev/", "run/",
    ] {
        layer = layer.dir(dir);
    }
    layer = layer
        .file("bin/busybox", 0o755, &bytes)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\n");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    layer.build()
}

/// How a layer is compressed in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// An image to push: layers (uncompressed tars, bottom first) and the config's `config` object
/// (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`, `ExposedPorts`).
pub struct OciImage {
    pub layers: Vec<Vec<u8>>,
    pub config: serde_json::Value,
    pub compression: Compression,
}

impl OciImage {
    pub fn new(layers: Vec<Vec<u8>>, config: serde_json::Value) -> OciImage {
        OciImage {
            layers,
            config,
            compression: Compression::Gzip,
        }
    }

    /// Writes an OCI image layout holding this image tagged `tag` into `dir`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| -> (String, usize) {
            let d = sha256(bytes);
            fs::write(blobs.join(&d[7..]), bytes).unwrap();
            (d, bytes.len())
        };
        let mut descriptors = vec![];
        let mut diff_ids = vec![];
        for layer in &self.layers {
            diff_ids.push(sha256(layer));
            let (media_type, blob) = match self.compression {
                Compression::None => ("application/vnd.oci.image.layer.v1.tar", layer.clone()),
                Compression::Gzip => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(layer).unwrap();
                    (
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        gz.finish().unwrap(),
                    )
                }
            };
            let (digest, size) = put(&blob);
            descriptors
                .push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
        }
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": []
        });
        let (dc, sc) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
            "layers": descriptors
        });
        let (dm, sm) = put(&serde_json::to_vec(&manifest).unwrap());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": dm, "size": sm,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]});
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }
}

/// The standard multi-layer test image: busybox, then a layer with `/etc/motd`,
/// `/etc/removed.txt`, `/srv/www/index.html` and `/srv/old/{a,b}.txt`, then a layer whose
/// whiteout deletes `/etc/removed.txt` and whose opaque marker hides `/srv/old`'s lower
/// content (it adds `/srv/old/c.txt`). Config: `Cmd ["cat", "/etc/motd"]`, `Env GREETING=hello-from-image`,
/// `WorkingDir /srv`, `ExposedPorts 8080/tcp`.
pub fn test_image() -> OciImage {
    let content = LayerBuilder::new()
        .dir("etc/")
        .file("etc/motd", 0o644, b"motd from layer 2\n")
        .file(
            "etc/removed.txt",
            0o644,
            b"this file is deleted by layer 3\n",
        )
        .dir("srv/")
        .dir("srv/www/")
        .file("srv/www/index.html", 0o644, b"hello from an OCI image\n")
        .dir("srv/old/")
        .file("srv/old/a.txt", 0o644, b"a\n")
        .file("srv/old/b.txt", 0o644, b"b\n")
        .build();
    let whiteout = LayerBuilder::new()
        .dir("etc/")
        .whiteout("etc", "removed.txt")
        .file("etc/added.txt", 0o644, b"added by layer 3\n")
        .dir("srv/")
        .dir("srv/old/")
        .file("srv/old/.wh..wh..opq", 0o644, b"")
        .file("srv/old/c.txt", 0o644, b"c\n")
        .build();
    OciImage::new(
        vec![busybox_layer(), content, whiteout],
        serde_json::json!({
            "Cmd": ["cat", "/etc/motd"],
            "Env": ["PATH=/bin", "GREETING=hello-from-image"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}}
        }),
    )
}
