//! The HTTP/JSON API of `aegisd`, version 1.
//!
//! The daemon serves it on a unix socket (mode 0600) under `/v1/...`; the CLI, the Python SDK
//! and the tests are clients of this API only. `docs/openapi.yaml` describes the same types and
//! a test keeps the two in sync.
//!
//! [`AegisHome`] is the other half of the contract between CLI and daemon: where every file
//! under the Aegis home lives.
#![forbid(unsafe_code)]

pub mod app;
pub mod error;
pub mod home;
pub mod image;
pub mod instance;
pub mod status;
pub mod task;
pub mod workspace;

pub use app::{
    App, AppServed, AppServing, CreateApp, PublishRelease, Release, ReleaseConfig, ReleaseLayer,
    ServeApp,
};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use home::{AegisHome, HomeError, HOME_ENV};
pub use image::{ImageInfo, ImageKind, PullEvent, PullImage};
pub use instance::{
    CreateInstance, Endpoint, IdlePolicy, Instance, InstanceState, PortProtocol, PortSpec,
    WakeStats,
};
pub use status::{CapabilitiesInfo, Status};
pub use task::{CreateTask, OutputEvent, StreamName, Task, TaskState};
pub use workspace::{CreateWorkspace, Workspace, WorkspaceMode};

/// Default guest image for tasks.
pub const DEFAULT_IMAGE: &str = "debian";
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Default vCPUs.
pub const DEFAULT_VCPUS: u32 = 1;
/// Smallest guest memory the kernel + harness boot in.
pub const MIN_MEMORY_MIB: u32 = 64;
