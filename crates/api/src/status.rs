//! `GET /v1/status`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Always "running" when the daemon answers.
    pub status: String,
    /// aegisd version.
    pub version: String,
    pub pid: u32,
    /// The VMM backend in use ("qemu", "firecracker", "libkrun", "fake").
    pub backend: String,
    pub capabilities: CapabilitiesInfo,
    /// Aegis home directory of this daemon.
    pub home: String,
    pub tasks_running: u32,
    /// The shared HTTP router port (apps by `Host: <name>`), e.g. `127.0.0.1:8099`.
    #[serde(default)]
    pub router_addr: String,
    #[serde(default)]
    pub instances: u32,
    /// Names of the images this daemon builds itself (`aegis setup`), built yet or not; any
    /// other image name is an OCI reference to pull.
    #[serde(default)]
    pub builtin_images: Vec<String>,
    /// The limits in force (the daemon's `config.toml` over the defaults; docs/CONFIG.md).
    /// Absent from a daemon older than the config file.
    #[serde(default)]
    pub limits: Option<crate::Limits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapabilitiesInfo {
    pub pause: bool,
    pub memory_snapshot: bool,
    pub vsock: bool,
    pub virtio_fs: bool,
    pub accelerator: String,
}
