//! Accept loops: one per exposed port, and the shared HTTP port that routes by `Host`.
//! Every accepted connection takes its activity guard before anything else, so a client
//! waiting for a wake already counts as activity. On shutdown the listener stops accepting,
//! lets connections in flight finish for up to [`SHUTDOWN_GRACE`], then drops them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::ConnCtx;
use crate::protocol::Protocol;
use crate::route::{PortRoute, Target};
use crate::upstream::{Resolver, Upstream};
use crate::{grpc, http, shared, tcp};

/// How long connections in flight may carry on after shutdown fires.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves one exposed port until `shutdown` fires and its connections have finished (or the
/// grace is over). `listener` is already bound (the daemon chooses the host port).
pub async fn serve_port(
    listener: TcpListener,
    route: PortRoute,
    upstream: Arc<dyn Upstream>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        guest_port = route.guest_port,
        protocol = %route.protocol,
        "serving port"
    );
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let guard = upstream.connection_opened();
        let _ = stream.set_nodelay(true);
        match route.protocol {
            Protocol::Tcp => {
                let conn = tcp::serve(stream, peer, route, upstream.clone(), guard);
                tasks.spawn(with_grace(shutdown.clone(), conn));
            }
            Protocol::Http | Protocol::Websocket | Protocol::Grpc => {
                let target = Target::new(upstream.clone(), route);
                let ctx = ConnCtx::new(target, peer, guard, shutdown.clone(), tasks.clone());
                if route.protocol == Protocol::Grpc {
                    tasks.spawn(with_grace(
                        shutdown.clone(),
                        grpc::serve_connection(stream, ctx),
                    ));
                } else {
                    tasks.spawn(with_grace(
                        shutdown.clone(),
                        http::serve_connection(stream, ctx),
                    ));
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Serves the shared HTTP port: each request goes to the app its `Host` names
/// (`NAME.localhost[:port]` or `NAME`), resolved by `resolver`; each app's port settings
/// (protocol, wake behaviour) come with its [`Target`]. HTTP/1.1 and HTTP/2 with prior
/// knowledge are both accepted, so gRPC apps are reachable by name too.
pub async fn serve_shared_http(
    listener: TcpListener,
    resolver: Arc<dyn Resolver>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    tracing::info!(addr = ?listener.local_addr().ok(), "serving the shared HTTP port");
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let conn = shared::serve_connection(
            stream,
            peer,
            resolver.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        tasks.spawn(with_grace(shutdown.clone(), conn));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// The next connection, or `None` once shutdown fires.
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep
                    // serving, without spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
}

/// Runs `fut` to completion, or until [`SHUTDOWN_GRACE`] after `shutdown` fired.
pub(crate) async fn with_grace<F: Future<Output = ()>>(shutdown: CancellationToken, fut: F) {
    tokio::select! {
        _ = fut => {}
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::debug!("connection dropped at the end of the shutdown grace"),
    }
}
