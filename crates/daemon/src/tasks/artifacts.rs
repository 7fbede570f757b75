//! Artifacts: the tar archives a guest sends back for a task's `artifacts` paths, streamed to
//! disk under a size cap.
//!
//! The guest is untrusted. Entries that would land outside the destination (`..`, absolute
//! paths, links pointing out) are refused, and so are device nodes and fifos; setuid, setgid
//! and sticky bits are dropped, and the owner can always read and remove what arrived. Sparse
//! files stay sparse: the cap counts the bytes the guest sent, which bound the host disk used.
//!
//! Everything lands in a staging directory that is renamed into place only once every
//! artifact arrived whole, so a failed, over-cap, timed-out or cancelled copy leaves nothing.

use std::future::Future;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aegis_archive::{link_stays_inside, ChunkReader};
use aegis_proto::{GuestMessage, HostMessage, Session};
use bytes::Bytes;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact archive entry '{0}' escapes the artifacts directory; refused")]
    Escape(String),
    #[error("artifact archive entry '{0}' is a device node or fifo; refused")]
    Special(String),
    #[error(
        "the artifacts exceed this task's cap of {cap} bytes; nothing was kept (copy less, or \
         raise the task's max_artifact_bytes up to the daemon's cap)"
    )]
    TooLarge { cap: u64 },
    #[error("the guest failed to send {path}: {message}")]
    Guest { path: String, message: String },
    #[error("the artifact stream from the guest broke off: {0}")]
    Interrupted(String),
    #[error("cannot unpack artifacts into {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// How many chunks may wait between the guest stream and the unpacking thread: the guest is
/// throttled by the disk rather than queued in memory.
const QUEUED_CHUNKS: usize = 4;

/// Why [`collect`] did not complete.
#[derive(Debug)]
pub enum CollectError<S> {
    /// The `stop` future resolved first, with this.
    Stopped(S),
    /// Copying `path` (none: the staging around it) failed.
    Failed {
        path: Option<String>,
        error: ArtifactError,
    },
}

/// Copies every path of `paths` from the guest into `dest`, `cap` bytes of archive at most in
/// all, unless `stop` resolves first. Unless it succeeds, nothing of `dest` is left when it
/// returns.
pub async fn collect<F: Future + Unpin>(
    session: &Session,
    events: &mut mpsc::Receiver<GuestMessage>,
    paths: &[String],
    dest: &Path,
    cap: u64,
    stop: &mut F,
) -> Result<(), CollectError<F::Output>> {
    let failed = |path: Option<&String>| {
        let path = path.cloned();
        move |error| CollectError::Failed { path, error }
    };
    let staging = Staging::create(dest).map_err(failed(None))?;
    let mut left = cap;
    for path in paths {
        let guest = (session, &mut *events);
        match fetch(guest, path, &staging, cap, &mut left, &mut *stop).await {
            Ok(()) => {}
            Err(Fetch::Stopped(s)) => return Err(CollectError::Stopped(s)),
            Err(Fetch::Failed(e)) => return Err(failed(Some(path))(e)),
        }
    }
    staging.commit(dest).map_err(failed(None))
}

enum Fetch<S> {
    Stopped(S),
    Failed(ArtifactError),
}

