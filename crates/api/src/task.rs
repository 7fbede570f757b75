//! Task mode: run a command in a fresh microVM, stream its output, collect its exit status and
//! artifacts, terminate the VM.
//!
//! - `POST /v1/tasks` ([`CreateTask`]) -> 201 [`Task`]
//! - `GET /v1/tasks` -> `[Task]`; `GET /v1/tasks/{id}` -> [`Task`]
//! - `GET /v1/tasks/{id}/output?follow=true&stdout_offset=N&stderr_offset=M` -> NDJSON
//!   [`OutputEvent`]s. Offsets are byte cursors into each stream: a client that lost its
//!   connection resumes exactly where it stopped. With `follow`, the response ends after the
//!   task has ended and all output was sent, with one [`OutputEvent::End`].
//! - `POST /v1/tasks/{id}/cancel` -> [`Task`] (kills the VM; state `cancelled`)
//! - `DELETE /v1/tasks/{id}` -> 204 (only ended tasks; removes output and artifacts)

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Program and arguments, run with `$PATH` lookup inside the guest.
    pub command: Vec<String>,
    /// Guest image name; [`crate::DEFAULT_IMAGE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `USER[:GROUP]` to run the command as (names from the image's /etc/passwd, or numbers);
    /// the image's `User`, else root, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// Kill the task (state `timed_out`) once this many seconds have passed since it was
    /// accepted: boot, command, artifact copy and shutdown all count. 1 ..=
    /// [`crate::MAX_DURATION_SECS`]; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Guest paths (files or directories) copied back to the host when the command has
    /// exited. Special bits (setuid, setgid, sticky) are dropped; device nodes and fifos are
    /// refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// Most bytes of artifact archives this task may copy back; the daemon's own cap
    /// (default 1 GiB) applies when absent or larger. Past it the task fails and nothing
    /// of its artifacts is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_artifact_bytes: Option<u64>,
    /// Mounted at `/workspace`: a workspace name (created isolated when unknown), or an
    /// absolute host directory, `:ro` after it for read-only ([`crate::WorkspaceSpec`]).
    /// Held while the task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Keep the command's stdin open for `POST /v1/tasks/{id}/stdin` (whose end is its EOF);
    /// without it the command reads end-of-file at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
}

impl CreateTask {
    /// Checks the request's durations (see [`crate::check_duration_secs`]).
    pub fn check_durations(&self) -> Result<(), String> {
        crate::check_duration_secs("timeout_secs", self.timeout_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, VM booting.
    Booting,
    /// The command runs in the guest.
    Running,
    /// The command exited (any exit code): see `exit_code`.
    Exited,
    /// Aegis could not run the command or the VM failed: see `error`.
    Failed,
    /// Killed once `timeout_secs` had passed since the task was accepted.
    TimedOut,
    /// Cancelled by a client.
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Booting | TaskState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Booting => "booting",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "booting" => TaskState::Booting,
            "running" => TaskState::Running,
            "exited" => TaskState::Exited,
            "failed" => TaskState::Failed,
            "timed_out" => TaskState::TimedOut,
            "cancelled" => TaskState::Cancelled,
            other => return Err(format!("unknown task state '{other}'")),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: String,
    pub state: TaskState,
    pub command: Vec<String>,
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Exit status as a shell reports it (128+N for signal N). Set once `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the task failed, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 UTC timestamps.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Host directory holding copied-back artifacts (when any were declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<String>,
    /// Guest kernel release as reported by the harness (`uname -r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_kernel: Option<String>,
    /// The workspace mounted at `/workspace` (name or host path, `:ro` if read-only), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Stdout,
    Stderr,
}

/// One line of the NDJSON output feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OutputEvent {
    /// Bytes of one stream, starting at byte `offset` of that stream. `data` is base64.
    Output {
        stream: StreamName,
        offset: u64,
        /// The bytes, base64 (standard alphabet, padded).
        #[schema(content_encoding = "base64")]
        data: String,
    },
    /// The feed is complete: the task ended and every byte was sent.
    End { task: Box<Task> },
}

impl OutputEvent {
    pub fn output(stream: StreamName, offset: u64, bytes: &[u8]) -> Self {
        OutputEvent::Output {
            stream,
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Decoded bytes of an `Output` event.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            OutputEvent::Output { data, .. } => {
                base64::engine::general_purpose::STANDARD.decode(data).ok()
            }
            OutputEvent::End { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_event_roundtrip() {
        let e = OutputEvent::output(StreamName::Stderr, 10, b"\0\xffx");
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains(r#""event":"output""#));
        let back: OutputEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(back.bytes().unwrap(), b"\0\xffx");
    }

    #[test]
    fn create_task_refuses_unknown_fields() {
        assert!(serde_json::from_str::<CreateTask>(r#"{"command":["x"],"memory":1}"#).is_err());
    }

    #[test]
    fn states_parse_back() {
        for s in [
            TaskState::Booting,
            TaskState::Running,
            TaskState::Exited,
            TaskState::Failed,
            TaskState::TimedOut,
            TaskState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
    }
}
