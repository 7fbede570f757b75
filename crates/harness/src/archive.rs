//! `ReadPath`: a file or directory sent as a tar archive.
//!
//! The archive is built on a blocking thread (file system walks block) and handed to the
//! async side in chunks through a bounded channel, so a slow host throttles the walk instead
//! of the archive piling up in memory. Entries are named from the last component of the
//! requested path (`/srv/app` -> `app/...`; `/` -> `./...`). Symlinks are archived as links
//! and never followed, so nothing outside the tree is read; modes, owners and mtimes are kept.
//! Sockets cannot be archived and are skipped; device nodes and fifos are archived as such
//! (what the host does with them is the host's decision).

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
    if is_special(&kind) {
        append_special(tar, &meta, name).map_err(at)?;
    } else {
        tar.append_path_with_name(source, name).map_err(at)?;
    }
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

fn is_special(kind: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_fifo() || kind.is_char_device() || kind.is_block_device()
}

/// Appends a device node or fifo as `name`. tar 0.4's own `append_path_with_name` names these
/// entries after the source path instead of `name`, which it then refuses as absolute.
fn append_special<W: Write>(
    tar: &mut tar::Builder<W>,
    meta: &fs::Metadata,
    name: &Path,
) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kind = meta.file_type();
    let entry_type = if kind.is_fifo() {
        tar::EntryType::Fifo
    } else if kind.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    };
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_entry_type(entry_type);
    header.set_size(0);
    let rdev = meta.rdev();
    header.set_device_major(libc::major(rdev))?;
    header.set_device_minor(libc::minor(rdev))?;
    tar.append_data(&mut header, name, io::empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_are_archived_under_their_archive_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d");
        fs::create_dir(&src).unwrap();
        let fifo = std::ffi::CString::new(src.join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let mut tar = tar::Builder::new(Vec::new());
        let meta = fs::symlink_metadata(src.join("pipe")).unwrap();
        append_special(&mut tar, &meta, Path::new("d/pipe")).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let entry = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap(), Path::new("d/pipe"));
        assert_eq!(entry.header().entry_type(), tar::EntryType::Fifo);
        assert_eq!(entry.header().mode().unwrap() & 0o777, 0o640);
    }
}
