//! Tests of the layer unpacker: traversal, symlink and hard-link escapes, whiteouts, modes.

use super::*;
use std::os::unix::fs::MetadataExt;

/// Builds a tar with raw entry names (the tar crate's builder refuses `..`, which is what
/// these tests need to produce).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, path: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            let ln = &mut h.as_old_mut().linkname;
            ln[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    fn file(mut self, path: &str, data: &str) -> Self {
        self.entry(path, EntryType::Regular, 0o644, "", data.as_bytes());
        self
    }
    fn dir(mut self, path: &str) -> Self {
        self.entry(path, EntryType::Directory, 0o755, "", b"");
        self
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Symlink, 0o777, target, b"");
        self
    }
    fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Link, 0o644, target, b"");
        self
    }
    fn apply(self, root: &Path) -> Result<()> {
        self.apply_with(root, Whiteouts::Apply)
    }
    fn apply_with(self, root: &Path, whiteouts: Whiteouts) -> Result<()> {
        let bytes = self.0.into_inner().unwrap();
        unpack_layer(
            &bytes[..],
            root,
            "test-layer",
            &UnpackOptions {
                preserve_ownership: false,
                whiteouts,
                ..UnpackOptions::default()
            },
        )
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    (t, root, outside)
}

fn assert_unsafe(r: Result<()>, what: &str) {
    match r {
        Err(Error::UnsafeEntry { reason, .. }) => assert!(reason.contains(what), "{reason}"),
        other => panic!("expected an unsafe-entry error mentioning {what:?}, got {other:?}"),
    }
}

#[test]
fn sanitize_rejects_dotdot_and_absolute() {
    assert_eq!(sanitize(Path::new("./a/./b")).unwrap(), ["a", "b"]);
    assert!(sanitize(Path::new("a/../b")).is_err());
    assert!(sanitize(Path::new("../../etc/passwd")).is_err());
    assert!(sanitize(Path::new("/etc/passwd")).is_err());
}

#[test]
fn dotdot_entry_is_refused_and_nothing_written_outside() {
    let (t, root, _) = setup();
    assert_unsafe(
        Layer::new().file("../../etc/passwd", "pwned").apply(&root),
        "`..`",
    );
    assert_unsafe(Layer::new().file("a/../../x", "pwned").apply(&root), "`..`");
    assert!(!t.path().join("etc").exists());
    assert!(!t.path().join("x").exists());
}

#[test]
fn absolute_entry_is_refused() {
    let (_t, root, outside) = setup();
    let target = format!("{}/abs", outside.display());
    assert_unsafe(Layer::new().file(&target, "pwned").apply(&root), "absolute");
    assert!(!outside.join("abs").exists());
}

#[test]
fn write_through_relative_symlink_escaping_root_is_refused() {
    let (_t, root, outside) = setup();
    let r = Layer::new()
        .symlink("escape", "../outside")
        .file("escape/pwned", "x")
        .apply(&root);
    assert_unsafe(r, "outside the image root");
    assert!(!outside.join("pwned").exists());
    // Also when the escape happens in a later layer, and deeper in the link.
    Layer::new()
        .dir("d")
        .symlink("d/up", "../../..")
        .apply(&root)
        .unwrap();
    assert_unsafe(
        Layer::new().file("d/up/outside/pwned2", "x").apply(&root),
        "outside the image root",
    );
    assert!(!outside.join("pwned2").exists());
}

#[test]
fn write_through_absolute_symlink_stays_inside_root() {
    let (_t, root, outside) = setup();
    let abs = outside.display().to_string();
    Layer::new()
        .symlink("abs", &abs)
        .file("abs/file", "contained")
        .apply(&root)
        .unwrap();
    assert!(!outside.join("file").exists(), "wrote through to the host");
    let inside = root.join(abs.trim_start_matches('/')).join("file");
    assert_eq!(fs::read_to_string(inside).unwrap(), "contained");
    // The usual /var/run -> /run layout works.
    Layer::new()
        .dir("run")
        .dir("var")
        .symlink("var/run", "/run")
        .file("var/run/pid", "1")
        .apply(&root)
        .unwrap();
    assert_eq!(fs::read_to_string(root.join("run/pid")).unwrap(), "1");
}

