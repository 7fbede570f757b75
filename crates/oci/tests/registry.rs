//! End-to-end tests against a real registry (Debian's `docker-registry`) on loopback, with
//! images pushed by a real tool (`skopeo`).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use aegis_oci::{Error, NoProgress, Progress, Store};
use aegis_testkit::registry::LocalRegistry;
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    b.append_data(&mut h, path, data).unwrap();
}

/// Layer 1 (gzip): files, a hard link, a symlink, an xattr and an executable.
fn layer1() -> Vec<u8> {
    use tar::EntryType::*;
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "etc/", Directory, 0o755, b"", None);
    tar_entry(&mut b, "etc/hello.txt", Regular, 0o644, b"hello v1\n", None);
    tar_entry(
        &mut b,
        "etc/gone.txt",
        Regular,
        0o644,
        b"deleted above\n",
        None,
    );
    tar_entry(&mut b, "opq/", Directory, 0o755, b"", None);
    tar_entry(&mut b, "opq/old.txt", Regular, 0o644, b"old\n", None);
    tar_entry(&mut b, "bin/", Directory, 0o755, b"", None);
    tar_entry(
        &mut b,
        "bin/tool",
        Regular,
        0o755,
        b"#!/bin/sh\necho hi\n",
        None,
    );
    tar_entry(&mut b, "bin/tool-hard", Link, 0o755, b"", Some("bin/tool"));
    tar_entry(&mut b, "bin/tool-sym", Symlink, 0o777, b"", Some("tool"));
    // An extended attribute, as a PAX record.
    b.append_pax_extensions([("SCHILY.xattr.user.aegis", b"yes".as_slice())])
        .unwrap();
    tar_entry(&mut b, "etc/xattr.txt", Regular, 0o600, b"x\n", None);
    b.into_inner().unwrap()
}

/// Layer 2 (zstd): a whiteout deleting a file of layer 1, an opaque dir and a changed file.
fn layer2() -> Vec<u8> {
    use tar::EntryType::*;
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "etc/", Directory, 0o755, b"", None);
    tar_entry(&mut b, "etc/.wh.gone.txt", Regular, 0o644, b"", None);
    tar_entry(&mut b, "etc/hello.txt", Regular, 0o644, b"hello v2\n", None);
    tar_entry(&mut b, "opq/", Directory, 0o755, b"", None);
    tar_entry(&mut b, "opq/.wh..wh..opq", Regular, 0o644, b"", None);
    tar_entry(&mut b, "opq/new.txt", Regular, 0o644, b"new\n", None);
    b.into_inner().unwrap()
}

/// Writes an OCI image layout with two layers (gzip, zstd) tagged `tag`.
fn build_layout(dir: &Path, tag: &str, marker: &str) {
    let (dm, sm) = build_image(dir, marker, "amd64");
    write_index(
        dir,
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": dm, "size": sm,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }),
    );
}

fn write_index(dir: &Path, entry: serde_json::Value) {
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes a multi-platform layout: `tag` is an OCI index of one image per architecture.
fn build_multi_arch_layout(dir: &Path, tag: &str, arches: &[&str]) {
    let manifests: Vec<serde_json::Value> = arches
        .iter()
        .map(|arch| {
            let (d, s) = build_image(dir, arch, arch);
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d, "size": s,
                "platform": {"os": "linux", "architecture": arch}
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = sha256(&bytes);
    fs::write(dir.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    write_index(
        dir,
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }),
    );
}

/// Writes the blobs of one image into a layout; returns the manifest's digest and size.
fn build_image(dir: &Path, marker: &str, arch: &str) -> (String, usize) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = sha256(bytes);
        fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), bytes).unwrap();
        (d, bytes.len())
    };
    let l1 = layer1();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l1).unwrap();
    let l1z = gz.finish().unwrap();
    let l2 = layer2();
    let l2z = zstd::encode_all(&l2[..], 3).unwrap();
    let (d1, s1) = put(&l1z);
    let (d2, s2) = put(&l2z);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {
            "Entrypoint": ["/bin/tool"], "Cmd": ["--flag"],
            "Env": ["PATH=/bin", format!("MARKER={marker}")],
            "WorkingDir": "/etc", "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(&l1), sha256(&l2)]},
        "history": []
    });
    let (dc, sc) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d1, "size": s1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": d2, "size": s2}
        ]
    });
    put(&serde_json::to_vec(&manifest).unwrap())
}

#[derive(Default)]
struct CountingProgress {
    length: AtomicU64,
    received: AtomicU64,
    finished: AtomicU64,
}

