//! Following an output feed across lost connections: a task's to its end, an instance's for
//! as long as the instance exists.

use std::time::{Duration, Instant};

use aegis_api::{OutputEvent, StreamName, Task};

use crate::{Client, Error, OutputStream, Result};

/// How long [`OutputFollower`] keeps trying to reconnect to an unreachable daemon.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What [`OutputFollower::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowItem {
    /// New bytes of one stream: never a byte twice, never a byte skipped.
    Output {
        /// Which stream.
        stream: StreamName,
        /// The raw bytes.
        data: Vec<u8>,
    },
    /// The task ended and all its output was delivered.
    End(Box<Task>),
    /// The followed instance no longer exists (it was deleted): its feed ended and the
    /// daemon now answers 404 for it. Only for followers of an instance's logs.
    Gone,
}

/// Whose feed is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `GET /v1/tasks/{id}/output`: ends with an end event.
    Task,
    /// `GET /v1/instances/{id}/logs`: goes on while the instance exists.
    Instance,
}

impl Source {
    fn noun(self) -> &'static str {
        match self {
            Source::Task => "task",
            Source::Instance => "instance",
        }
    }
}

/// Follows a feed with `follow=true`, tracking one byte cursor per stream. When the
/// connection drops (or the feed ends without its end event) it reconnects from the cursors;
/// bytes the daemon sends again are dropped. It gives up when the daemon stays unreachable
/// for the reconnect window.
///
/// A task's feed ([`Client::follow_output`]) is followed until the task's end event
/// ([`FollowItem::End`]). An instance's ([`Client::follow_instance_logs`]) has no end: it is
/// followed until the instance is deleted, which shows as a 404 when the feed is reopened
/// ([`FollowItem::Gone`]); a 404 on the very first request is an error (no such instance).
#[derive(Debug)]
pub struct OutputFollower {
    client: Client,
    source: Source,
    id: String,
    stdout_offset: u64,
    stderr_offset: u64,
    feed: Option<OutputStream>,
    /// The feed was opened successfully at least once.
    opened: bool,
    reconnect_window: Duration,
    reconnects: u32,
    done: bool,
}

impl OutputFollower {
    /// Follow the output of task `task_id` from the given byte offsets.
    pub fn new(client: Client, task_id: &str, stdout_offset: u64, stderr_offset: u64) -> Self {
        Self::with_source(client, Source::Task, task_id, stdout_offset, stderr_offset)
    }

    /// Follow the logs of instance `id` (id or name) from the given byte offsets.
    pub fn for_instance(client: Client, id: &str, stdout_offset: u64, stderr_offset: u64) -> Self {
        Self::with_source(client, Source::Instance, id, stdout_offset, stderr_offset)
    }

    fn with_source(
        client: Client,
        source: Source,
        id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Self {
        OutputFollower {
            client,
            source,
            id: id.to_string(),
            stdout_offset,
            stderr_offset,
            feed: None,
            opened: false,
            reconnect_window: DEFAULT_RECONNECT_WINDOW,
            reconnects: 0,
            done: false,
        }
    }

    /// Change how long an unreachable daemon is retried ([`DEFAULT_RECONNECT_WINDOW`]).
    pub fn with_reconnect_window(mut self, window: Duration) -> Self {
        self.reconnect_window = window;
        self
    }

    /// Bytes delivered so far (stdout, stderr), counting the starting offsets.
    pub fn offsets(&self) -> (u64, u64) {
        (self.stdout_offset, self.stderr_offset)
    }

    /// How many times the feed was reopened after a loss.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    async fn open(&self) -> Result<OutputStream> {
        let (id, so, se) = (&self.id, self.stdout_offset, self.stderr_offset);
        match self.source {
            Source::Task => self.client.task_output(id, true, so, se).await,
            Source::Instance => self.client.instance_logs(id, true, so, se).await,
        }
    }

