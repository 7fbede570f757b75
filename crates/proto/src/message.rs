//! The typed vocabulary spoken over a session. Every request the host can make of a guest, and
//! every event a guest can report, is a variant here; nothing is a free-form string.

use serde::{Deserialize, Serialize};

use crate::frame::StreamId;

/// Bumped on any incompatible change; both sides refuse a peer with another version.
pub const PROTOCOL_VERSION: u32 = 2;

/// Identifies a process the host asked the guest to run. Chosen by the host.
pub type ProcId = u64;

/// What to run inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH` like a shell would.
    pub argv: Vec<String>,
    /// Environment on top of the guest's default one (later entries win).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; `/` when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// `USER[:GROUP]` (names from the guest's /etc/passwd and /etc/group, or numbers), as an
    /// image's `User`; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// First message of every session; the guest answers with [`GuestMessage::Hello`].
    Hello { protocol: u32 },
    /// Liveness probe; answered by [`GuestMessage::Pong`] with the same nonce.
    Ping { nonce: u64 },
    /// Set the guest's wall clock (the guest has no RTC). Sent after every `Hello`, i.e. after
    /// boot and after every restore or resume, so the guest clock follows the host's.
    SetClock { unix_nanos: u64 },
    /// Run a process. Its stdio is wired to streams the host has already opened: the guest
    /// writes stdout/stderr to `stdout`/`stderr` and feeds `stdin` (if any) to the process.
    /// Answered by `Spawned` or `SpawnFailed`; then `Exited` once the process has exited and
    /// all of its output has been sent.
    Spawn {
        id: ProcId,
        spec: ProcessSpec,
        stdin: Option<StreamId>,
        stdout: StreamId,
        stderr: StreamId,
    },
    /// Run a process on a new pseudo-terminal of `rows` x `cols` (its controlling terminal:
    /// stdin, stdout and stderr are the terminal). The guest feeds `stdin` to the terminal
    /// and sends what the terminal shows on `output`; the end of `stdin` hangs the terminal
    /// up (SIGHUP). Answered like `Spawn`.
    SpawnPty {
        id: ProcId,
        spec: ProcessSpec,
        rows: u16,
        cols: u16,
        stdin: StreamId,
        output: StreamId,
    },
    /// New size of the terminal of a `SpawnPty` process (its foreground group gets SIGWINCH).
    Resize { id: ProcId, rows: u16, cols: u16 },
    /// Send a signal to the process group of a spawned process.
    Signal { id: ProcId, signal: i32 },
    /// Open a TCP connection to `127.0.0.1:port` inside the guest and splice it with `stream`.
    /// Answered by `Connected` or `ConnectFailed`.
    Connect { stream: StreamId, port: u16 },
    /// Send the file or directory at `path` as a tar archive on `stream`, then `PathSent`.
    ReadPath { stream: StreamId, path: String },
    /// Unpack the tar archive the host sends on `stream` into the existing guest directory
    /// `path`. Entries are staged under a temporary name in `path` and renamed into place
    /// once the whole archive arrived, so a failed write leaves nothing. Answered by
    /// `PathWritten`.
    WritePath { stream: StreamId, path: String },
    /// Describe the guest path `path` (symlinks not followed) and, when `list` and it is a
    /// directory, its entries. Answered by `PathStat` with the same `id`.
    StatPath { id: u64, path: String, list: bool },
    /// Report changes to the entries of the directory `path` (inotify, not recursive) as
    /// NDJSON [`WatchEvent`] lines on `stream` until the host closes or resets it. Answered by
    /// `WatchStarted`.
    WatchPath { stream: StreamId, path: String },
    /// Send the further output of the running process `id` on these streams of this
    /// session (a host that reconnected, or a VM restored from a snapshot, whose earlier
    /// session is gone). Output written while no host was attached is kept, up to a bound,
    /// and sent first. Answered by `Attached` or `AttachFailed`.
    Attach {
        id: ProcId,
        stdout: StreamId,
        stderr: StreamId,
    },
    /// Stop every process, sync and unmount the disks, power off. Answered by `ShuttingDown`.
    Shutdown,
}

