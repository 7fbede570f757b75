//! The store's size limits, checked while bytes stream: an oversized blob and a decompression
//! bomb are stopped, and nothing of them is left behind.

mod common;

use std::fs;
use std::io::{Read, Write};

use aegis_oci::{Error, LayerRecord, Limits, NoProgress, Store, UnpackOptions};
use common::{sha256, FakeRegistry, Reply, TestImage};

/// `n` bytes that gzip cannot shrink, so that compressed sizes are predictable.
fn incompressible(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn open_registry(image: TestImage, no_length: bool) -> FakeRegistry {
    FakeRegistry::start(move |req, _| {
        if req.path == "/v2/" {
            return Reply::ok(b"{}".to_vec());
        }
        let mut reply = image.serve(&req.path).unwrap_or(Reply::status(404));
        reply.no_length = no_length;
        reply
    })
}

fn assert_nothing_kept(store: &Store, layer: &str) {
    assert!(!store.has_blob(layer), "the oversized blob was stored");
    assert!(
        store.list().unwrap().is_empty(),
        "an image record was written"
    );
    let leftovers: Vec<_> = fs::read_dir(store.root().join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "partial download left: {leftovers:?}");
}

#[tokio::test]
async fn blob_larger_than_its_descriptor_is_cut_off_mid_stream() {
    // The layer is ~1 MiB; the manifest says 64 KiB. No Content-Length: the client only finds
    // out by reading, so it must stop at 64 KiB, not at the end.
    let layer = common::layer_tar_gz(&incompressible(1 << 20));
    let image = TestImage::with_layer(layer, Some(64 << 10));
    let digest = image.layer_digest.clone();
    let registry = open_registry(image, true);
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let err = store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap_err();
    match &err {
        Error::BlobOverDeclared {
            declared,
            digest: d,
            ..
        } => assert_eq!((*declared, d.as_str()), (64 << 10, digest.as_str())),
        other => panic!("expected BlobOverDeclared, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("65536 bytes the manifest declares"),
        "{err}"
    );
    assert_nothing_kept(&store, &digest);

    // With a Content-Length the lie is caught before the body is read.
    let layer = common::layer_tar_gz(&incompressible(1 << 20));
    let image = TestImage::with_layer(layer, Some(64 << 10));
    let registry = open_registry(image, false);
    let err = store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BlobOverDeclared { .. }), "{err:?}");
}

#[tokio::test]
async fn blob_over_the_size_limit_is_refused_before_its_download() {
    let image = TestImage::with_layer(common::layer_tar_gz(&incompressible(256 << 10)), None);
    let digest = image.layer_digest.clone();
    let registry = open_registry(image, true);
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap().with_limits(Limits {
        max_blob_bytes: 128 << 10,
        ..Limits::default()
    });
    let err = store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BlobOverLimit { limit, .. } if limit == 128 << 10),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("128 KiB") && msg.contains("max_blob_bytes"),
        "{msg}"
    );
    assert_nothing_kept(&store, &digest);
    let fetched: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .collect();
    assert!(
        fetched.is_empty(),
        "blobs were downloaded anyway: {fetched:?}"
    );

    // Raised, the same image pulls.
    let store = store.with_limits(Limits::default());
    store
        .pull(&format!("{}/test/img:v1", registry.addr), &NoProgress)
        .await
        .unwrap();
    assert!(store.has_blob(&digest));
}

/// A gzip layer of one file of `size` zero bytes, stored in `store`.
fn stored_bomb(store: &Store, size: u64) -> LayerRecord {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "zeros", std::io::repeat(0).take(size))
            .unwrap();
        b.finish().unwrap();
    }
    let blob = gz.finish().unwrap();
    let digest = sha256(&blob);
    fs::File::create(store.blob_path(&digest).unwrap())
        .unwrap()
        .write_all(&blob)
        .unwrap();
    LayerRecord {
        digest,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        size: blob.len() as u64,
    }
}

#[test]
fn gzip_bomb_is_stopped_at_the_unpacked_layer_cap() {
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store"))
        .unwrap()
        .with_limits(Limits {
            max_layer_unpacked_bytes: 1 << 20,
            ..Limits::default()
        });
    let bomb = stored_bomb(&store, 64 << 20);
    assert!(bomb.size < 128 << 10, "the bomb is {} bytes", bomb.size);

    // Into a directory the store creates: removed on failure.
    let dest = work.path().join("tree");
    let err = store
        .unpack_layer_to(&bomb, &dest, &UnpackOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::LayerOverLimit { limit, .. } if limit == 1 << 20),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("1 MiB") && msg.contains("max_layer_unpacked_bytes"),
        "{msg}"
    );
    assert!(!dest.exists(), "the partial tree was left");

    // Into a directory that already exists: the partly written file is removed.
    let existing = work.path().join("existing");
    fs::create_dir(&existing).unwrap();
    let err = store
        .unpack_layer_to(&bomb, &existing, &UnpackOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::LayerOverLimit { .. }), "{err:?}");
    assert!(
        !existing.join("zeros").exists(),
        "the partial file was left"
    );

    // The cap, not the archive, stopped it: raised, the same layer unpacks.
    let store = store.with_limits(Limits {
        max_layer_unpacked_bytes: 128 << 20,
        ..Limits::default()
    });
    store
        .unpack_layer_to(&bomb, &dest, &UnpackOptions::default())
        .unwrap();
    assert_eq!(fs::metadata(dest.join("zeros")).unwrap().len(), 64 << 20);
}
