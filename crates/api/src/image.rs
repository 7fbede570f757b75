//! Images: the built-in ones Aegis builds (`busybox`, `debian`) and OCI images pulled from
//! registries.
//!
//! - `POST /v1/images/pull` ([`PullImage`]) -> 200 NDJSON [`PullEvent`]s, ending with one
//!   `done` or `error` event.
//! - `GET /v1/images` -> `[ImageInfo]`
//! - `GET /v1/images/{reference}` -> [`ImageInfo`]
//! - `DELETE /v1/images/{reference}` -> 204; 409 while an instance or a running task uses it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// `alpine`, `alpine:3.21`, `localhost:5000/x/y:tag`, `ghcr.io/org/app@sha256:...`.
    pub reference: String,
}

/// One line of a pull's progress stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PullEvent {
    /// What is happening now and how far it got: `done` of `total` bytes (or steps).
    Progress {
        message: String,
        done: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// The image is stored and its disks are ready to boot.
    Done { image: ImageInfo },
    /// The pull failed; nothing of it is used.
    Error { error: ErrorBody },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// Built by `aegis setup` from Debian packages.
    Builtin,
    /// Pulled from an OCI / Docker registry.
    Oci,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// The canonical reference (`docker.io/library/alpine:3.21`), or a built-in name.
    pub reference: String,
    pub kind: ImageKind,
    /// Manifest digest of an OCI image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Compressed size of the layers (OCI) or size of the disk (built-in).
    pub size_bytes: u64,
    /// Number of disk layers.
    pub layers: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `8080/tcp`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    /// Instances and running tasks using it.
    #[serde(default)]
    pub used_by: Vec<String>,
}
