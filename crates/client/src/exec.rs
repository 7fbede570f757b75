//! Exec: run a command in an instance's VM (`POST /v1/instances/{id}/exec`), follow its
//! output by byte offsets across lost connections, feed its stdin, signal it.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use aegis_api::{CreateExec, Exec, OutputEvent, StreamName};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::Method;

use crate::{encode_segment, instance_path, Client, Error, OutputStream, Result};

/// How long creating an exec may take: it wakes the instance first, which may be a cold boot.
pub const EXEC_CREATE_TIMEOUT: Duration = Duration::from_secs(300);

fn exec_path(id: &str, suffix: &str) -> String {
    format!("/v1/execs/{}{suffix}", encode_segment(id))
}

impl Client {
    /// `POST /v1/instances/{id}/exec`: start `request` in instance `instance` (id or name),
    /// waking it first. A command that cannot start is an ended exec (exit code 126/127).
    pub async fn create_exec(&self, instance: &str, request: &CreateExec) -> Result<Exec> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Protocol(format!("cannot encode the exec request: {e}")))?;
        let client = self
            .clone()
            .with_timeout(self.timeout.max(EXEC_CREATE_TIMEOUT));
        client
            .call_json(Method::POST, &instance_path(instance, "/exec"), Some(body))
            .await
    }

    /// `GET /v1/execs/{id}`.
    pub async fn get_exec(&self, id: &str) -> Result<Exec> {
        self.call_json(Method::GET, &exec_path(id, ""), None).await
    }

    /// `GET /v1/execs/{id}/output`: the output feed from the given offsets; with `follow` it
    /// ends once the exec ended and all its output was sent (there is no end event: read
    /// the exit code with [`Client::get_exec`]). See [`ExecFollower`].
    pub async fn exec_output(
        &self,
        id: &str,
        follow: bool,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<OutputStream> {
        self.open_feed(
            &exec_path(id, "/output"),
            follow,
            stdout_offset,
            stderr_offset,
        )
        .await
    }

    /// `POST /v1/execs/{id}/signal?signal=N`: signal the exec's process group.
    pub async fn signal_exec(&self, id: &str, signal: i32) -> Result<()> {
        let path = exec_path(id, &format!("/signal?signal={signal}"));
        self.call_empty(Method::POST, &path, None).await
    }

    /// `POST /v1/execs/{id}/resize?rows=R&cols=C`: the new size of a `tty` exec's terminal.
    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let path = exec_path(id, &format!("/resize?rows={rows}&cols={cols}"));
        self.call_empty(Method::POST, &path, None).await
    }

    /// `POST /v1/execs/{id}/stdin`: streams `data` to the exec's stdin as it comes; the end
    /// of `data` closes it (EOF). Returns when the daemon has passed everything on.
    pub async fn upload_exec_stdin<S>(&self, id: &str, data: S) -> Result<()>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        self.upload_bytes(exec_path(id, "/stdin"), data).await
    }

    /// `POST /v1/tasks/{id}/stdin`: as [`Client::upload_exec_stdin`], for a task created
    /// with `stdin`. It may start while the task's VM still boots.
    pub async fn upload_task_stdin<S>(&self, id: &str, data: S) -> Result<()>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        self.upload_bytes(crate::task_path(id, "/stdin"), data)
            .await
    }

    /// A POST of raw bytes whose body is `data`, sent as it comes.
    async fn upload_bytes<S>(&self, path: String, data: S) -> Result<()>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let body = data.map(Ok::<_, Infallible>);
        self.upload(Method::POST, &path, "application/octet-stream", body)
            .await
    }

    /// Follow the output of exec `id` from the given offsets to its end.
    pub fn follow_exec(&self, id: &str, stdout_offset: u64, stderr_offset: u64) -> ExecFollower {
        ExecFollower {
            client: self.clone(),
            id: id.to_string(),
            offsets: (stdout_offset, stderr_offset),
            feed: None,
            reconnect_window: crate::DEFAULT_RECONNECT_WINDOW,
        }
    }
}

/// What [`ExecFollower::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecItem {
    /// New bytes of one stream: never a byte twice, never one skipped.
    Output { stream: StreamName, data: Vec<u8> },
    /// The exec ended and all its output was delivered.
    End(Box<Exec>),
}

/// Follows an exec's output feed, one byte cursor per stream, reopening it from the cursors
/// when the connection drops, until the exec has ended and every byte was delivered.
#[derive(Debug)]
pub struct ExecFollower {
    client: Client,
    id: String,
    offsets: (u64, u64),
    feed: Option<OutputStream>,
    reconnect_window: Duration,
}

impl ExecFollower {
    /// Bytes delivered so far (stdout, stderr), counting the starting offsets.
    pub fn offsets(&self) -> (u64, u64) {
        self.offsets
    }

    /// The next new bytes, or the end of the exec.
    pub async fn next(&mut self) -> Result<ExecItem> {
        let mut outage_since: Option<Instant> = None;
        loop {
            let feed = match self.feed.as_mut() {
                Some(feed) => feed,
                None => {
                    let (so, se) = self.offsets;
                    match self.client.exec_output(&self.id, true, so, se).await {
                        Ok(feed) => {
                            outage_since = None;
                            self.feed.insert(feed)
                        }
                        Err(e) if e.is_transient() => {
                            let since = *outage_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= self.reconnect_window {
                                return Err(e);
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            match feed.next_event().await {
                Ok(Some(event @ OutputEvent::Output { .. })) => {
                    if let Some(item) = self.accept(&event)? {
                        return Ok(item);
                    }
                }
                Ok(Some(OutputEvent::End { .. })) => {}
                // The feed ended: the exec is over, or the daemon dropped it (a restart).
                Ok(None) => {
                    self.feed = None;
                    let exec = match self.client.get_exec(&self.id).await {
                        Ok(exec) => exec,
                        Err(e) if e.is_transient() => continue,
                        Err(e) => return Err(e),
                    };
                    if exec.state.is_ended()
                        && self.offsets.0 >= exec.stdout_bytes
                        && self.offsets.1 >= exec.stderr_bytes
                    {
                        return Ok(ExecItem::End(Box::new(exec)));
                    }
                }
                Err(e) if e.is_transient() => {
                    self.feed = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn accept(&mut self, event: &OutputEvent) -> Result<Option<ExecItem>> {
        let OutputEvent::Output { stream, offset, .. } = event else {
            return Ok(None);
        };
        let data = event.bytes().ok_or_else(|| {
            Error::Protocol(format!(
                "output event of exec {} at offset {offset} is not valid base64",
                self.id
            ))
        })?;
        let cursor = match stream {
            StreamName::Stdout => &mut self.offsets.0,
            StreamName::Stderr => &mut self.offsets.1,
        };
        let end = offset + data.len() as u64;
        if end <= *cursor {
            return Ok(None);
        }
        let skip = cursor.saturating_sub(*offset) as usize;
        *cursor = end;
        Ok(Some(ExecItem::Output {
            stream: *stream,
            data: data[skip..].to_vec(),
        }))
    }
}
