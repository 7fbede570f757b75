//! `WritePath` and `StatPath`: files written into the guest, and guest paths described.
//!
//! A written archive is unpacked on a blocking thread into a staging directory inside the
//! destination (same file system, so the final step is a rename), fed chunk by chunk from the
//! stream: the session's flow control throttles the host to the disk. Only once the whole
//! archive unpacked are its top-level entries renamed into place (directories that already
//! exist are merged into entry by entry), so a failed or interrupted write, a full disk
//! included, leaves no partial file.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aegis_archive::ChunkReader;
use aegis_proto::{FileKind, GuestMessage, PathError, PathErrorKind, PathInfo, Session, StreamId};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::paths::under_root;
use crate::watch::STAGING_PREFIX;

/// How many chunks may wait between the stream and the unpacking thread.
const QUEUED_CHUNKS: usize = 4;
/// The most entries one `StatPath` lists: the answer must fit in one control frame.
pub(crate) const MAX_LISTED: usize = 10_000;

/// Handles `WritePath { stream, path }` (in its own task).
pub(crate) async fn write_path(session: Session, root: PathBuf, stream: StreamId, path: String) {
    let (mut from_host, mut to_host) = session.stream(stream).into_split();
    let (tx, rx) = mpsc::channel::<Option<Bytes>>(QUEUED_CHUNKS);
    let dest = under_root(&root, &path);
    let unpacker = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_archive(ChunkReader::new(rx), &dest, &path))
    };
    let mut received = Ok(());
    loop {
        match from_host.recv().await {
            Ok(Some(chunk)) => {
                // A closed channel means the unpacker failed: its error is the one to report.
                if tx.send(Some(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => {
                let _ = tx.send(None).await;
                break;
            }
            Err(e) => {
                received = Err(e);
                break;
            }
        }
    }
    // Dropping the sender without the end marker tells the unpacker the archive broke off.
    let complete = received.is_ok();
    drop(tx);
    let unpacked = match unpacker.await {
        Ok(r) => r,
        Err(e) => Err(other(format!("the unpacking thread failed: {e}"))),
    };
    let error = match (received, unpacked) {
        (_, Err(e)) => Some(e),
        (Err(e), Ok(())) => Some(other(format!("the archive stream broke off: {e}"))),
        (Ok(()), Ok(())) => None,
    };
    if error.is_some() || !complete {
        // Unblocks a host still sending into a write that already failed.
        to_host.reset().await;
    }
    if let Some(e) = &error {
        tracing::debug!(stream, path, error = %e.message, "WritePath failed");
    }
    let _ = session
        .send(GuestMessage::PathWritten { stream, error })
        .await;
}

fn other(message: String) -> PathError {
    PathError {
        kind: PathErrorKind::Other,
        message,
    }
}

/// The error of an I/O failure on the guest path `what`.
fn io_error(what: &str, e: &io::Error) -> PathError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => PathErrorKind::NotFound,
        io::ErrorKind::NotADirectory => PathErrorKind::NotADirectory,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => PathErrorKind::NoSpace,
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => PathErrorKind::Invalid,
        _ if e.to_string().contains("No space left") => PathErrorKind::NoSpace,
        _ => PathErrorKind::Other,
    };
    PathError {
        kind,
        message: format!("{what}: {e}"),
    }
}

/// Unpacks `archive` into the existing directory `dest` (the guest path `path`) through a
/// staging directory that is always removed.
fn write_archive(archive: impl Read, dest: &Path, path: &str) -> Result<(), PathError> {
    let meta = fs::metadata(dest).map_err(|e| io_error(path, &e))?;
    if !meta.is_dir() {
        return Err(PathError {
            kind: PathErrorKind::NotADirectory,
            message: format!("{path} is not a directory; archives are written into one"),
        });
    }
    let staging = Staging::create(dest).map_err(|e| io_error(path, &e))?;
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    // unpack_in refuses `..` and absolute names and never follows links the archive made.
    for entry in ar.entries().map_err(|e| io_error(path, &e))? {
        let mut entry = entry.map_err(|e| io_error(path, &e))?;
        let name = entry.path().map(|p| p.display().to_string());
        let name = name.unwrap_or_default();
        if !entry
            .unpack_in(&staging.0)
            .map_err(|e| io_error(&format!("{path}/{name}"), &e))?
        {
            return Err(PathError {
                kind: PathErrorKind::Invalid,
                message: format!("archive entry '{name}' escapes {path}; refused"),
            });
        }
    }
    for entry in fs::read_dir(&staging.0).map_err(|e| io_error(path, &e))? {
        let entry = entry.map_err(|e| io_error(path, &e))?;
        let target = dest.join(entry.file_name());
        place(&entry.path(), &target)
            .map_err(|e| io_error(&format!("{path}/{}", entry.file_name().display()), &e))?;
    }
    Ok(())
}

