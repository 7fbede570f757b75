//! Watching a directory of a live instance: the guest's inotify events, re-checked and
//! passed on as NDJSON. A watch wakes the instance and counts as an open connection for as
//! long as it lasts: whatever is to create the awaited file must be running.

use aegis_api::{ApiError, ErrorCode, WatchEvent, WatchKind};
use aegis_proto::{GuestMessage, HostMessage};
use bytes::Bytes;
use futures::StreamExt;

use super::files::{gone, path_error, ArchiveBody, Reply, STAT_TIMEOUT};
use super::InstanceManager;

/// The longest event line a guest may send.
const MAX_LINE: usize = 16 * 1024;

impl InstanceManager {
    /// The changes to the entries of the guest directory `path` of instance `key`, as NDJSON
    /// [`WatchEvent`] lines, until the caller drops the stream or the directory goes away.
    pub async fn watch_path(&self, key: &str, path: &str) -> Result<ArchiveBody, ApiError> {
        let awake = self.awake(key, "watch", path).await?;
        let session = awake.connector.session().clone();
        let stream = session.open_stream();
        let id = stream.id();
        // The sending half is kept with the watch: its end (EOF) tells the guest to stop.
        let (rx, tx) = stream.into_split();
        let files = &awake.connector.files;
        let reply = files.expect(Reply::Watch(id));
        session
            .send(HostMessage::WatchPath {
                stream: id,
                path: path.to_string(),
            })
            .await
            .map_err(|e| gone(key, &e))?;
        match tokio::time::timeout(STAT_TIMEOUT, reply).await {
            Ok(Ok(GuestMessage::WatchStarted { error: None, .. })) => {}
            Ok(Ok(GuestMessage::WatchStarted { error: Some(e), .. })) => {
                return Err(path_error(key, &e))
            }
            Ok(_) => return Err(gone(key, &"no answer to the watch")),
            Err(_) => {
                files.forget(Reply::Watch(id));
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("instance {key} did not start watching {path}; retry"),
                ));
            }
        }
        let state = (rx, Vec::new(), (awake, tx));
        let lines = futures::stream::unfold(state, |(mut rx, mut buf, awake)| async move {
            loop {
                if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    match relay(&line[..end]) {
                        Some(out) => return Some((Ok(out), (rx, buf, awake))),
                        None => continue,
                    }
                }
                if buf.len() > MAX_LINE {
                    tracing::warn!("a guest sent an overlong watch event; watch ended");
                    return None;
                }
                match rx.recv().await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    // The directory went away, the guest reset the stream or the session ended.
                    Ok(None) | Err(_) => return None,
                }
            }
        });
        Ok(lines.boxed())
    }
}

/// A guest event line, checked and re-encoded for the API; `None` for one that does not parse.
fn relay(line: &[u8]) -> Option<Bytes> {
    let event: aegis_proto::WatchEvent = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(error = %e, "a watch event that does not parse; skipped");
            return None;
        }
    };
    let kind = match event.kind {
        aegis_proto::WatchKind::Created => WatchKind::Created,
        aegis_proto::WatchKind::Written => WatchKind::Written,
        aegis_proto::WatchKind::Deleted => WatchKind::Deleted,
        aegis_proto::WatchKind::MovedIn => WatchKind::MovedIn,
        aegis_proto::WatchKind::MovedOut => WatchKind::MovedOut,
        aegis_proto::WatchKind::Overflow => WatchKind::Overflow,
    };
    let mut out = serde_json::to_vec(&WatchEvent {
        kind,
        name: event.name,
        dir: event.dir,
    })
    .ok()?;
    out.push(b'\n');
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_are_checked_and_re_encoded() {
        let out = relay(br#"{"kind":"moved_in","name":"result.json","dir":false}"#).unwrap();
        let event: WatchEvent = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(event.kind, WatchKind::MovedIn);
        assert_eq!(event.name, "result.json");
        assert!(relay(b"not json").is_none());
        assert!(relay(br#"{"kind":"moved_in","name":"x","extra":1}"#).is_none());
    }
}
