//! `ReadPath`: a file or directory sent as a tar archive.
//!
//! The archive is built on a blocking thread (file system walks block) and handed to the
//! async side in chunks through a bounded channel, so a slow host throttles the walk instead
//! of the archive piling up in memory. Entries are named from the last component of the
//! requested path (`/srv/app` -> `app/...`; `/` -> `./...`). Symlinks are archived as links
//! and never followed, so nothing outside the tree is read; modes, owners and mtimes are kept.
//! Sockets cannot be archived and are skipped.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aegis_proto::{GuestMessage, Session, StreamId};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::paths::{archive_name, under_root};

/// Size of the chunks handed to the session, and how many may wait in the channel.
const CHUNK: usize = 64 * 1024;
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
    // Errors name guest paths, not where the agent's root happens to be on this machine.
    let guest = |p: &Path| match p.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel).display().to_string(),
        Err(_) => p.display().to_string(),
    };
    let fail = |p: &Path, e: io::Error| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            ArchiveError::Aborted
        } else {
            ArchiveError::Io(guest(p), e)
        }
    };
    let source = under_root(root, path);
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    append(&mut tar, &source, &archive_name(path)).map_err(|(p, e)| fail(&p, e))?;
    let mut out = tar.into_inner().map_err(|e| fail(&source, e))?;
    out.flush().map_err(|e| fail(&source, e))?;
    Ok(())
}

/// Appends `source` as `name`, recursing into directories in name order.
fn append(
    tar: &mut tar::Builder<ChunkWriter>,
    source: &Path,
    name: &Path,
) -> Result<(), (PathBuf, io::Error)> {
    let at = |e| (source.to_path_buf(), e);
    let meta = fs::symlink_metadata(source).map_err(at)?;
    let kind = meta.file_type();
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_socket() {
            tracing::debug!(path = %source.display(), "skipping socket");
            return Ok(());
        }
    }
    tar.append_path_with_name(source, name).map_err(at)?;
    if kind.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(source)
            .map_err(at)?
            .collect::<Result<_, _>>()
            .map_err(at)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            append(tar, &entry.path(), &name.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// `io::Write` that cuts the archive into chunks for the async side.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "archive receiver gone"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
