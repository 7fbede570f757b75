//! Files of a live instance: stat and list a guest path, read one as a tar stream, write a tar
//! stream into a guest directory. Every call wakes the instance first (as a connection does)
//! and counts as an open connection until it ends, so the instance is not paused mid-copy.
//!
//! Archives stream through: a read hands the guest stream to the HTTP body chunk by chunk,
//! a write sends each chunk of the HTTP body into the guest stream, waiting for the session's
//! flow-control credit. Neither holds more than a window of bytes in the daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_api::{ApiError, ErrorCode, FileInfo, FileKind};
use aegis_proto::{GuestMessage, HostMessage, PathError, PathErrorKind, PathInfo, StreamId};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::activity_holders::HolderGuard;
use super::connector::Connector;
use super::error::LifecycleError;
use super::runtime::InstanceRuntime;
use super::InstanceManager;

/// How long a guest may take to describe a path.
pub(super) const STAT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest guest path accepted (Linux's PATH_MAX).
const MAX_PATH: usize = 4096;

/// Which guest answer someone waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Reply {
    Sent(StreamId),
    Written(StreamId),
    Stat(u64),
    Watch(StreamId),
}

/// The file operations waiting for the guest's answer, on one session.
#[derive(Default)]
pub struct FileReplies {
    waiting: Mutex<HashMap<Reply, oneshot::Sender<GuestMessage>>>,
    next_stat: AtomicU64,
}

impl FileReplies {
    /// Hands `msg` to whoever waits for it; gives it back when it is not a file answer.
    pub fn deliver(&self, msg: GuestMessage) -> Option<GuestMessage> {
        let key = match &msg {
            GuestMessage::PathSent { stream, .. } => Reply::Sent(*stream),
            GuestMessage::PathWritten { stream, .. } => Reply::Written(*stream),
            GuestMessage::PathStat { id, .. } => Reply::Stat(*id),
            GuestMessage::WatchStarted { stream, .. } => Reply::Watch(*stream),
            _ => return Some(msg),
        };
        match self.waiting.lock().remove(&key) {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => tracing::debug!(?key, "a file answer nobody waits for"),
        }
        None
    }

    pub(super) fn forget(&self, key: Reply) {
        self.waiting.lock().remove(&key);
    }

    /// Fails everyone waiting: the session is gone.
    pub fn clear(&self) {
        self.waiting.lock().clear();
    }

    pub(super) fn expect(&self, key: Reply) -> oneshot::Receiver<GuestMessage> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(key, tx);
        rx
    }
}

/// A running VM of an instance, held awake for one file operation: a holder in
/// `awake_because` (kind `files`, or `watch`), so no idle policy pauses it mid-transfer.
pub(super) struct Awake {
    pub(super) connector: Arc<Connector>,
    _hold: HolderGuard,
}

/// A tar stream of a guest path; ends with an error when the guest's send failed midway.
pub type ArchiveBody = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

impl InstanceManager {
    /// Describes the guest path `path` of instance `key`, with a directory's entries if `list`.
    pub async fn stat_path(&self, key: &str, path: &str, list: bool) -> Result<FileInfo, ApiError> {
        let awake = self.awake(key, "stat", path).await?;
        stat(&awake, key, path, list).await
    }

    /// The guest path `path` of instance `key` as a tar stream (a directory recursively),
    /// its entries named from the path's last component.
    pub async fn read_archive(&self, key: &str, path: &str) -> Result<ArchiveBody, ApiError> {
        let awake = self.awake(key, "read", path).await?;
        // A missing path is a 404 before the body starts, not a broken archive.
        stat(&awake, key, path, false).await?;
        let session = awake.connector.session().clone();
        let stream = session.open_stream();
        let id = stream.id();
        let (rx, _tx) = stream.into_split();
        let reply = awake.connector.files.expect(Reply::Sent(id));
        let path = path.to_string();
        session
            .send(HostMessage::ReadPath {
                stream: id,
                path: path.clone(),
            })
            .await
            .map_err(|e| gone(key, &e))?;
        let state = (rx, Some(reply), awake, path);
        let body = futures::stream::unfold(state, |(mut rx, reply, awake, path)| async move {
            let reply = reply?;
            match rx.recv().await {
                Ok(Some(chunk)) => Some((Ok(chunk), (rx, Some(reply), awake, path))),
                Ok(None) => match reply.await {
                    Ok(GuestMessage::PathSent { error: None, .. }) => None,
                    Ok(GuestMessage::PathSent { error: Some(e), .. }) => {
                        Some((Err(broken(&path, &e)), (rx, None, awake, path)))
                    }
                    _ => Some((Err(broken(&path, &"no answer")), (rx, None, awake, path))),
                },
                Err(e) => Some((Err(broken(&path, &e)), (rx, None, awake, path))),
            }
        });
        Ok(body.boxed())
    }