#[test]
fn existing_symlink_at_final_component_is_replaced_not_followed() {
    let (_t, root, outside) = setup();
    fs::write(outside.join("victim"), "original").unwrap();
    let victim = outside.join("victim").display().to_string();
    Layer::new().symlink("f", &victim).apply(&root).unwrap();
    Layer::new().file("f", "new").apply(&root).unwrap();
    assert_eq!(
        fs::read_to_string(outside.join("victim")).unwrap(),
        "original"
    );
    assert_eq!(fs::read_to_string(root.join("f")).unwrap(), "new");
    assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
}

#[test]
fn hard_links_must_stay_inside_root() {
    let (_t, root, outside) = setup();
    fs::write(outside.join("secret"), "s").unwrap();
    assert_unsafe(
        Layer::new().hardlink("h", "../outside/secret").apply(&root),
        "`..`",
    );
    let abs = outside.join("secret").display().to_string();
    assert_unsafe(Layer::new().hardlink("h", &abs).apply(&root), "absolute");
    assert_unsafe(
        Layer::new()
            .symlink("up", "..")
            .hardlink("h", "up/outside/secret")
            .apply(&root),
        "outside the image root",
    );
    assert!(!root.join("h").exists());
    // A hard link within the image works and shares the inode.
    Layer::new()
        .file("a", "data")
        .hardlink("b", "a")
        .apply(&root)
        .unwrap();
    let (a, b) = (
        fs::metadata(root.join("a")).unwrap(),
        fs::metadata(root.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let (_t, root, _) = setup();
    Layer::new()
        .dir("etc")
        .file("etc/keep", "k")
        .file("etc/gone", "g")
        .dir("etc/gonedir")
        .file("etc/gonedir/x", "x")
        .dir("o")
        .file("o/old", "old")
        .dir("o/sub")
        .file("o/sub/old2", "old")
        .apply(&root)
        .unwrap();
    Layer::new()
        .file("etc/.wh.gone", "")
        .file("etc/.wh.gonedir", "")
        .file("etc/.wh.never-existed", "")
        .dir("o")
        .file("o/new", "new")
        .dir("o/sub")
        .file("o/sub/new2", "new")
        // The opaque marker after entries of the same layer must not hide them.
        .file("o/.wh..wh..opq", "")
        .apply(&root)
        .unwrap();
    assert!(root.join("etc/keep").exists());
    assert!(!root.join("etc/gone").exists());
    assert!(!root.join("etc/gonedir").exists());
    assert!(!root.join("etc/.wh.gone").exists());
    assert!(!root.join("o/old").exists());
    assert!(!root.join("o/sub/old2").exists());
    assert!(root.join("o/new").exists());
    assert!(root.join("o/sub/new2").exists());
    assert!(!root.join("o/.wh..wh..opq").exists());
    assert_unsafe(
        Layer::new().file("etc/.wh...", "").apply(&root),
        "malformed",
    );
}

#[test]
fn overlay_whiteouts_become_devices_and_xattrs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: overlayfs whiteouts (0/0 devices, trusted.* xattrs) need root");
        return;
    }
    let (_t, root, _) = setup();
    Layer::new()
        .file("etc/.wh.gone", "")
        .dir("o")
        .file("o/.wh..wh..opq", "")
        .file("o/new", "new")
        .apply_with(&root, Whiteouts::Overlay)
        .unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::symlink_metadata(root.join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!root.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr::get(root.join("o"), OVERLAY_OPAQUE_XATTR).unwrap(),
        Some(b"y".to_vec())
    );
    assert!(root.join("o/new").exists());
    assert!(!root.join("o/.wh..wh..opq").exists());
    // A whiteout cannot be used to escape the root either.
    assert_unsafe(
        Layer::new()
            .file("../.wh.x", "")
            .apply_with(&root, Whiteouts::Overlay),
        "..",
    );
}

#[test]
fn modes_are_applied() {
    let (_t, root, _) = setup();
    let mut l = Layer::new();
    l.entry("ro", EntryType::Directory, 0o555, "", b"");
    l.entry("ro/exe", EntryType::Regular, 0o4755, "", b"#!/bin/sh\n");
    l.apply(&root).unwrap();
    assert_eq!(
        fs::metadata(root.join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(
        fs::metadata(root.join("ro/exe")).unwrap().mode() & 0o7777,
        0o4755
    );
}
