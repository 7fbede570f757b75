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
