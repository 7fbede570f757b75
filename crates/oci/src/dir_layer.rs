//! A layer built from a host directory (an app release's `--from DIR`).
//!
//! The layer is an uncompressed tar that depends only on the directory's contents, so the same
//! directory always gives the same digest: entries are sorted by path (bytewise), owner and
//! group are 0 with no user or group names, permission bits and modification times (whole
//! seconds) are kept, symlinks are stored as symlinks with their target verbatim (never
//! followed, so nothing outside the directory is read), and the directory's contents appear
//! under `dest` in the guest. Anything other than a regular file, a directory or a symlink
//! (devices, FIFOs, sockets) is refused, as are names OCI reserves for whiteouts (`.wh.*`).
//!
//! The tar is streamed into `tmp/` while being hashed, synced, and renamed to
//! `blobs/sha256/<hex>`, exactly like a pulled blob: a failed import leaves nothing behind.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{LayerRecord, Store};

/// Media type of the layers built here.
pub const DIR_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Mode and mtime of the directories `dest` implies above the imported directory
/// (e.g. `opt/` for `/opt/app`).
const PARENT_DIR_MODE: u32 = 0o755;

impl Store {
    /// Builds a deterministic layer from the contents of `dir`, placed under the absolute guest
    /// path `dest` (e.g. `/app`), and stores it as a blob. Returns its record.
    pub fn import_dir_layer(&self, dir: &Path, dest: &str) -> Result<LayerRecord> {
        let dest_parts = dest_components(dest)?;
        let meta = fs::metadata(dir).map_err(|e| Error::SourceDir {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(Error::SourceDir {
                dir: dir.to_path_buf(),
                detail: "it is not a directory".into(),
            });
        }
        let mut entries = Vec::new();
        collect(dir, &PathBuf::new(), &mut entries)?;

        // A removal must not delete blobs while we decide whether ours is already stored.
        let _lock = self.lock(false)?;
        let tmp_dir = self.root().join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("dir-layer-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| Error::io("create a temporary file in", &tmp_dir, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io("open", tmp.path(), e))?;
        let writer = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            size: 0,
        };
        let mut builder = tar::Builder::new(writer);
        let io_err = |e: io::Error| Error::io("write", tmp.path(), e);

        // The directories `dest` names, outermost first; the last one is `dir` itself.
        let mut prefix = PathBuf::new();
        for (i, part) in dest_parts.iter().enumerate() {
            prefix.push(part);
            let (mode, mtime) = if i + 1 == dest_parts.len() {
                (meta.mode() & 0o7777, mtime_of(&meta))
            } else {
                (PARENT_DIR_MODE, 0)
            };
            let mut h = header(tar::EntryType::Directory, mode, mtime, 0);
            builder
                .append_data(&mut h, &prefix, io::empty())
                .map_err(io_err)?;
        }
        for entry in &entries {
            let source = dir.join(&entry.rel);
            let path = prefix.join(&entry.rel);
            match entry.kind {
                Kind::Dir => {
                    let mut h = header(tar::EntryType::Directory, entry.mode, entry.mtime, 0);
                    builder
                        .append_data(&mut h, &path, io::empty())
                        .map_err(io_err)?;
                }
                Kind::Symlink => {
                    let target = fs::read_link(&source)
                        .map_err(|e| Error::io("read symlink", &source, e))?;
                    let mut h = header(tar::EntryType::Symlink, entry.mode, entry.mtime, 0);
                    builder
                        .append_link(&mut h, &path, &target)
                        .map_err(io_err)?;
                }
                Kind::File => {
                    // O_NOFOLLOW: a file swapped for a symlink since the walk is not followed.
                    let file = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&source)
                        .map_err(|e| Error::io("open", &source, e))?;
                    let now = file.metadata().map_err(|e| Error::io("stat", &source, e))?;
                    if !now.is_file() || now.len() != entry.size {
                        return Err(changed(&source));
                    }
                    let mut h =
                        header(tar::EntryType::Regular, entry.mode, entry.mtime, entry.size);
                    let mut reader = CountingReader {
                        inner: file.take(entry.size),
                        count: 0,
                    };
                    builder
                        .append_data(&mut h, &path, &mut reader)
                        .map_err(|e| Error::io("read", &source, e))?;
                    if reader.count != entry.size {
                        return Err(changed(&source));
                    }
                }
            }
        }
        let writer = builder.into_inner().map_err(io_err)?;
        let HashingWriter {
            inner,
            hasher,
            size,
        } = writer;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io("write", tmp.path(), e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("sync", tmp.path(), e))?;
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        let blob = self.blob_path(&digest)?;
        if !blob.is_file() {
            tmp.persist(&blob)
                .map_err(|e| Error::io("rename into place", &blob, e.error))?;
        }
        Ok(LayerRecord {
            digest,
            media_type: DIR_LAYER_MEDIA_TYPE.to_string(),
            size,
        })
    }
}