impl Progress for CountingProgress {
    fn set_message(&self, _: &str) {}
    fn set_length(&self, length: u64) {
        self.length.store(length, Ordering::SeqCst);
    }
    fn inc(&self, delta: u64) {
        self.received.fetch_add(delta, Ordering::SeqCst);
    }
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn pull_push_unpack_list_remove() {
    let registry = LocalRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    build_layout(&layout, "v1", "one");
    registry.push_layout(&layout, "v1", "test/img", "v1");
    registry.push_layout(&layout, "v1", "test/img", "v2");

    let store = Store::open(work.path().join("store")).unwrap();
    let reference = format!("{}/test/img:v1", registry.addr());
    let progress = CountingProgress::default();
    let image = store.pull(&reference, &progress).await.unwrap();
    assert_eq!(image.reference, reference);
    assert_eq!(image.layers.len(), 2);
    assert!(image.layers[1].media_type.ends_with("+zstd"));
    assert_eq!(progress.finished.load(Ordering::SeqCst), 1);
    assert!(progress.length.load(Ordering::SeqCst) > 0);
    assert_eq!(
        progress.received.load(Ordering::SeqCst),
        progress.length.load(Ordering::SeqCst)
    );
    for digest in image.blobs() {
        assert!(store.has_blob(digest), "{digest} not stored");
    }
    let c = &image.config;
    assert_eq!(c.entrypoint, ["/bin/tool"]);
    assert_eq!(c.cmd, ["--flag"]);
    assert_eq!(c.env, ["PATH=/bin", "MARKER=one"]);
    assert_eq!(c.working_dir, "/etc");
    assert_eq!(c.user, "1000:1000");
    assert_eq!(c.exposed_ports, ["8080/tcp"]);

    // Unpack: layer 2's whiteout and opaque dir are honoured.
    let root = work.path().join("rootfs");
    store.unpack(&image, &root).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/hello.txt")).unwrap(),
        "hello v2\n"
    );
    assert!(!root.join("etc/gone.txt").exists(), "whiteout ignored");
    assert!(!root.join("etc/.wh.gone.txt").exists());
    assert!(!root.join("opq/old.txt").exists(), "opaque dir ignored");
    assert_eq!(
        fs::read_to_string(root.join("opq/new.txt")).unwrap(),
        "new\n"
    );
    let tool = fs::metadata(root.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(root.join("bin/tool-hard")).unwrap().ino(),
        tool.ino()
    );
    assert_eq!(
        fs::read_link(root.join("bin/tool-sym")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(root.join("etc/xattr.txt")).unwrap().mode() & 0o777,
        0o600
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!((tool.uid(), tool.gid()), (1000, 1000));
    }
    match xattr::get(root.join("etc/xattr.txt"), "user.aegis") {
        Ok(value) => assert_eq!(value.as_deref(), Some(b"yes".as_slice())),
        Err(e) => eprintln!("filesystem without user xattrs, not checked: {e}"),
    }

    // A second tag of the same image shares every blob: nothing is fetched again.
    let reference2 = format!("{}/test/img:v2", registry.addr());
    let progress2 = CountingProgress::default();
    let image2 = store.pull(&reference2, &progress2).await.unwrap();
    assert_eq!(progress2.received.load(Ordering::SeqCst), 0);
    assert_eq!(image2.manifest_digest, image.manifest_digest);
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(listed, [reference.clone(), reference2.clone()]);

    // Removing one keeps the shared blobs; removing the last removes them.
    store.remove(&reference).unwrap();
    for digest in image.blobs() {
        assert!(store.has_blob(digest));
    }
    assert!(matches!(
        store.get(&reference),
        Err(Error::ImageNotInStore { .. })
    ));
    store.remove(&reference2).unwrap();
    for digest in image.blobs() {
        assert!(!store.has_blob(digest), "{digest} left behind");
    }
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.remove(&reference2),
        Err(Error::ImageNotInStore { .. })
    ));
}

#[tokio::test]
async fn unknown_tag_is_a_clear_error() {
    let registry = LocalRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    build_layout(&layout, "v1", "x");
    registry.push_layout(&layout, "v1", "test/known", "v1");
    let store = Store::open(work.path().join("store")).unwrap();

    for reference in [
        format!("{}/test/known:nope", registry.addr()),
        format!("{}/test/unknown-repo:v1", registry.addr()),
    ] {
        let err = store.pull(&reference, &NoProgress).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&reference) && msg.contains("not found"),
            "{msg}"
        );
    }
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let reference = format!("127.0.0.1:{port}/test/img:v1");
    let err = store.pull(&reference, &NoProgress).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot reach registry") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_not_stored() {
    let registry = LocalRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    build_layout(&layout, "v1", "corrupt");
    registry.push_layout(&layout, "v1", "test/corrupt", "v1");

    // Tamper with the second layer in the registry's own storage (same size, one byte flipped).
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(layout.join("blobs/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = registry.blob_file(&layer);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&file, &bytes).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let reference = format!("{}/test/corrupt:v1", registry.addr());
    let err = store.pull(&reference, &NoProgress).await.unwrap_err();
    match &err {
        Error::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &layer);
            assert_eq!(actual, &sha256(&bytes));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("rejected and not stored"), "{err}");
    assert!(!store.has_blob(&layer), "corrupted blob was stored");
    assert!(!store.has_blob(&sha256(&bytes)));
    assert!(store.list().unwrap().is_empty(), "image recorded anyway");
    let leftovers: Vec<_> = fs::read_dir(store.root().join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn manifest_list_picks_linux_amd64() {
    let registry = LocalRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("multi");
    build_multi_arch_layout(&layout, "multi", &["arm64", "amd64"]);
    registry.push_layout(&layout, "multi", "test/multi", "multi");
    let only_arm = work.path().join("arm");
    build_multi_arch_layout(&only_arm, "arm", &["arm64"]);
    registry.push_layout(&only_arm, "arm", "test/multi", "arm");

    let store = Store::open(work.path().join("store")).unwrap();
    let reference = format!("{}/test/multi:multi", registry.addr());
    let image = store.pull(&reference, &NoProgress).await.unwrap();
    assert!(image.index_digest.is_some());
    assert_eq!(image.config.architecture, "amd64");
    assert!(image.config.env.contains(&"MARKER=amd64".to_string()));
    assert!(store.has_blob(image.index_digest.as_deref().unwrap()));

    // By digest, too.
    let by_digest = format!(
        "{}/test/multi@{}",
        registry.addr(),
        image.index_digest.as_deref().unwrap()
    );
    let again = store.pull(&by_digest, &NoProgress).await.unwrap();
    assert_eq!(again.manifest_digest, image.manifest_digest);

    let reference = format!("{}/test/multi:arm", registry.addr());
    let err = store.pull(&reference, &NoProgress).await.unwrap_err();
    assert!(matches!(err, Error::NoPlatform { .. }), "{err:?}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}
