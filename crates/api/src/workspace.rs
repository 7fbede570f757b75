//! Workspaces: durable directories that outlive VMs, mounted at `/workspace` in the guest.
//!
//! - `POST /v1/workspaces` ([`CreateWorkspace`]) -> 201 [`Workspace`]
//! - `GET /v1/workspaces` -> `[Workspace]`; `GET /v1/workspaces/{name}` -> [`Workspace`]
//! - `DELETE /v1/workspaces/{name}` -> 204; 409 while a task or instance holds it.
//!
//! A task or instance names its workspace in `workspace`: a workspace name (created isolated
//! when unknown) or an absolute host directory (a host-path workspace, not recorded here),
//! optionally followed by `:ro` to mount it read-only ([`WorkspaceSpec`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who may hold a workspace at the same time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// One task or instance at a time (the default).
    #[default]
    Isolated,
    /// Any number of tasks and instances at once, all reading and writing.
    Shared,
}

impl WorkspaceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceMode::Isolated => "isolated",
            WorkspaceMode::Shared => "shared",
        }
    }
}

impl std::str::FromStr for WorkspaceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "isolated" => Ok(WorkspaceMode::Isolated),
            "shared" => Ok(WorkspaceMode::Shared),
            other => Err(format!(
                "unknown workspace mode '{other}': use isolated or shared"
            )),
        }
    }
}

/// The `workspace` value of a task or instance request, split: `TARGET[:ro|:rw]`.
///
/// TARGET is a workspace name or an absolute host directory. `:ro` mounts it read-only
/// (enforced on the host, not only in the guest); `:rw`, the default, read-write. A directory
/// whose own name ends in `:ro` or `:rw` is written with an explicit `:rw` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSpec {
    /// The workspace name or the host directory.
    pub target: String,
    pub read_only: bool,
}

impl WorkspaceSpec {
    /// Splits a request value (never fails: the target is checked by whoever uses it).
    pub fn parse(value: &str) -> WorkspaceSpec {
        let (target, read_only) = match value.rsplit_once(':') {
            Some((target, "ro")) => (target, true),
            Some((target, "rw")) => (target, false),
            _ => (value, false),
        };
        WorkspaceSpec {
            target: target.to_string(),
            read_only,
        }
    }

    /// The request value, as recorded and shown: `TARGET` or `TARGET:ro` (`:rw` is only kept
    /// where the target itself ends in a mode suffix, so that parsing it again gives this).
    pub fn to_request(&self) -> String {
        if self.read_only {
            format!("{}:ro", self.target)
        } else if self.target.ends_with(":ro") || self.target.ends_with(":rw") {
            format!("{}:rw", self.target)
        } else {
            self.target.clone()
        }
    }
}

/// `POST /v1/workspaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// `[a-z0-9][a-z0-9_.-]{0,62}`.
    pub name: String,
    #[serde(default)]
    pub mode: WorkspaceMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub name: String,
    pub mode: WorkspaceMode,
    /// The host directory holding its data.
    pub path: String,
    /// Bytes of the files in it (apparent sizes, summed when asked).
    pub size_bytes: u64,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Ids of the tasks and instances holding it now.
    #[serde(default)]
    pub used_by: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_defaults_to_isolated_and_round_trips() {
        let c: CreateWorkspace = serde_json::from_str(r#"{"name":"w"}"#).unwrap();
        assert_eq!(c.mode, WorkspaceMode::Isolated);
        let c: CreateWorkspace = serde_json::from_str(r#"{"name":"w","mode":"shared"}"#).unwrap();
        assert_eq!(c.mode, WorkspaceMode::Shared);
        assert!(serde_json::from_str::<CreateWorkspace>(r#"{"name":"w","mode":"x"}"#).is_err());
        assert_eq!("shared".parse::<WorkspaceMode>(), Ok(WorkspaceMode::Shared));
        assert!("other".parse::<WorkspaceMode>().is_err());
    }

    #[test]
    fn specs_split_the_mode_suffix_and_round_trip() {
        let ro = |t: &str| WorkspaceSpec {
            target: t.into(),
            read_only: true,
        };
        let rw = |t: &str| WorkspaceSpec {
            target: t.into(),
            read_only: false,
        };
        assert_eq!(WorkspaceSpec::parse("data"), rw("data"));
        assert_eq!(WorkspaceSpec::parse("data:ro"), ro("data"));
        assert_eq!(WorkspaceSpec::parse("data:rw"), rw("data"));
        assert_eq!(WorkspaceSpec::parse("/srv/a:b"), rw("/srv/a:b"));
        assert_eq!(WorkspaceSpec::parse("/srv/x:ro:rw"), rw("/srv/x:ro"));
        for value in ["data", "data:ro", "/srv/a:b", "/srv/a:b:ro", "/srv/x:ro:rw"] {
            let spec = WorkspaceSpec::parse(value);
            assert_eq!(spec.to_request(), value);
            assert_eq!(WorkspaceSpec::parse(&spec.to_request()), spec);
        }
        assert_eq!(WorkspaceSpec::parse("data:rw").to_request(), "data");
    }
}