/// Guest -> host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestMessage {
    /// Sent when the harness opens the channel and in answer to every host `Hello`.
    Hello {
        protocol: u32,
        /// `uname -r` of the guest kernel.
        kernel_release: String,
        /// Random per boot: a host that sees a new one knows the guest restarted.
        boot_id: String,
    },
    Pong {
        nonce: u64,
    },
    Spawned {
        id: ProcId,
        pid: u32,
    },
    SpawnFailed {
        id: ProcId,
        error: SpawnError,
    },
    /// The process's output now goes to the streams named by `Attach`.
    Attached {
        id: ProcId,
    },
    /// No running process has this id (it exited, or never ran).
    AttachFailed {
        id: ProcId,
        error: String,
    },
    /// The process exited and its stdout/stderr streams have been closed.
    Exited {
        id: ProcId,
        status: ExitStatus,
    },
    Connected {
        stream: StreamId,
    },
    ConnectFailed {
        stream: StreamId,
        error: String,
    },
    /// The archive requested by `ReadPath` is complete (`error: None`) or failed.
    PathSent {
        stream: StreamId,
        error: Option<String>,
    },
    /// The archive sent for `WritePath` is in place (`error: None`), or nothing of it is.
    PathWritten {
        stream: StreamId,
        error: Option<PathError>,
    },
    /// The answer to `StatPath`.
    PathStat {
        id: u64,
        result: Result<PathInfo, PathError>,
    },
    /// The watch asked for by `WatchPath` runs (`error: None`) or could not start.
    WatchStarted {
        stream: StreamId,
        error: Option<PathError>,
    },
    /// The guest is powering off; no further messages follow.
    ShuttingDown,
}

/// One change in a watched directory: one NDJSON line on a `WatchPath` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchEvent {
    pub kind: WatchKind,
    /// The entry's name in the watched directory (empty for `overflow`).
    pub name: String,
    /// Whether the entry is a directory.
    #[serde(default)]
    pub dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    /// Created in the directory (a file may still be being written).
    Created,
    /// A file opened for writing was closed: its content is complete.
    Written,
    Deleted,
    /// Renamed into the directory (how `aegis cp` and atomic writers put files in place).
    MovedIn,
    MovedOut,
    /// Events were lost (the guest's inotify queue overflowed): look again.
    Overflow,
}

/// Why a file operation on a guest path failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathError {
    pub kind: PathErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathErrorKind {
    /// The path (or a parent of it) does not exist.
    NotFound,
    /// A directory was needed and this is something else.
    NotADirectory,
    /// The guest file system is full (or over quota).
    NoSpace,
    /// The request or the archive is malformed.
    Invalid,
    Other,
}

/// What a guest path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One guest path, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathInfo {
    /// The last component (`/` for the root).
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A directory's entries in name order, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<PathInfo>>,
}

/// Why a process could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnError {
    pub kind: SpawnErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnErrorKind {
    /// `argv[0]` is not in `PATH` (shells report 127).
    NotFound,
    /// Found but not executable (shells report 126).
    PermissionDenied,
    /// Bad spec (empty argv, bad cwd, ...).
    Invalid,
    Other,
}

impl SpawnErrorKind {
    /// The exit status a POSIX shell reports for this failure.
    pub fn shell_exit_code(self) -> i32 {
        match self {
            SpawnErrorKind::NotFound => 127,
            SpawnErrorKind::PermissionDenied => 126,
            SpawnErrorKind::Invalid | SpawnErrorKind::Other => 126,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit status a POSIX shell reports (128 + n for a signal).
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_tagged_json() {
        let m = HostMessage::Spawn {
            id: 1,
            spec: ProcessSpec {
                argv: vec!["echo".into(), "hi".into()],
                env: vec![],
                cwd: None,
                user: None,
            },
            stdin: None,
            stdout: 1,
            stderr: 3,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.starts_with(r#"{"type":"spawn""#), "{s}");
        assert_eq!(serde_json::from_str::<HostMessage>(&s).unwrap(), m);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r = serde_json::from_str::<HostMessage>(r#"{"type":"ping","nonce":1,"x":2}"#);
        assert!(r.is_err());
    }

    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(SpawnErrorKind::NotFound.shell_exit_code(), 127);
    }
}
