//! The router's view of one port of an instance: the instance's upstream, with its open
//! connections also counted per guest port (for `awake_because`).

use std::sync::Arc;

use aegis_api::PortProtocol;
use aegis_router::{ActivityGuard, ConnectError, Io, Upstream, WakeError};
use async_trait::async_trait;

use super::runtime::InstanceRuntime;

pub struct PortUpstream {
    inner: Arc<dyn Upstream>,
    rt: Arc<InstanceRuntime>,
    port: u16,
    protocol: PortProtocol,
}

impl PortUpstream {
    /// The upstream of `rt`'s guest `port`, over `inner` (the instance's one upstream).
    pub fn for_port(
        inner: Arc<dyn Upstream>,
        rt: Arc<InstanceRuntime>,
        port: u16,
        protocol: PortProtocol,
    ) -> Arc<dyn Upstream> {
        Arc::new(PortUpstream {
            inner,
            rt,
            port,
            protocol,
        })
    }
}

#[async_trait]
impl Upstream for PortUpstream {
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    async fn ensure_ready(&self) -> Result<(), WakeError> {
        self.inner.ensure_ready().await
    }

    async fn connect(&self, guest_port: u16) -> Result<Box<dyn Io>, ConnectError> {
        self.inner.connect(guest_port).await
    }

    fn connection_opened(&self) -> ActivityGuard {
        let tracked = self.inner.connection_opened();
        let closed = self.rt.holders.connection_opened(self.port, self.protocol);
        ActivityGuard::new(move || {
            closed();
            drop(tracked);
        })
    }

    fn touch(&self) {
        self.inner.touch();
    }
}
