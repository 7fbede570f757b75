//! The HTTP/JSON API of `aegisd`, version 1.
//!
//! The daemon serves it on a unix socket (mode 0600) under `/v1/...`; the CLI, the Python SDK
//! and the tests are clients of this API only. `api/openapi.json` (OpenAPI 3.1) is generated
//! from these types (`#[derive(ToSchema)]`) and the daemon's routes; see docs/API.md.
//!
//! [`AegisHome`] is the other half of the contract between CLI and daemon: where every file
//! under the Aegis home lives.
#![forbid(unsafe_code)]

pub mod app;
pub mod error;
pub mod exec;
pub mod files;
pub mod home;
pub mod image;
pub mod instance;
pub mod lease;
pub mod limits;
pub mod status;
pub mod task;
pub mod workspace;

pub use app::{
    App, AppServed, AppServing, CreateApp, PublishRelease, Release, ReleaseConfig, ReleaseLayer,
    ServeApp,
};
pub use error::{error_chain, ApiError, ErrorBody, ErrorCode};
pub use exec::{CreateExec, Exec, ExecState, TtySize};
pub use files::{FileInfo, FileKind, PathQuery, WatchEvent, WatchKind};
pub use home::{AegisHome, HomeError, HOME_ENV};
pub use image::{ImageInfo, ImageKind, PullEvent, PullImage};
pub use instance::{
    CreateInstance, Endpoint, IdlePolicy, Instance, InstanceState, PortProtocol, PortSpec,
    WakeStats,
};
pub use lease::{
    check_lease_holder, check_lease_ttl, ActivityHolder, AwakeBecause, CreateLease, IdleTimers,
    Lease, PortConnections, RenewLease, MAX_LEASE_TTL_SECS,
};
pub use limits::{human_bytes, Limits};
pub use status::{CapabilitiesInfo, Status};
pub use task::{CreateTask, OutputEvent, StreamName, Task, TaskState};
pub use workspace::{CreateWorkspace, Workspace, WorkspaceMode, WorkspaceSpec};

/// Default guest image for tasks.
pub const DEFAULT_IMAGE: &str = "debian";
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Default vCPUs.
pub const DEFAULT_VCPUS: u32 = 1;
/// Smallest guest memory the kernel + harness boot in.
pub const MIN_MEMORY_MIB: u32 = 64;

/// Longest duration a `*_secs` request field accepts: 7 days. Longer deadlines are mistakes
/// rather than plans, and an unbounded one would overflow the daemon's clock arithmetic.
pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;

/// Checks a `*_secs` request field named `field`: absent, or 1 ..= [`MAX_DURATION_SECS`].
/// Zero is refused rather than read as "no limit": leaving the field out means that.
pub fn check_duration_secs(field: &str, value: Option<u64>) -> Result<(), String> {
    match value {
        Some(0) => Err(format!(
            "{field} must be at least 1 second; leave it out for the default"
        )),
        Some(v) if v > MAX_DURATION_SECS => Err(format!(
            "{field} {v} is out of range: use 1 to {MAX_DURATION_SECS} seconds (7 days)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert!(check_duration_secs("x_secs", None).is_ok());
        assert!(check_duration_secs("x_secs", Some(1)).is_ok());
        assert!(check_duration_secs("x_secs", Some(MAX_DURATION_SECS)).is_ok());
        let zero = check_duration_secs("x_secs", Some(0)).unwrap_err();
        assert!(zero.contains("x_secs must be at least 1 second"), "{zero}");
        let huge = check_duration_secs("x_secs", Some(i64::MAX as u64)).unwrap_err();
        assert!(
            huge.contains("9223372036854775807") && huge.contains("604800 seconds (7 days)"),
            "{huge}"
        );
        assert!(check_duration_secs("x_secs", Some(MAX_DURATION_SECS + 1)).is_err());
    }
}
