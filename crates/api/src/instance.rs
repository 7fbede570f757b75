//! Serve mode: a ServeTarget declares what a microVM serves (ports and their protocols), how
//! the router behaves while it wakes, and when it idles down. An instance is a ServeTarget
//! plus its runtime state: nothing runs until a connection arrives, the VM wakes, the router
//! proxies, and idle timers pause then terminate it.
//!
//! - `POST /v1/instances` ([`CreateInstance`]) -> 201 [`Instance`]
//! - `GET /v1/instances` -> `[Instance]`; `GET /v1/instances/{id}` (id or name) -> [`Instance`]
//! - `POST /v1/instances/{id}/pause|resume|stop` -> [`Instance`]; `stop` terminates the VM but
//!   keeps the target: the next connection wakes it again.
//! - `DELETE /v1/instances/{id}` -> 204: VM, listeners and snapshots are removed.
//! - `GET /v1/instances/{id}/logs?follow=true&stdout_offset=N&stderr_offset=M` -> NDJSON
//!   [`crate::OutputEvent`]s of the served process (durable across wakes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How the router treats a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortProtocol {
    /// HTTP/1.1: browsers get a loading page during a wake, other clients are held.
    Http,
    /// Raw TCP: the connection is held silently and spliced once the guest port accepts.
    Tcp,
    /// gRPC over HTTP/2 (h2c): requests are held, `grpc-timeout` deadlines are honoured.
    Grpc,
    /// WebSocket: the upgrade is held, then proxied; open sockets count as activity.
    Websocket,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Http => "http",
            PortProtocol::Tcp => "tcp",
            PortProtocol::Grpc => "grpc",
            PortProtocol::Websocket => "websocket",
        }
    }
}

impl std::str::FromStr for PortProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "http" => PortProtocol::Http,
            "tcp" => PortProtocol::Tcp,
            "grpc" => PortProtocol::Grpc,
            "websocket" | "ws" => PortProtocol::Websocket,
            other => {
                return Err(format!(
                    "unknown protocol '{other}': use http, tcp, grpc or websocket"
                ))
            }
        })
    }
}

/// One exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Port the app listens on inside the guest.
    pub guest_port: u16,
    /// Host port on 127.0.0.1; absent or 0: assigned by aegisd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub protocol: PortProtocol,
}

/// When idle connections keep a VM awake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicy {
    /// Any open connection pins the VM (idle = no connections).
    #[default]
    On,
    /// Connections with no traffic for the idle period do not pin it; the next byte wakes it.
    Idle,
}

pub const DEFAULT_PAUSE_AFTER_SECS: u64 = 60;
pub const DEFAULT_TERMINATE_AFTER_SECS: u64 = 1200;
pub const DEFAULT_WAKE_TIMEOUT_SECS: u64 = 60;

/// `POST /v1/instances`: the ServeTarget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// Unique name; HTTP ports are also reachable as `Host: <name>` on the shared router port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub command: Vec<String>,
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
    /// Mounted at `/workspace`: a workspace name, or an absolute host directory, `:ro` after it
    /// for read-only ([`crate::WorkspaceSpec`]). Held for the instance's whole life (it can
    /// wake at any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    pub expose: Vec<PortSpec>,
    #[serde(default)]
    pub idle_policy: IdlePolicy,
    /// Seconds without activity before the VM is paused (RAM kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_secs: Option<u64>,
    /// Seconds paused before the VM is terminated (RAM released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_after_secs: Option<u64>,
    /// How long the router holds a connection while the VM wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_timeout_secs: Option<u64>,
    /// Serve browsers a loading page during a wake (HTTP ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loading_page: Option<bool>,
    /// The app this instance serves (set by `POST /v1/apps/{name}/serve`): it boots from the
    /// disk layers of release `release` of that app instead of `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The app release served (with `app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u32>,
}

impl CreateInstance {
    /// Checks the request's durations (see [`crate::check_duration_secs`]).
    pub fn check_durations(&self) -> Result<(), String> {
        for (field, value) in [
            ("pause_after_secs", self.pause_after_secs),
            ("terminate_after_secs", self.terminate_after_secs),
            ("wake_timeout_secs", self.wake_timeout_secs),
        ] {
            crate::check_duration_secs(field, value)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Cold boot or snapshot restore in progress.
    Booting,
    /// The app's ports accept connections.
    Running,
    /// vCPUs stopped, RAM kept: the next connection resumes it in milliseconds.
    Paused,
    /// No VM: the next connection restores a memory snapshot or cold-boots from disk layers.
    Terminated,
    /// Cannot be served (its host port could not be bound again after a daemon restart):
    /// `last_error` says why and what to do. It never wakes; it can be removed.
    Error,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Booting => "booting",
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
            InstanceState::Terminated => "terminated",
            InstanceState::Error => "error",
        }
    }
}

/// Where an exposed port is reachable on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    pub guest_port: u16,
    pub host_port: u16,
    pub protocol: PortProtocol,
    /// e.g. `http://127.0.0.1:41234` or `tcp://127.0.0.1:41235`.
    pub url: String,
}

/// Counters of how the instance woke up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WakeStats {
    pub cold_boots: u64,
    pub snapshot_restores: u64,
    pub resumes: u64,
    pub pauses: u64,
    pub terminations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub state: InstanceState,
    pub target: CreateInstance,
    pub endpoints: Vec<Endpoint>,
    pub created_at: String,
    /// Last connection or traffic seen by the router (RFC 3339).
    pub last_active_at: String,
    pub active_connections: u64,
    /// A memory snapshot is cached: a wake from `terminated` restores it.
    pub snapshot_cached: bool,
    pub stats: WakeStats,
    /// Why the last wake or the VM failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_kernel: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse() {
        assert_eq!("HTTP".parse::<PortProtocol>().unwrap(), PortProtocol::Http);
        assert_eq!(
            "ws".parse::<PortProtocol>().unwrap(),
            PortProtocol::Websocket
        );
        assert!("udp"
            .parse::<PortProtocol>()
            .unwrap_err()
            .contains("unknown protocol"));
    }

    #[test]
    fn create_instance_defaults() {
        let c: CreateInstance = serde_json::from_str(
            r#"{"command":["python3","-m","http.server"],"expose":[{"guest_port":8000,"protocol":"http"}]}"#,
        )
        .unwrap();
        assert_eq!(c.idle_policy, IdlePolicy::On);
        assert_eq!(c.expose[0].host_port, None);
    }
}
