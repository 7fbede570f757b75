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

use crate::conn::{local_driver, ConnCtx};
use crate::protocol::Protocol;
use crate::route::{PortRoute, Target};
use crate::upstream::{Resolver, Upstream};
use crate::workers::Workers;
use crate::{grpc, http, shared, tcp};

/// How long connections in flight may carry on after shutdown fires.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves one exposed port until `shutdown` fires and its connections have finished (or the
/// grace is over). `listener` is already bound (the daemon chooses the host port).
/// Connections are served on the calling runtime; see [`serve_port_on`] for thread-per-core.
pub async fn serve_port(
    listener: TcpListener,
    route: PortRoute,
    upstream: Arc<dyn Upstream>,
    shutdown: CancellationToken,
) {
    port_loop(listener, route, upstream, shutdown, None).await
}

/// [`serve_port`], with each connection served on one of `workers`' threads.
pub async fn serve_port_on(
    workers: Arc<Workers>,
    listener: TcpListener,
    route: PortRoute,
    upstream: Arc<dyn Upstream>,
    shutdown: CancellationToken,
) {
    port_loop(listener, route, upstream, shutdown, Some(workers)).await
}

async fn port_loop(
    listener: TcpListener,
    route: PortRoute,
    upstream: Arc<dyn Upstream>,
    shutdown: CancellationToken,
    workers: Option<Arc<Workers>>,
) {
    let tasks = TaskTracker::new();
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        guest_port = route.guest_port,
        protocol = %route.protocol,
        workers = workers.as_ref().map_or(0, |w| w.len()),
        "serving port"
    );
    let spawner = ConnSpawner {
        tasks: &tasks,
        workers: workers.as_deref(),
        shutdown: &shutdown,
    };
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let guard = upstream.connection_opened();
        let _ = stream.set_nodelay(true);
        let sd = shutdown.clone();
        match route.protocol {
            Protocol::Tcp => {
                let upstream = upstream.clone();
                spawner.spawn(stream, move |s| tcp::serve(s, peer, route, upstream, guard));
            }
            Protocol::Grpc => {
                let target = Target::new(upstream.clone(), route);
                let ctx = ConnCtx::new(target, peer, guard, sd, tasks.clone(), None);
                spawner.spawn(stream, move |s| grpc::serve_connection(s, ctx));
            }
            Protocol::Http | Protocol::Websocket => {
                let target = Target::new(upstream.clone(), route);
                let (local, driver) = local_driver();
                let ctx = ConnCtx::new(target, peer, guard, sd, tasks.clone(), Some(local));
                spawner.spawn(stream, move |s| http::serve_connection(s, ctx, driver));
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
    shared_loop(listener, resolver, shutdown, None).await
}

/// [`serve_shared_http`], with each connection served on one of `workers`' threads.
pub async fn serve_shared_http_on(
    workers: Arc<Workers>,
    listener: TcpListener,
    resolver: Arc<dyn Resolver>,
    shutdown: CancellationToken,
) {
    shared_loop(listener, resolver, shutdown, Some(workers)).await
}

async fn shared_loop(
    listener: TcpListener,
    resolver: Arc<dyn Resolver>,
    shutdown: CancellationToken,
    workers: Option<Arc<Workers>>,
) {
    let tasks = TaskTracker::new();
    tracing::info!(addr = ?listener.local_addr().ok(), "serving the shared HTTP port");
    let spawner = ConnSpawner {
        tasks: &tasks,
        workers: workers.as_deref(),
        shutdown: &shutdown,
    };
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let resolver = resolver.clone();
        let sd = shutdown.clone();
        let t = tasks.clone();
        spawner.spawn(stream, move |s| {
            shared::serve_connection(s, peer, resolver, sd, t)
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Starts connection tasks, here or on a worker, tracked and bounded by the shutdown grace.
struct ConnSpawner<'a> {
    tasks: &'a TaskTracker,
    workers: Option<&'a Workers>,
    shutdown: &'a CancellationToken,
}

impl ConnSpawner<'_> {
    fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let Some(workers) = self.workers else {
            self.tasks.spawn(with_grace(shutdown, serve(stream)));
            return;
        };
        // Re-registered with the worker's reactor on its own thread.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        workers.spawn(self.tasks.track_future(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => with_grace(shutdown, serve(stream)).await,
                Err(e) => tracing::warn!(error = %e, "cannot adopt a connection on a worker"),
            }
        }));
    }
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
