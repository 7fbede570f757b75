//! Async client of the `aegisd` HTTP/JSON API (v1) over its unix socket.
//!
//! ```no_run
//! # async fn demo() -> aegis_client::Result<()> {
//! use aegis_client::Client;
//! let home = aegis_api::AegisHome::from_env().expect("an Aegis home");
//! let client = Client::from_home(&home);
//! let status = client.status().await?;
//! println!("aegisd {} on {}", status.version, status.backend);
//! # Ok(()) }
//! ```
//!
//! One HTTP/1.1 connection per request: the daemon is local, a connect costs microseconds,
//! and nothing has to be pooled or kept alive. The output feed is NDJSON parsed
//! incrementally with no line-length limit ([`OutputStream`]); [`OutputFollower`] follows it
//! to the end of a task (or, for a serve-mode instance, for as long as the instance exists) and
//! resumes it after a lost connection, by byte offsets, without duplicating or losing a byte.
#![forbid(unsafe_code)]

mod apps;
mod error;
mod exec;
mod files;
mod follow;
mod images;
mod leases;
mod output;
mod transport;

#[cfg(test)]
mod client_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aegis_api::{AegisHome, CreateInstance, CreateTask, Instance, Status, Task};
use hyper::Method;

pub use apps::PUBLISH_TIMEOUT;
pub use error::{Error, Result};
pub use exec::{ExecFollower, ExecItem, EXEC_CREATE_TIMEOUT};
pub use files::ArchiveStream;
pub use follow::{FollowItem, OutputFollower, DEFAULT_RECONNECT_WINDOW};
pub use leases::LEASE_WAKE_TIMEOUT;
pub use output::{NdjsonStream, OutputStream};