    /// Unpacks the tar stream `body` into the existing guest directory `path` of instance
    /// `key`. The guest puts entries in place only once the whole archive arrived.
    pub async fn write_archive<S, E>(&self, key: &str, path: &str, body: S) -> Result<(), ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let awake = self.awake(key, "write", path).await?;
        let session = awake.connector.session().clone();
        let stream = session.open_stream();
        let id = stream.id();
        let (_rx, mut tx) = stream.into_split();
        let reply = awake.connector.files.expect(Reply::Written(id));
        session
            .send(HostMessage::WritePath {
                stream: id,
                path: path.to_string(),
            })
            .await
            .map_err(|e| gone(key, &e))?;
        let mut body = body;
        let mut upload_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    // A guest that failed resets the stream: its answer says why.
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    upload_error = Some(e.to_string());
                    break;
                }
            }
        }
        match &upload_error {
            // Never let a cut-off upload look like a whole archive to the guest.
            Some(_) => tx.reset().await,
            None => {
                let _ = tx.finish().await;
            }
        }
        let answer = reply.await;
        if let Some(e) = upload_error {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the upload to {path} broke off ({e}); nothing was written"),
            ));
        }
        match answer {
            Ok(GuestMessage::PathWritten { error: None, .. }) => Ok(()),
            Ok(GuestMessage::PathWritten { error: Some(e), .. }) => Err(path_error(key, &e)),
            _ => Err(gone(key, &"no answer to the write")),
        }
    }

    /// Wakes instance `key` for the file operation `op` (`stat`, `read`, `write`, `watch`) on
    /// the guest path `path`.
    pub(super) async fn awake(&self, key: &str, op: &str, path: &str) -> Result<Awake, ApiError> {
        check_path(path)?;
        let rt = self.get(key)?;
        // Held before the wake, so an idle timer cannot pause the VM between the two.
        let kind = if op == "watch" { "watch" } else { "files" };
        let hold = rt.holders.hold(kind, format!("{op} {path}"));
        ensure_ready(&rt, key).await?;
        let connector = match rt.connector() {
            Some(c) => c,
            None => {
                // Paused or stopped between the wake and now: wake once more.
                ensure_ready(&rt, key).await?;
                rt.connector().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        format!("instance {key} was stopped while a file operation started; retry"),
                    )
                })?
            }
        };
        Ok(Awake {
            connector,
            _hold: hold,
        })
    }
}

async fn ensure_ready(rt: &Arc<InstanceRuntime>, key: &str) -> Result<(), ApiError> {
    rt.ensure_ready()
        .await
        .map_err(|error| LifecycleError::Wake { key, error }.into())
}

async fn stat(awake: &Awake, key: &str, path: &str, list: bool) -> Result<FileInfo, ApiError> {
    let files = &awake.connector.files;
    let id = files.next_stat.fetch_add(1, Ordering::Relaxed);
    let reply = files.expect(Reply::Stat(id));
    awake
        .connector
        .session()
        .send(HostMessage::StatPath {
            id,
            path: path.to_string(),
            list,
        })
        .await
        .map_err(|e| gone(key, &e))?;
    match tokio::time::timeout(STAT_TIMEOUT, reply).await {
        Ok(Ok(GuestMessage::PathStat { result, .. })) => match result {
            Ok(info) => Ok(api_info(info)),
            Err(e) => Err(path_error(key, &e)),
        },
        Ok(_) => Err(gone(key, &"no answer to stat")),
        Err(_) => {
            files.waiting.lock().remove(&Reply::Stat(id));
            Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "instance {key} did not describe {path} within {} s; retry",
                    STAT_TIMEOUT.as_secs()
                ),
            ))
        }
    }
}

/// Guest paths are absolute: the guest resolves them, relative ones would depend on a cwd
/// that the API does not have.
fn check_path(path: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("guest path '{path}' {why}"),
        ))
    };
    if !path.starts_with('/') {
        return bad("is not absolute; give the full path inside the instance, e.g. /workspace/out");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path.len() > MAX_PATH {
        return bad("is longer than 4096 bytes");
    }
    Ok(())
}

pub(super) fn path_error(key: &str, e: &PathError) -> ApiError {
    let (code, hint) = match e.kind {
        PathErrorKind::NotFound => (ErrorCode::NotFound, ""),
        PathErrorKind::NotADirectory => (ErrorCode::InvalidRequest, ""),
        PathErrorKind::Invalid => (ErrorCode::InvalidRequest, ""),
        PathErrorKind::NoSpace => (
            ErrorCode::InsufficientStorage,
            "; nothing was written (free space in the instance, or write less)",
        ),
        PathErrorKind::Other => (ErrorCode::Internal, ""),
    };
    ApiError::new(code, format!("instance {key}: {}{hint}", e.message))
}

pub(super) fn gone(key: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the session with instance {key} ended during a file operation ({e}); retry"),
    )
}

fn broken(path: &str, e: &dyn std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("the guest failed to send {path}: {e}"))
}

fn api_info(info: PathInfo) -> FileInfo {
    FileInfo {
        name: info.name,
        kind: match info.kind {
            aegis_proto::FileKind::File => FileKind::File,
            aegis_proto::FileKind::Dir => FileKind::Dir,
            aegis_proto::FileKind::Symlink => FileKind::Symlink,
            aegis_proto::FileKind::Other => FileKind::Other,
        },
        size: info.size,
        mode: info.mode,
        mtime: info.mtime,
        link: info.link,
        entries: info
            .entries
            .map(|entries| entries.into_iter().map(api_info).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_must_be_absolute_and_sane() {
        assert!(check_path("/workspace/out").is_ok());
        for bad in ["workspace", "", "./x", "/a\0b"] {
            let e = check_path(bad).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
        assert!(check_path(&format!("/{}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn a_full_guest_disk_is_a_507_that_says_nothing_was_written() {
        let e = path_error(
            "web",
            &PathError {
                kind: PathErrorKind::NoSpace,
                message: "/tmp/big: No space left on device".into(),
            },
        );
        assert_eq!(e.error.code.http_status(), 507);
        assert!(e.error.message.contains("nothing was written"), "{e:?}");
    }

    #[test]
    fn answers_reach_their_waiter_and_others_pass_through() {
        let replies = FileReplies::default();
        let mut rx = replies.expect(Reply::Written(3));
        let other = GuestMessage::Pong { nonce: 1 };
        assert_eq!(replies.deliver(other.clone()), Some(other));
        let written = GuestMessage::PathWritten {
            stream: 3,
            error: None,
        };
        assert_eq!(replies.deliver(written.clone()), None);
        assert_eq!(rx.try_recv().unwrap(), written);
    }
}