/// The normal components of an absolute guest path; refuses relative paths, `..` and `/`.
fn dest_components(dest: &str) -> Result<Vec<OsString>> {
    let bad = |reason: &str| Error::BadDestination {
        dest: dest.to_string(),
        reason: reason.to_string(),
    };
    let path = Path::new(dest);
    if !path.is_absolute() {
        return Err(bad("it must be an absolute path"));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => return Err(bad("it must not contain '..'")),
            Component::Prefix(_) => return Err(bad("it is not a guest path")),
        }
    }
    if parts.is_empty() {
        return Err(bad(
            "the guest's root directory cannot be replaced; name a directory such as /app",
        ));
    }
    Ok(parts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

struct Entry {
    /// Relative to the imported directory.
    rel: PathBuf,
    kind: Kind,
    mode: u32,
    mtime: u64,
    size: u64,
}

/// Walks `dir` without following symlinks, in sorted order (a directory before its contents).
fn collect(root: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .map_err(|e| Error::io("read directory", &dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io("read directory", &dir, e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        if name.as_bytes().starts_with(b".wh.") {
            return Err(Error::UnsupportedFile {
                path,
                kind: "name reserved for OCI whiteouts (.wh.*)".into(),
            });
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            return Err(Error::UnsupportedFile {
                path,
                kind: describe(&ft).into(),
            });
        };
        out.push(Entry {
            rel: rel.clone(),
            kind,
            mode: if kind == Kind::Symlink {
                0o777
            } else {
                meta.mode() & 0o7777
            },
            mtime: mtime_of(&meta),
            size: if kind == Kind::File { meta.len() } else { 0 },
        });
        if kind == Kind::Dir {
            collect(root, &rel, out)?;
        }
    }
    Ok(())
}

fn describe(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn mtime_of(meta: &fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

fn changed(path: &Path) -> Error {
    Error::SourceDir {
        dir: path.to_path_buf(),
        detail: "the file changed while the layer was being built; publish again once it is \
                 no longer being written"
            .into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn bytes_of(p: &Path) -> Vec<u8> {
        p.as_os_str().as_bytes().to_vec()
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("www/cgi-bin")).unwrap();
        fs::write(p.join("www/index.html"), "release 1\n").unwrap();
        fs::write(p.join("www/cgi-bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(p.join("www/cgi-bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(p.join("b"), "b").unwrap();
        fs::write(p.join("a"), "a").unwrap();
        symlink("/etc/passwd", p.join("passwd")).unwrap();
        symlink("../../../../etc", p.join("www/escape")).unwrap();
        d
    }

    fn entries(store: &Store, layer: &LayerRecord) -> Vec<(Vec<u8>, tar::EntryType, u32, u64)> {
        let f = File::open(store.blob_path(&layer.digest).unwrap()).unwrap();
        let mut a = tar::Archive::new(f);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!(h.uid().unwrap(), 0);
                assert_eq!(h.gid().unwrap(), 0);
                (
                    bytes_of(&e.path().unwrap()),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn same_directory_same_digest() {
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let d = tree();
        let one = store.import_dir_layer(d.path(), "/app").unwrap();
        let two = store.import_dir_layer(d.path(), "/app").unwrap();
        assert_eq!(one, two);
        assert_eq!(one.media_type, DIR_LAYER_MEDIA_TYPE);
        let blob = store.blob_path(&one.digest).unwrap();
        let bytes = fs::read(&blob).unwrap();
        assert_eq!(bytes.len() as u64, one.size);
        assert_eq!(
            format!("sha256:{}", hex(&Sha256::digest(&bytes))),
            one.digest
        );
        // Nothing left in tmp/.
        assert_eq!(fs::read_dir(s.path().join("tmp")).unwrap().count(), 0);

        // Sorted, under dest, modes kept; a changed file gives another digest.
        let e = entries(&store, &one);
        let names: Vec<String> = e
            .iter()
            .map(|(p, ..)| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "app",
                "app/a",
                "app/b",
                "app/passwd",
                "app/www",
                "app/www/cgi-bin",
                "app/www/cgi-bin/run",
                "app/www/escape",
                "app/www/index.html"
            ]
        );
        let run = e.iter().find(|x| x.0 == b"app/www/cgi-bin/run").unwrap();
        assert_eq!(run.2 & 0o777, 0o755);
        fs::write(d.path().join("www/index.html"), "release 2\n").unwrap();
        let three = store.import_dir_layer(d.path(), "/app").unwrap();
        assert_ne!(three.digest, one.digest);
        let other_dest = store.import_dir_layer(d.path(), "/srv/site").unwrap();
        let e = entries(&store, &other_dest);
        assert_eq!(e[0].0, b"srv");
        assert_eq!(e[1].0, b"srv/site");
    }

    #[test]
    fn symlinks_are_stored_not_followed() {
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let d = tree();
        let layer = store.import_dir_layer(d.path(), "/app").unwrap();
        let f = File::open(store.blob_path(&layer.digest).unwrap()).unwrap();
        let mut a = tar::Archive::new(f);
        let mut seen = 0;
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let path = bytes_of(&e.path().unwrap());
            if path == b"app/passwd" || path == b"app/www/escape" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(e.header().size().unwrap(), 0, "link content never read");
                seen += 1;
            }
        }
        assert_eq!(seen, 2);
        // A symlinked directory is not descended into either.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), d.path().join("out")).unwrap();
        let layer = store.import_dir_layer(d.path(), "/app").unwrap();
        assert!(entries(&store, &layer)
            .iter()
            .all(|(p, ..)| !p.ends_with(b"secret")));
    }

    #[test]
    fn refuses_special_files_bad_sources_and_destinations() {
        let s = tempfile::tempdir().unwrap();
        let store = Store::open(s.path()).unwrap();
        let d = tree();
        let fifo = d.path().join("www/pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = store.import_dir_layer(d.path(), "/app").unwrap_err();
        assert!(matches!(e, Error::UnsupportedFile { .. }), "{e}");
        assert!(
            e.to_string().contains("FIFO") && e.to_string().contains("pipe"),
            "{e}"
        );
        fs::remove_file(&fifo).unwrap();
        fs::write(d.path().join(".wh.x"), "").unwrap();
        let e = store.import_dir_layer(d.path(), "/app").unwrap_err();
        assert!(e.to_string().contains("whiteout"), "{e}");
        fs::remove_file(d.path().join(".wh.x")).unwrap();

        let e = store
            .import_dir_layer(&d.path().join("missing"), "/app")
            .unwrap_err();
        assert!(matches!(e, Error::SourceDir { .. }), "{e}");
        let e = store
            .import_dir_layer(&d.path().join("a"), "/app")
            .unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        for dest in ["app", "/", "/a/../b"] {
            let e = store.import_dir_layer(d.path(), dest).unwrap_err();
            assert!(matches!(e, Error::BadDestination { .. }), "{dest}: {e}");
        }
        // None of the failures stored anything.
        assert_eq!(
            fs::read_dir(s.path().join("blobs/sha256")).unwrap().count(),
            0
        );
        assert_eq!(fs::read_dir(s.path().join("tmp")).unwrap().count(), 0);
    }
}
