//! What the router is told about a port: which guest port, which protocol, how to behave
//! while the instance wakes.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::Protocol;
use crate::upstream::Upstream;

/// How long and how the router holds clients while an instance wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeSettings {
    /// Hold a client at most this long for the instance to become ready; then HTTP answers
    /// 503, gRPC `UNAVAILABLE`, TCP closes the connection.
    pub deadline: Duration,
    /// HTTP only: a browser navigating to a sleeping app gets a self-refreshing loading page
    /// at once instead of a blank wait.
    pub loading_page: bool,
}

impl WakeSettings {
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
}

impl Default for WakeSettings {
    fn default() -> Self {
        WakeSettings {
            deadline: Self::DEFAULT_DEADLINE,
            loading_page: true,
        }
    }
}

/// One exposed port of a ServeTarget, as the router serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRoute {
    /// The port the app listens on inside the guest (on 127.0.0.1).
    pub guest_port: u16,
    pub protocol: Protocol,
    pub wake: WakeSettings,
}

impl PortRoute {
    pub fn new(guest_port: u16, protocol: Protocol) -> Self {
        PortRoute {
            guest_port,
            protocol,
            wake: WakeSettings::default(),
        }
    }
}

/// A resolved destination: an upstream and how to serve it.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<dyn Upstream>,
    pub route: PortRoute,
}

impl Target {
    pub fn new(upstream: Arc<dyn Upstream>, route: PortRoute) -> Self {
        Target { upstream, route }
    }

    /// Whether two targets are the same port of the same upstream.
    pub(crate) fn same_as(&self, other: &Target) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.upstream), Arc::as_ptr(&other.upstream))
            && self.route.guest_port == other.route.guest_port
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}
