//! `ReadPath`: a file or directory sent as a tar archive.
//!
//! The archive is built on a blocking thread (file system walks block) and handed to the
//! async side in chunks through a bounded channel, so a slow host throttles the walk instead
//! of the archive piling up in memory. Entries are named from the last component of the
//! requested path (`/srv/app` -> `app/...`; `/` -> `./...`). Symlinks are archived as links
//! and never followed, so nothing outside the tree is read; modes, owners and mtimes are kept.
//! Sockets cannot be archived and are skipped; device nodes and fifos are archived as such
//! (what the host does with them is the host's decision).

use std::io;
use std::path::{Path, PathBuf};

use aegis_archive::ChunkWriter;
use aegis_proto::{GuestMessage, Session, StreamId};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::paths::{archive_name, under_root};

/// How many chunks may wait between the walk and the session.
const QUEUED_CHUNKS: usize = 4;

#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error("the host stopped reading the archive")]
    Aborted,
}

/// Handles `ReadPath { stream, path }` (in its own task).
pub(crate) async fn read_path(session: Session, root: PathBuf, stream: StreamId, path: String) {
    let (_from_host, mut to_host) = session.stream(stream).into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
    let builder = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || build(&root, &path, ChunkWriter::new(tx)))
    };
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = to_host.send(chunk).await {
            tracing::debug!(stream, error = %e, "archive stream gone");
            sent = Err(ArchiveError::Aborted);
            break;
        }
    }
    // Dropping the receiver makes a still-running walk fail fast.
    drop(rx);
    let built = match builder.await {
        Ok(r) => r,
        Err(e) => Err(ArchiveError::Io(path.clone(), io::Error::other(e))),
    };
    let error = match sent.and(built) {
        Ok(()) => match to_host.finish().await {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        },
        Err(e) => {
            to_host.reset().await;
            Some(e.to_string())
        }
    };
    if let Some(e) = &error {
        tracing::debug!(stream, path, error = %e, "ReadPath failed");
    }
    let _ = session.send(GuestMessage::PathSent { stream, error }).await;
}

/// Writes the archive of the guest path `path` into `out`.
fn build(root: &Path, path: &str, out: ChunkWriter) -> Result<(), ArchiveError> {
    let source = under_root(root, path);
    let skipped = &mut |p: &Path| tracing::debug!(path = %p.display(), "skipping socket");
    match aegis_archive::pack(&source, &archive_name(path), out, skipped) {
        Ok(_) => Ok(()),
        Err(e) if e.source.kind() == io::ErrorKind::BrokenPipe => Err(ArchiveError::Aborted),
        // Errors name guest paths, not where the agent's root happens to be on this machine.
        Err(e) => {
            let guest = match e.path.strip_prefix(root) {
                Ok(rel) => Path::new("/").join(rel).display().to_string(),
                Err(_) => e.path.display().to_string(),
            };
            Err(ArchiveError::Io(guest, e.source))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_guest_paths() {
        let root = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(QUEUED_CHUNKS);
        match build(root.path(), "/srv/missing", ChunkWriter::new(tx)) {
            Err(ArchiveError::Io(path, e)) => {
                assert_eq!(path, "/srv/missing");
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_host_that_stops_reading_aborts_the_walk() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("big"), vec![0u8; 1 << 20]).unwrap();
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        drop(rx);
        let r = build(root.path(), "/big", ChunkWriter::new(tx));
        assert!(matches!(r, Err(ArchiveError::Aborted)), "{r:?}");
    }
}
