//! Exec: a process run in an instance's VM next to its server (`POST /v1/instances/{id}/exec`).
//!
//! The exec is created by one request; its output is a durable NDJSON feed with byte offsets
//! per stream (`GET /v1/execs/{id}/output`, the same events as a task's output), its stdin
//! an upload (`POST /v1/execs/{id}/stdin`, a streamed request body whose end closes the
//! process's stdin), and its state and exit code `GET /v1/execs/{id}`. See docs/EXEC.md.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/instances/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExec {
    /// Program and arguments; `command[0]` is looked up in the guest's `PATH`.
    pub command: Vec<String>,
    /// Environment on top of the guest's default one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `USER[:GROUP]` in the guest; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keep the process's stdin open for `POST /v1/execs/{id}/stdin`; without it the process
    /// reads end-of-file at once.
    #[serde(default)]
    pub stdin: bool,
    /// Run the command on a pseudo-terminal of this size: its stdin, stdout and stderr are
    /// the terminal, whose screen is the exec's stdout; stdin is always open and its end
    /// hangs the terminal up (SIGHUP). Resize with `POST /v1/execs/{id}/resize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

impl TtySize {
    /// Largest rows or columns accepted: far beyond any screen, small enough for any program.
    pub const MAX: u16 = 4096;

    /// Checks both dimensions are 1 ..= [`Self::MAX`].
    pub fn check(self) -> Result<(), String> {
        for (name, v) in [("rows", self.rows), ("cols", self.cols)] {
            if v == 0 || v > Self::MAX {
                return Err(format!(
                    "terminal {name} {v} is out of range: use 1 to {}",
                    Self::MAX
                ));
            }
        }
        Ok(())
    }
}

/// Where an exec is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    Running,
    /// The process exited (or could not start: `exit_code` 126/127 and `error`).
    Exited,
    /// Aegis lost the process (its VM stopped or was removed); `error` says why.
    Failed,
}

impl ExecState {
    pub fn is_ended(self) -> bool {
        self != ExecState::Running
    }

    /// The name in the API and in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecState::Running => "running",
            ExecState::Exited => "exited",
            ExecState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for ExecState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => ExecState::Running,
            "exited" => ExecState::Exited,
            "failed" => ExecState::Failed,
            other => return Err(format!("unknown exec state '{other}'")),
        })
    }
}

/// `GET /v1/execs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exec {
    pub id: String,
    /// The instance's id.
    pub instance: String,
    pub command: Vec<String>,
    pub state: ExecState,
    /// As a shell reports it: the command's code, 128 + n for signal n, 127 for a command
    /// not found, 126 for one that cannot be executed.
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Bytes of output stored so far; once the exec has ended, its whole output.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub created_at: String,
}
