//! `WatchPath`: changes to a directory's entries, from inotify, as NDJSON lines on a stream.
//!
//! One inotify instance per watch, read through the runtime (no thread per watch). The watch
//! ends when the host closes or resets the stream, or when the directory itself goes away.
//! Staging directories of `WritePath` are not reported: a watcher sees the finished entries
//! arrive (`moved_in`), not the scaffolding.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aegis_proto::{
    GuestMessage, PathError, PathErrorKind, Session, StreamId, WatchEvent, WatchKind,
};
use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::paths::under_root;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// The prefix of `WritePath` staging directories (see `files.rs`).
pub(crate) const STAGING_PREFIX: &str = ".aegis-write-";

/// Handles `WatchPath { stream, path }` (in its own task).
pub(crate) async fn watch_path(session: Session, root: PathBuf, stream: StreamId, path: String) {
    let (mut from_host, mut to_host) = session.stream(stream).into_split();
    let inotify = match Inotify::watch(&under_root(&root, &path)) {
        Ok(i) => i,
        Err(e) => {
            let kind = match e.raw_os_error() {
                Some(libc::ENOENT) => PathErrorKind::NotFound,
                Some(libc::ENOTDIR) => PathErrorKind::NotADirectory,
                _ => PathErrorKind::Other,
            };
            let error = PathError {
                kind,
                message: format!("cannot watch {path}: {e}"),
            };
            to_host.reset().await;
            let _ = session
                .send(GuestMessage::WatchStarted {
                    stream,
                    error: Some(error),
                })
                .await;
            return;
        }
    };
    if session
        .send(GuestMessage::WatchStarted {
            stream,
            error: None,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = inotify.read(&mut buf) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(stream, error = %e, "inotify read failed");
                        break;
                    }
                };
                let (lines, gone) = encode(&buf[..n]);
                if !lines.is_empty() && to_host.send(Bytes::from(lines)).await.is_err() {
                    return;
                }
                if gone {
                    break;
                }
            }
            // Data from the host means nothing; its end (or a reset) ends the watch.
            r = from_host.recv() => if !matches!(r, Ok(Some(_))) {
                return;
            },
        }
    }
    let _ = to_host.finish().await;
}

/// The NDJSON lines of the events in `raw`, and whether the directory itself went away.
fn encode(raw: &[u8]) -> (Vec<u8>, bool) {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    let mut gone = false;
    let mut at = 0;
    while at + HEADER <= raw.len() {
        let field = |i: usize| {
            let b = &raw[at + 4 * i..at + 4 * i + 4];
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        };
        let (mask, len) = (field(1), field(3) as usize);
        let name_bytes = &raw[(at + HEADER).min(raw.len())..(at + HEADER + len).min(raw.len())];
        at += HEADER + len;
        let name_end = name_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_bytes.len());
        let name = String::from_utf8_lossy(&name_bytes[..name_end]).into_owned();
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            gone = true;
            continue;
        }
        let kind = if mask & libc::IN_Q_OVERFLOW != 0 {
            WatchKind::Overflow
        } else if mask & libc::IN_CREATE != 0 {
            WatchKind::Created
        } else if mask & libc::IN_CLOSE_WRITE != 0 {
            WatchKind::Written
        } else if mask & libc::IN_DELETE != 0 {
            WatchKind::Deleted
        } else if mask & libc::IN_MOVED_FROM != 0 {
            WatchKind::MovedOut
        } else if mask & libc::IN_MOVED_TO != 0 {
            WatchKind::MovedIn
        } else {
            continue;
        };
        if name.starts_with(STAGING_PREFIX) {
            continue;
        }
        let event = WatchEvent {
            kind,
            name,
            dir: mask & libc::IN_ISDIR != 0,
        };
        if let Ok(line) = serde_json::to_vec(&event) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    (out, gone)
}

/// An inotify instance watching one directory.
struct Inotify(AsyncFd<OwnedFd>);

impl Inotify {
    fn watch(dir: &Path) -> io::Result<Inotify> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by inotify_init1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is a valid inotify descriptor; `c` is NUL-terminated and outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd is open and always returns the same descriptor from as_raw_fd,
        // and the AsyncFd owns it for its whole lifetime.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Inotify(fd))
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            let read = ready.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` bytes of writes for the whole call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_file_written_and_renamed_in_but_not_staging() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::watch(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::create_dir(dir.path().join(format!("{STAGING_PREFIX}1"))).unwrap();
        std::fs::write(dir.path().join(format!("{STAGING_PREFIX}1/b")), b"y").unwrap();
        std::fs::rename(
            dir.path().join(format!("{STAGING_PREFIX}1/b")),
            dir.path().join("b"),
        )
        .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = Vec::new();
        while !String::from_utf8_lossy(&lines).contains("moved_in") {
            let n = inotify.read(&mut buf).await.unwrap();
            lines.extend(encode(&buf[..n]).0);
        }
        let events: Vec<WatchEvent> = lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let seen: Vec<_> = events.iter().map(|e| (e.kind, e.name.as_str())).collect();
        assert_eq!(
            seen,
            [
                (WatchKind::Created, "a"),
                (WatchKind::Written, "a"),
                (WatchKind::MovedIn, "b")
            ]
        );
    }

    #[test]
    fn a_file_cannot_be_watched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let e = Inotify::watch(&dir.path().join("f")).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = Inotify::watch(&dir.path().join("missing")).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