    /// The next new bytes, or the end of the task (the disappearance of the instance);
    /// `None` after that.
    pub async fn next(&mut self) -> Result<Option<FollowItem>> {
        if self.done {
            return Ok(None);
        }
        let mut backoff = FIRST_BACKOFF;
        // When the daemon became unreachable; reconnection gives up `reconnect_window` later.
        let mut outage_since: Option<Instant> = None;
        loop {
            let feed = match self.feed.as_mut() {
                Some(feed) => feed,
                None => match self.open().await {
                    Ok(feed) => {
                        outage_since = None;
                        self.opened = true;
                        self.feed.insert(feed)
                    }
                    Err(e) if e.is_transient() => {
                        let since = *outage_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.reconnect_window {
                            return Err(e);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    Err(e)
                        if self.source == Source::Instance && self.opened && e.is_not_found() =>
                    {
                        self.done = true;
                        return Ok(Some(FollowItem::Gone));
                    }
                    Err(e) => return Err(e),
                },
            };
            match feed.next_event().await {
                Ok(Some(OutputEvent::End { task })) => {
                    self.done = true;
                    self.feed = None;
                    return Ok(Some(match self.source {
                        Source::Task => FollowItem::End(task),
                        // Instances have no end event; one would mean the feed is complete.
                        Source::Instance => FollowItem::Gone,
                    }));
                }
                Ok(Some(event @ OutputEvent::Output { .. })) => {
                    backoff = FIRST_BACKOFF;
                    if let Some(item) = self.accept(&event)? {
                        return Ok(Some(item));
                    }
                }
                // The feed ended early or broke: reopen it from our cursors. For an instance
                // the reopened request answers 404 once it has been deleted.
                Ok(None) => self.lost(&mut backoff).await,
                Err(e) if e.is_transient() => self.lost(&mut backoff).await,
                Err(e) => return Err(e),
            }
        }
    }

    async fn lost(&mut self, backoff: &mut Duration) {
        self.feed = None;
        self.reconnects += 1;
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// Advance the cursor of the event's stream; `None` when every byte was seen already.
    fn accept(&mut self, event: &OutputEvent) -> Result<Option<FollowItem>> {
        let OutputEvent::Output { stream, offset, .. } = event else {
            return Ok(None);
        };
        let data = event.bytes().ok_or_else(|| {
            Error::Protocol(format!(
                "output event of {} {} at offset {offset} is not valid base64",
                self.source.noun(),
                self.id
            ))
        })?;
        let cursor = match stream {
            StreamName::Stdout => &mut self.stdout_offset,
            StreamName::Stderr => &mut self.stderr_offset,
        };
        let end = offset + data.len() as u64;
        if end <= *cursor {
            return Ok(None);
        }
        // Bytes before our cursor were delivered already. A gap (offset past the cursor)
        // means the daemon no longer has those bytes; nothing better to do than go on.
        let skip = cursor.saturating_sub(*offset) as usize;
        *cursor = end;
        Ok(Some(FollowItem::Output {
            stream: *stream,
            data: data[skip..].to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> OutputFollower {
        OutputFollower::new(Client::new("/nonexistent".into()), "t", 0, 0)
    }

    fn out(stream: StreamName, offset: u64, data: &[u8]) -> OutputEvent {
        OutputEvent::output(stream, offset, data)
    }

    fn bytes(item: Option<FollowItem>) -> Option<Vec<u8>> {
        match item {
            Some(FollowItem::Output { data, .. }) => Some(data),
            _ => None,
        }
    }

    #[test]
    fn overlapping_events_are_trimmed_and_duplicates_dropped() {
        let mut f = follower();
        let so = StreamName::Stdout;
        assert_eq!(
            bytes(f.accept(&out(so, 0, b"hello")).unwrap()).unwrap(),
            b"hello"
        );
        assert!(f.accept(&out(so, 0, b"hello")).unwrap().is_none());
        assert!(f.accept(&out(so, 2, b"llo")).unwrap().is_none());
        assert_eq!(
            bytes(f.accept(&out(so, 3, b"lo wo")).unwrap()).unwrap(),
            b" wo"
        );
        assert_eq!(f.offsets(), (8, 0));
        // Streams have independent cursors.
        assert_eq!(
            bytes(f.accept(&out(StreamName::Stderr, 0, b"e")).unwrap()).unwrap(),
            b"e"
        );
        assert_eq!(f.offsets(), (8, 1));
    }

    #[test]
    fn empty_events_yield_nothing() {
        let mut f = follower();
        assert!(f
            .accept(&out(StreamName::Stdout, 0, b""))
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_base64_is_a_protocol_error() {
        let mut f = follower();
        let e = OutputEvent::Output {
            stream: StreamName::Stdout,
            offset: 0,
            data: "!!".into(),
        };
        assert!(matches!(f.accept(&e), Err(Error::Protocol(_))));
    }
}