/// Asks the guest for `path` as a tar stream and unpacks it into `staging` on a blocking
/// thread, taking each received byte off `left`. The thread has ended when this returns.
async fn fetch<F: Future + Unpin>(
    (session, events): (&Session, &mut mpsc::Receiver<GuestMessage>),
    path: &str,
    staging: &Arc<Staging>,
    cap: u64,
    left: &mut u64,
    stop: &mut F,
) -> Result<(), Fetch<F::Output>> {
    let stream = session.open_stream();
    let id = stream.id();
    let (mut rx, _tx) = stream.into_split();
    session
        .send(HostMessage::ReadPath {
            stream: id,
            path: path.to_string(),
        })
        .await
        .map_err(|e| Fetch::Failed(ArtifactError::Interrupted(e.to_string())))?;
    let (chunks, chunk_rx) = mpsc::channel::<Option<Bytes>>(QUEUED_CHUNKS);
    let failed = Arc::new(AtomicBool::new(false));
    let unpacker = {
        // The thread holds the staging directory: it is removed only once nobody writes to it.
        let staging = staging.clone();
        let failed = failed.clone();
        tokio::task::spawn_blocking(move || {
            let r = unpack(ChunkReader::new(chunk_rx), &staging.dir);
            failed.store(r.is_err(), Ordering::Release);
            r
        })
    };
    let receive = async {
        let mut forward = true;
        while let Some(chunk) = rx
            .recv()
            .await
            .map_err(|e| ArtifactError::Interrupted(e.to_string()))?
        {
            *left = left
                .checked_sub(chunk.len() as u64)
                .ok_or(ArtifactError::TooLarge { cap })?;
            if forward && chunks.send(Some(chunk)).await.is_err() {
                // A failed unpacker's own error is the one to report. One that succeeded
                // stopped at the archive's end marker: the rest is padding, read and counted
                // so that the guest can report the end of its send.
                if failed.load(Ordering::Acquire) {
                    return Err(ArtifactError::Interrupted("unpacking stopped".into()));
                }
                forward = false;
            }
        }
        let _ = chunks.send(None).await;
        Ok(())
    };
    let reply = async {
        loop {
            match events.recv().await {
                Some(GuestMessage::PathSent { stream, error }) if stream == id => {
                    return match error {
                        None => Ok(()),
                        Some(message) => Err(ArtifactError::Guest {
                            path: path.to_string(),
                            message,
                        }),
                    };
                }
                Some(_) => continue,
                None => {
                    return Err(ArtifactError::Interrupted(
                        "the guest channel closed".into(),
                    ))
                }
            }
        }
    };
    let streamed = tokio::select! {
        r = async { tokio::try_join!(receive, reply) } => r.map(|_| ()).map_err(Fetch::Failed),
        s = stop => Err(Fetch::Stopped(s)),
    };
    // Closing the channel ends a thread still waiting for bytes.
    drop(chunks);
    let unpacked = unpacker.await.map_err(|e| {
        Fetch::Failed(ArtifactError::Interrupted(format!(
            "the unpacking thread failed: {e}"
        )))
    })?;
    match (streamed, unpacked) {
        (Err(Fetch::Failed(ArtifactError::Interrupted(_))), Err(e)) => Err(Fetch::Failed(e)),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(Fetch::Failed(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The directory artifacts gather in until all arrived. Removed when the last holder lets go
/// of it, unless committed.
struct Staging {
    dir: PathBuf,
    committed: AtomicBool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Arc<Staging>, ArtifactError> {
        let dir = dest.with_extension("partial");
        let io = |source| ArtifactError::Io {
            dir: dir.display().to_string(),
            source,
        };
        // Left over by a daemon killed mid-copy.
        remove_dir_if_present(&dir).map_err(io)?;
        std::fs::create_dir_all(&dir).map_err(io)?;
        Ok(Arc::new(Staging {
            dir,
            committed: AtomicBool::new(false),
        }))
    }

    fn commit(&self, dest: &Path) -> Result<(), ArtifactError> {
        let io = |source| ArtifactError::Io {
            dir: dest.display().to_string(),
            source,
        };
        remove_dir_if_present(dest).map_err(io)?;
        std::fs::rename(&self.dir, dest).map_err(io)?;
        self.committed.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed.load(Ordering::Acquire) {
            if let Err(e) = remove_dir_if_present(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove partial artifacts");
            }
        }
    }
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn is_contained(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Unpacks the tar stream `archive` into `dest`, refusing anything that could escape it or
/// that is not a plain file, directory or link.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<(), ArtifactError> {
    let io = |source| ArtifactError::Io {
        dir: dest.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(io)?;
    let mut ar = tar::Archive::new(archive);
    // Not preserving permissions keeps only the rwx bits: setuid, setgid and sticky never
    // reach the host. Owners and extended attributes are not restored either (the defaults).
    ar.set_preserve_permissions(false);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let name = path.display().to_string();
        if !is_contained(&path) {
            return Err(ArtifactError::Escape(name));
        }
        use tar::EntryType::*;
        let kind = entry.header().entry_type();
        match kind {
            Symlink | Link => {
                let target = entry.link_name().map_err(io)?.unwrap_or_default();
                if !link_stays_inside(&path, &target, kind == Link) {
                    return Err(ArtifactError::Escape(name));
                }
            }
            Char | Block | Fifo => return Err(ArtifactError::Special(name)),
            _ => {}
        }
        // unpack_in re-checks containment against symlinks created by earlier entries.
        if !entry.unpack_in(dest).map_err(io)? {
            return Err(ArtifactError::Escape(name));
        }
        if matches!(kind, Regular | Continuous | Directory) {
            owner_can_manage(&dest.join(&path), kind == Directory).map_err(io)?;
        }
    }
    Ok(())
}

/// Gives the owner read and write (and, on directories, search) rights: a guest's read-only
/// directory must not stop the rest of its archive from unpacking, nor the task's removal.
fn owner_can_manage(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let owner = if dir { 0o700 } else { 0o600 };
    let mode = (meta.permissions().mode() & 0o777) | owner;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name to build hostile archives.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn unpacks_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| file(b, "out/result.txt", b"42\n"));
        unpack(&a[..], dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/result.txt")).unwrap(),
            b"42\n"
        );
    }

    #[test]
    fn refuses_parent_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| file(b, "../../etc/passwd", b"x"));
        assert!(matches!(
            unpack(&a[..], &dir.path().join("d")),
            Err(ArtifactError::Escape(_))
        ));
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn refuses_escaping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        for target in ["/etc", "../../outside", "a/../../.."] {
            let a = archive(|b| link(b, "evil", target));
            assert!(
                matches!(unpack(&a[..], dir.path()), Err(ArtifactError::Escape(_))),
                "{target}"
            );
        }
        let ok = archive(|b| link(b, "sub/ok", "../sibling"));
        unpack(&ok[..], dir.path()).unwrap();
    }

    fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn special_bits_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| {
            entry(b, "tmp", tar::EntryType::Directory, 0o1777);
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o6755);
            h.set_path("tmp/su").unwrap();
            h.set_cksum();
            b.append(&h, &b"#!"[..]).unwrap();
        });
        unpack(&a[..], dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("tmp/su")), 0o755);
        assert_eq!(mode(&dir.path().join("tmp")), 0o777);
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        use tar::EntryType::*;
        for kind in [Char, Block, Fifo] {
            let dir = tempfile::tempdir().unwrap();
            let a = archive(|b| entry(b, "dev", kind, 0o666));
            let e = unpack(&a[..], dir.path()).unwrap_err();
            assert!(matches!(e, ArtifactError::Special(_)), "{kind:?}: {e}");
            assert!(!dir.path().join("dev").exists(), "{kind:?}");
        }
    }

    #[test]
    fn read_only_directories_still_unpack_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| {
            entry(b, "ro", tar::EntryType::Directory, 0o500);
            file(b, "ro/f", b"x");
        });
        unpack(&a[..], dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("ro")), 0o700);
        std::fs::remove_dir_all(dir.path().join("ro")).unwrap();
    }

    #[test]
    fn hard_links_resolve_from_the_archive_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        let a = archive(|b| b.append_link(&mut h, "a/b/c", "../x").unwrap());
        assert!(matches!(
            unpack(&a[..], dir.path()),
            Err(ArtifactError::Escape(_))
        ));
    }

    #[test]
    fn an_abandoned_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(|b| file(b, "f", &[7u8; 4096]));
        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Some(Bytes::copy_from_slice(&a[..1024])))
            .unwrap();
        drop(tx);
        assert!(unpack(ChunkReader::new(rx), dir.path()).is_err());
    }
}
