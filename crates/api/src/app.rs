//! Apps and releases. An app is a name bound to a pulled OCI image reference, with the ports it
//! serves and an optional command override. Publishing an app produces an immutable, numbered
//! release made of disk layers only (never a memory snapshot): the image's layers as pulled at
//! publish time, plus optionally one layer built from a host directory. Serving an app creates
//! (or switches) the instance bound to it.
//!
//! - `POST /v1/apps` ([`CreateApp`]) -> 201 [`App`]
//! - `GET /v1/apps` -> `[App]`; `GET /v1/apps/{name}` -> [`App`]
//! - `DELETE /v1/apps/{name}` -> 204: the app's instance is stopped and removed, its releases
//!   deleted (their blobs are garbage-collected with the image store).
//! - `POST /v1/apps/{name}/releases` ([`PublishRelease`]) -> 201 [`Release`]
//! - `GET /v1/apps/{name}/releases` -> `[Release]`, oldest first
//! - `POST /v1/apps/{name}/serve` ([`ServeApp`]) -> 200 [`AppServed`]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::instance::{Instance, PortSpec};

/// Where a `--from` directory is placed in the guest unless told otherwise.
pub const DEFAULT_RELEASE_DEST: &str = "/app";

/// Longest app name.
pub const MAX_APP_NAME: usize = 63;

/// Checks an app name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= MAX_APP_NAME {
        Ok(())
    } else {
        Err(format!(
            "invalid app name {name:?}: use 1-{MAX_APP_NAME} lowercase letters, digits, '_' and \
             '-', starting with a letter or digit"
        ))
    }
}

/// `POST /v1/apps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: String,
    /// An OCI image reference that was pulled already (`aegis image pull REF`).
    pub image: String,
    /// The ports the app serves; empty: the image's `ExposedPorts` (`8080/tcp` is served as
    /// guest port 8080, protocol http).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<PortSpec>,
    /// Replaces the image's whole command (entrypoint and cmd); empty: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// Which release of an app an instance serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppServing {
    pub release: u32,
    pub instance: Instance,
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub name: String,
    /// The canonical image reference the app is bound to.
    pub image: String,
    pub expose: Vec<PortSpec>,
    /// The command override; empty: the image's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    pub created_at: String,
    /// Number of the newest release, if any was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_release: Option<u32>,
    /// The app's instance and the release it serves, if the app is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<AppServing>,
}

/// `POST /v1/apps/{name}/releases`: publish the next release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRelease {
    /// An absolute host directory whose contents become one more layer on top of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Where that directory appears in the guest (absolute; default [`DEFAULT_RELEASE_DEST`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// A free-form label, e.g. a git revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One disk layer of a release (an OCI layer blob in the image store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseLayer {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// The runtime configuration a release boots with: the image's configuration at publish
/// time, with the app's command override applied (an override clears `entrypoint` and sets
/// `cmd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in order.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ReleaseConfig {
    /// The command the release runs: entrypoint followed by cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The environment as pairs; entries without `=` are ignored, later entries win.
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// An immutable release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub app: String,
    /// 1, 2, 3, ... per app.
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The canonical image reference and the manifest digest it pointed at when published.
    pub image: String,
    pub manifest_digest: String,
    /// Disk layers, bottom first.
    pub layers: Vec<ReleaseLayer>,
    pub config: ReleaseConfig,
    pub created_at: String,
}

/// `POST /v1/apps/{name}/serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeApp {
    /// The release to serve; absent: the newest (or, with `rollback`, the one before the
    /// release served now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u32>,
    /// Serve the release before the one served now (when `release` is absent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// Mount this workspace (a name, or an absolute host directory) at `/workspace` in the
    /// app's VMs. Set when the app's instance is created; it outlives every release switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// The answer to [`ServeApp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppServed {
    pub app: String,
    pub release: u32,
    /// The release served before, if the instance existed and served another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_release: Option<u32>,
    pub instance: Instance,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["a", "web", "my_app-2", "0", &"a".repeat(63)] {
            assert!(validate_app_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Web",
            "a.b",
            "a b",
            "a/b",
            &"a".repeat(64),
            "é",
        ] {
            let e = validate_app_name(bad).unwrap_err();
            assert!(e.contains("invalid app name"), "{e}");
        }
    }

    #[test]
    fn release_config_command_and_env() {
        let c = ReleaseConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["A=1".into(), "BROKEN".into(), "B=x=y".into(), "A=2".into()],
            ..Default::default()
        };
        assert_eq!(c.command(), ["/bin/sh", "-c", "echo hi"]);
        let env = c.env_map();
        assert_eq!(env["A"], "2");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env.len(), 2);
    }
}