/// How long a request (other than the body of the output feed) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one daemon, identified by its socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the daemon listening on `socket`. Nothing is connected yet.
    pub fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client of the daemon of the Aegis home `home` (its [`AegisHome::socket`]).
    pub fn from_home(home: &AegisHome) -> Self {
        Client::new(home.socket())
    }

    /// Change how long a request may take ([`DEFAULT_TIMEOUT`]); the body of a followed
    /// output feed is never timed out.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status> {
        self.call_json(Method::GET, "/v1/status", None).await
    }

    /// `POST /v1/tasks`: the task is accepted and its VM boots in the background.
    pub async fn create_task(&self, request: &CreateTask) -> Result<Task> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Protocol(format!("cannot encode the task request: {e}")))?;
        self.call_json(Method::POST, "/v1/tasks", Some(body)).await
    }

    /// `GET /v1/tasks`.
    pub async fn list_tasks(&self) -> Result<Vec<Task>> {
        self.call_json(Method::GET, "/v1/tasks", None).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn get_task(&self, id: &str) -> Result<Task> {
        self.call_json(Method::GET, &task_path(id, ""), None).await
    }

    /// `POST /v1/tasks/{id}/cancel`: kill the task's VM; the task ends `cancelled`.
    pub async fn cancel_task(&self, id: &str) -> Result<Task> {
        self.call_json(Method::POST, &task_path(id, "/cancel"), None)
            .await
    }

    /// `DELETE /v1/tasks/{id}`: forget an ended task, its output and its artifacts.
    pub async fn delete_task(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &task_path(id, ""), None)
            .await
    }

    /// `POST /v1/shutdown`: the daemon stops every VM and exits. Returns once the daemon
    /// accepted the request, not once it has exited.
    pub async fn shutdown(&self) -> Result<()> {
        self.call_empty(Method::POST, "/v1/shutdown", None).await
    }

    /// `GET /v1/tasks/{id}/output`: the output feed from the given byte offsets. Without
    /// `follow` it holds what the task wrote so far; with `follow` it goes on until the task
    /// has ended and ends with [`aegis_api::OutputEvent::End`]. See [`OutputFollower`] for a
    /// feed that survives lost connections.
    pub async fn task_output(
        &self,
        id: &str,
        follow: bool,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<OutputStream> {
        self.open_feed(
            &task_path(id, "/output"),
            follow,
            stdout_offset,
            stderr_offset,
        )
        .await
    }

    /// `GET {output}?follow=..&stdout_offset=..&stderr_offset=..`: an output feed (a task's, an
    /// exec's or an instance's logs) from the given byte offsets.
    pub(crate) async fn open_feed(
        &self,
        output: &str,
        follow: bool,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<OutputStream> {
        let path = format!(
            "{output}?follow={follow}&stdout_offset={stdout_offset}&stderr_offset={stderr_offset}"
        );
        let (body, conn) = self.open_stream(Method::GET, &path).await?;
        Ok(OutputStream::new(body, conn, self.socket.clone()))
    }

    /// Follow the output of task `id` from the given offsets to the task's end, resuming
    /// after lost connections.
    pub fn follow_output(
        &self,
        id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> OutputFollower {
        OutputFollower::new(self.clone(), id, stdout_offset, stderr_offset)
    }

    /// `POST /v1/instances`: declare a ServeTarget. Its ports are listened on at once; the VM
    /// boots when the first connection arrives.
    pub async fn create_instance(&self, request: &CreateInstance) -> Result<Instance> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Protocol(format!("cannot encode the instance request: {e}")))?;
        self.call_json(Method::POST, "/v1/instances", Some(body))
            .await
    }

    /// `GET /v1/instances`.
    pub async fn list_instances(&self) -> Result<Vec<Instance>> {
        self.call_json(Method::GET, "/v1/instances", None).await
    }

    /// `GET /v1/instances/{id}`; `id` may also be the instance's name.
    pub async fn get_instance(&self, id: &str) -> Result<Instance> {
        self.call_json(Method::GET, &instance_path(id, ""), None)
            .await
    }

    /// `POST /v1/instances/{id}/pause`: stop the VM's vCPUs, keeping its RAM; the next
    /// connection resumes it.
    pub async fn pause_instance(&self, id: &str) -> Result<Instance> {
        self.call_json(Method::POST, &instance_path(id, "/pause"), None)
            .await
    }

    /// `POST /v1/instances/{id}/resume`: wake the instance now rather than on the next
    /// connection.
    pub async fn resume_instance(&self, id: &str) -> Result<Instance> {
        self.call_json(Method::POST, &instance_path(id, "/resume"), None)
            .await
    }

    /// `POST /v1/instances/{id}/stop`: terminate the VM but keep the instance; the next
    /// connection wakes it again.
    pub async fn stop_instance(&self, id: &str) -> Result<Instance> {
        self.call_json(Method::POST, &instance_path(id, "/stop"), None)
            .await
    }

    /// `DELETE /v1/instances/{id}`: remove the instance, its VM, listeners and snapshots.
    /// `POST /v1/workspaces`.
    pub async fn create_workspace(
        &self,
        request: &aegis_api::CreateWorkspace,
    ) -> Result<aegis_api::Workspace> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Protocol(format!("cannot encode the workspace request: {e}")))?;
        self.call_json(Method::POST, "/v1/workspaces", Some(body))
            .await
    }

    /// `GET /v1/workspaces`.
    pub async fn list_workspaces(&self) -> Result<Vec<aegis_api::Workspace>> {
        self.call_json(Method::GET, "/v1/workspaces", None).await
    }

    /// `GET /v1/workspaces/{name}`.
    pub async fn get_workspace(&self, name: &str) -> Result<aegis_api::Workspace> {
        self.call_json(Method::GET, &workspace_path(name), None)
            .await
    }

    /// `DELETE /v1/workspaces/{name}`: 409 while a task or instance holds it.
    pub async fn delete_workspace(&self, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &workspace_path(name), None)
            .await
    }

    pub async fn delete_instance(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &instance_path(id, ""), None)
            .await
    }

    /// `GET /v1/instances/{id}/logs`: the output of the instance's served process (durable
    /// across wakes) from the given byte offsets. Without `follow` it holds what was written
    /// so far; with `follow` it goes on for as long as the instance exists and simply ends
    /// when it is deleted (no [`aegis_api::OutputEvent::End`]). See
    /// [`Client::follow_instance_logs`] for a feed that survives lost connections.
    pub async fn instance_logs(
        &self,
        id: &str,
        follow: bool,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<OutputStream> {
        self.open_feed(
            &instance_path(id, "/logs"),
            follow,
            stdout_offset,
            stderr_offset,
        )
        .await
    }

    /// Follow the logs of instance `id` from the given offsets until the instance is deleted
    /// ([`FollowItem::Gone`]), resuming after lost connections.
    pub fn follow_instance_logs(
        &self,
        id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> OutputFollower {
        OutputFollower::for_instance(self.clone(), id, stdout_offset, stderr_offset)
    }
}

/// `/v1/tasks/{id}{suffix}` with `id` percent-encoded, so that no id can reach another route.
fn task_path(id: &str, suffix: &str) -> String {
    format!("/v1/tasks/{}{suffix}", encode_segment(id))
}

/// `/v1/instances/{id}{suffix}`, likewise.
fn workspace_path(name: &str) -> String {
    format!("/v1/workspaces/{}", encode_segment(name))
}

fn instance_path(id: &str, suffix: &str) -> String {
    format!("/v1/instances/{}{suffix}", encode_segment(id))
}

/// The query of an output feed.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(task_path("task-1", "/cancel"), "/v1/tasks/task-1/cancel");
        assert_eq!(task_path("../status", ""), "/v1/tasks/..%2Fstatus");
        assert_eq!(task_path("a b?c", ""), "/v1/tasks/a%20b%3Fc");
        assert_eq!(
            instance_path("../tasks/x", "/stop"),
            "/v1/instances/..%2Ftasks%2Fx/stop"
        );
    }

    #[test]
    fn from_home_uses_the_socket_name() {
        let c = Client::from_home(&AegisHome::new("/h"));
        assert_eq!(c.socket(), Path::new("/h/aegisd.sock"));
    }
}