/// Moves `src` to `dst`: a rename, except that a directory landing on an existing directory
/// is merged into it entry by entry.
fn place(src: &Path, dst: &Path) -> io::Result<()> {
    let src_meta = fs::symlink_metadata(src)?;
    if src_meta.is_dir() {
        if let Ok(dst_meta) = fs::symlink_metadata(dst) {
            if dst_meta.is_dir() {
                for entry in fs::read_dir(src)? {
                    let entry = entry?;
                    place(&entry.path(), &dst.join(entry.file_name()))?;
                }
                fs::set_permissions(dst, src_meta.permissions())?;
                return fs::remove_dir(src);
            }
        }
    }
    fs::rename(src, dst)
}

/// A hidden directory inside the destination, removed with whatever is left in it.
struct Staging(PathBuf);

impl Staging {
    fn create(dest: &Path) -> io::Result<Staging> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = dest.join(format!("{STAGING_PREFIX}{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove a write's staging directory");
        }
    }
}

/// Handles `StatPath` (on a blocking thread: directories can be large).
pub(crate) async fn stat_path(session: Session, root: PathBuf, id: u64, path: String, list: bool) {
    let result = tokio::task::spawn_blocking(move || stat(&root, &path, list))
        .await
        .unwrap_or_else(|e| Err(other(format!("the stat thread failed: {e}"))));
    let _ = session.send(GuestMessage::PathStat { id, result }).await;
}

fn stat(root: &Path, path: &str, list: bool) -> Result<PathInfo, PathError> {
    let full = under_root(root, path);
    let name = full
        .file_name()
        .filter(|_| full != root)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mut info = describe(&full, name).map_err(|e| io_error(path, &e))?;
    if list && info.kind == FileKind::Dir {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&full).map_err(|e| io_error(path, &e))? {
            let entry = entry.map_err(|e| io_error(path, &e))?;
            if entries.len() == MAX_LISTED {
                return Err(other(format!(
                    "{path} has more than {MAX_LISTED} entries; read it as an archive instead"
                )));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // An entry removed while listing is simply no longer there.
            match describe(&entry.path(), name) {
                Ok(e) => entries.push(e),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path, &e)),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        info.entries = Some(entries);
    }
    Ok(info)
}

fn describe(full: &Path, name: String) -> io::Result<PathInfo> {
    let meta = fs::symlink_metadata(full)?;
    let kind = meta.file_type();
    let (kind, link) = if kind.is_symlink() {
        let target = fs::read_link(full)?.to_string_lossy().into_owned();
        (FileKind::Symlink, Some(target))
    } else if kind.is_dir() {
        (FileKind::Dir, None)
    } else if kind.is_file() {
        (FileKind::File, None)
    } else {
        (FileKind::Other, None)
    };
    Ok(PathInfo {
        name,
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        link,
        entries: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn writes_land_with_their_modes_and_merge_into_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("d/keep")).unwrap();
        fs::write(root.path().join("d/keep/old"), b"old").unwrap();
        let a = tar_of(|b| {
            file(b, "keep/new", b"new", 0o600);
            file(b, "run.sh", b"#!/bin/sh\n", 0o755);
        });
        write_archive(&a[..], &root.path().join("d"), "/d").unwrap();
        let d = root.path().join("d");
        assert_eq!(fs::read(d.join("keep/old")).unwrap(), b"old");
        assert_eq!(fs::read(d.join("keep/new")).unwrap(), b"new");
        let mode = fs::metadata(d.join("run.sh")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no staging directory left: {names:?}");
    }

    #[test]
    fn a_truncated_archive_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let a = tar_of(|b| file(b, "big", &[7u8; 8192], 0o644));
        let e = write_archive(&a[..2048], root.path(), "/").unwrap_err();
        assert_eq!(e.kind, PathErrorKind::Other, "{e:?}");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_archive_cut_at_an_entry_boundary_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let a = tar_of(|b| file(b, "f", &[1u8; 512], 0o644));
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Some(Bytes::copy_from_slice(&a[..1024])))
            .unwrap();
        drop(tx);
        assert!(write_archive(ChunkReader::new(rx), root.path(), "/").is_err());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_destination_must_be_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let a = tar_of(|b| file(b, "f", b"x", 0o644));
        let e = write_archive(&a[..], &root.path().join("nope"), "/nope").unwrap_err();
        assert_eq!(e.kind, PathErrorKind::NotFound);
        fs::write(root.path().join("file"), b"").unwrap();
        let e = write_archive(&a[..], &root.path().join("file"), "/file").unwrap_err();
        assert_eq!(e.kind, PathErrorKind::NotADirectory);
    }

    #[test]
    fn stat_lists_a_directory_in_name_order() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        fs::write(root.path().join("d/b"), b"12").unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("d/a")).unwrap();
        let info = stat(root.path(), "/d", true).unwrap();
        assert_eq!(info.kind, FileKind::Dir);
        let entries = info.entries.unwrap();
        assert_eq!(entries[0].name, "a");
        assert_eq!(entries[0].link.as_deref(), Some("/etc"));
        assert_eq!((entries[1].kind, entries[1].size), (FileKind::File, 2));
        let e = stat(root.path(), "/missing", false).unwrap_err();
        assert_eq!(e.kind, PathErrorKind::NotFound);
    }
}
