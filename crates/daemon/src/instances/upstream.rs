//! The router's view of an instance.

use std::sync::Arc;

use aegis_proto::io::StreamIo;
use aegis_router::{ActivityGuard, ConnectError, Io, Upstream, WakeError};
use async_trait::async_trait;

use super::connector::GuestConnectError;
use super::runtime::InstanceRuntime;

pub struct InstanceUpstream(pub Arc<InstanceRuntime>);

#[async_trait]
impl Upstream for InstanceUpstream {
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }

    async fn ensure_ready(&self) -> Result<(), WakeError> {
        self.0.ensure_ready().await
    }

    async fn connect(&self, guest_port: u16) -> Result<Box<dyn Io>, ConnectError> {
        let _connecting = Connecting::new(&self.0);
        if !self.0.is_ready() {
            // Paused (or stopped) between the router's wake and this connect: wake again.
            self.0
                .ensure_ready()
                .await
                .map_err(|e| ConnectError::Failed {
                    port: guest_port,
                    source: Box::new(e),
                })?;
        }
        let connector = self.0.connector().ok_or(ConnectError::NotRunning)?;
        // A burst of connections can overflow the app's listen backlog; the guest's TCP then
        // retries SYNs for seconds. Allow as long as a wake may take.
        match connector.connect(guest_port, self.0.wake_timeout()).await {
            Ok(stream) => Ok(Box::new(StreamIo::from(stream))),
            Err(GuestConnectError::Refused { port, reason }) => {
                tracing::debug!(instance = %self.0.id, port, %reason, "guest refused a connection");
                Err(ConnectError::Refused { port })
            }
            Err(e) => Err(ConnectError::Failed {
                port: guest_port,
                source: Box::new(e),
            }),
        }
    }

    fn connection_opened(&self) -> ActivityGuard {
        self.0.activity.guard()
    }

    fn touch(&self) {
        self.0.activity.touch();
    }
}

/// Counts a connect in flight for the idle timer (see `InstanceRuntime::connecting`).
struct Connecting<'a>(&'a InstanceRuntime);

impl<'a> Connecting<'a> {
    fn new(rt: &'a InstanceRuntime) -> Self {
        rt.connecting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Connecting(rt)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0
            .connecting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
