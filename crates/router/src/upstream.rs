//! What the router needs from whatever serves an app. The router knows nothing of VMs: the
//! daemon implements [`Upstream`] for an instance (wake = resume / restore / boot, connect =
//! a stream through the host<->guest session) and [`Resolver`] for the shared HTTP port.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::activity::ActivityGuard;
use crate::error::{ConnectError, WakeError};
use crate::route::Target;

/// A byte stream to the app: a TCP socket in tests, an `aegis_proto::io::StreamIo` over the
/// instance's session in the daemon.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One instance (or anything else that can sleep) as the router sees it.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Whether the app accepts connections right now without a wake. Called on every
    /// connection, request and write burst: must be cheap (an atomic load).
    fn is_ready(&self) -> bool;

    /// Wakes the instance if needed and returns once the app accepts connections (the guest
    /// port is open, not merely the VM booted). Concurrent calls must share one wake (back it
    /// with [`crate::WakeGate`]). The router bounds the wait with the port's deadline by
    /// dropping this future; the wake itself should carry on (`WakeGate` runs it in its own
    /// task).
    async fn ensure_ready(&self) -> Result<(), WakeError>;

    /// Opens a byte stream to `127.0.0.1:guest_port` inside the instance.
    async fn connect(&self, guest_port: u16) -> Result<Box<dyn Io>, ConnectError>;

    /// Called once per client connection before anything else, including the wake: the
    /// connection counts as activity until the guard is dropped.
    fn connection_opened(&self) -> ActivityGuard;

    /// Bytes moved on some connection. Rate-limited by the router to about once per second
    /// per connection.
    fn touch(&self);
}

/// Maps an app name to its target for the shared HTTP port.
pub trait Resolver: Send + Sync + 'static {
    /// `name` is the request's host with any port, trailing dot and `.localhost` suffix
    /// removed, lower-cased: `http://web.localhost:8099/` and `Host: web` both ask for `web`.
    fn resolve(&self, name: &str) -> Option<Target>;
}
