//! Files of a live instance: what `GET /v1/instances/{id}/files/stat` and `.../files/list`
//! answer. Archives (`GET`/`PUT .../files/archive`) are tar streams, not JSON.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a guest path is (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A device node, fifo or socket.
    Other,
}

/// One guest path, as `lstat` inside the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    /// The last component (`/` for the root).
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, including setuid/setgid/sticky (e.g. `0o755` is 493).
    pub mode: u32,
    /// Last modification, seconds since the Unix epoch.
    pub mtime: i64,
    /// A symlink's target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A directory's entries in name order (`files/list` only).
    // `no_recursion`: the schema refers to itself; without it utoipa recurses forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub entries: Option<Vec<FileInfo>>,
}

/// The query of every `files/...` call: an absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    pub path: String,
}

/// One change in a watched directory: one NDJSON line of `GET .../files/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchEvent {
    pub kind: WatchKind,
    /// The entry's name in the watched directory (empty for `overflow`).
    pub name: String,
    /// Whether the entry is a directory.
    #[serde(default)]
    pub dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Events were lost in the guest: list the directory again.
    Overflow,
}
