//! TCP ports: the accepted connection is held silently while the instance wakes, then
//! spliced with a stream to the guest port. A wake that fails or overruns the deadline resets
//! the client connection: a TCP client has no other way to learn why.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::activity::ActivityGuard;
use crate::error::{Chain, ErrorSide, ProxyError};
use crate::hold;
use crate::route::PortRoute;
use crate::splice::splice;
use crate::upstream::Upstream;

pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    route: PortRoute,
    upstream: Arc<dyn Upstream>,
    guard: ActivityGuard,
) {
    let port = route.guest_port;
    let deadline = route.wake.deadline;
    let connected = async {
        hold::until_ready(&*upstream, deadline).await?;
        upstream.connect(port).await.map_err(ProxyError::Connect)
    }
    .await;
    let io = match connected {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(%peer, guest_port = port, error = %Chain(&e), "resetting TCP client");
            // RST rather than FIN: the client must not take this for an orderly end.
            let _ = client.set_zero_linger();
            return;
        }
    };
    match splice(client, io, upstream, deadline).await {
        Ok(n) => tracing::debug!(
            %peer,
            guest_port = port,
            to_upstream = n.to_upstream,
            to_client = n.to_client,
            "TCP connection closed"
        ),
        Err(e) if e.side() == ErrorSide::Downstream => {
            tracing::debug!(%peer, guest_port = port, error = %Chain(&e), "TCP client failed")
        }
        Err(e) => {
            tracing::info!(%peer, guest_port = port, error = %Chain(&e), "TCP upstream failed")
        }
    }
    drop(guard);
}
