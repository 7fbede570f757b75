//! The Aegis router: a protocol-aware, wake-on-connect proxy in front of instances that
//! scale to zero.
//!
//! The router accepts connections on every exposed port ([`serve_port`]) and on the shared
//! HTTP port that routes by `Host` ([`serve_shared_http`]). It knows nothing of VMs: it talks
//! to an [`Upstream`] (is it ready, wake it, connect to a guest port, report activity) and
//! the daemon implements that for an instance. While an upstream wakes, each protocol gets
//! what suits it: HTTP browsers a loading page, other HTTP clients and WebSocket upgrades a
//! hold, TCP a silent hold, gRPC calls a queue bounded by their own deadlines. See
//! `docs/ROUTER.md`.
//!
//! One concern per module: [`protocol`](Protocol) and [`route`](PortRoute) say what to serve,
//! `upstream` what the router needs from the daemon, `hold` how it waits, `listener` and
//! `shared` accept, `tcp`, `http`, `websocket` and `grpc` proxy, `splice` copies bytes,
//! `loading_page` is the browser's view of a wake, [`WakeGate`] makes wakes single-flight,
//! [`ActivityTracker`] records what the idle timers read, [`Workers`] serves connections
//! thread-per-core.
#![forbid(unsafe_code)]

mod activity;
mod body;
mod conn;
pub mod error;
mod grpc;
mod headers;
mod hold;
mod http;
mod listener;
mod loading_page;
mod protocol;
mod route;
mod shared;
mod splice;
mod tcp;
mod upstream;
mod wake_gate;
mod websocket;
mod workers;

pub use activity::{ActivityGuard, ActivityTracker};
pub use error::{ConnectError, ErrorSide, ProxyError, WakeError};
pub use listener::{
    serve_port, serve_port_on, serve_shared_http, serve_shared_http_on, SHUTDOWN_GRACE,
};
pub use protocol::{ParseProtocolError, Protocol};
pub use route::{PortRoute, Target, WakeSettings};
pub use tokio_util::sync::CancellationToken;
pub use upstream::{Io, Resolver, Upstream};
pub use wake_gate::WakeGate;
pub use workers::Workers;
