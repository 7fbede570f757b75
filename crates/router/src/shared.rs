//! The shared HTTP port: one listener for every HTTP app, routed by `Host`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ProxyBody;
use crate::conn::{local_driver, ConnCtx, LocalSpawner};
use crate::error::Chain;
use crate::headers;
use crate::protocol::Protocol;
use crate::route::Target;
use crate::upstream::Resolver;
use crate::{grpc, http};

/// One client connection of the shared port. Its requests may name several apps; each gets
/// its own context (upstream connection and activity guard) for the connection's lifetime.
struct SharedConn {
    peer: SocketAddr,
    resolver: Arc<dyn Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    local: LocalSpawner,
    ctxs: Mutex<Vec<Arc<ConnCtx>>>,
}

pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    resolver: Arc<dyn Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let (local, driver) = local_driver();
    let state = Arc::new(SharedConn {
        peer,
        resolver,
        shutdown: shutdown.clone(),
        tasks,
        local,
        ctxs: Mutex::new(Vec::new()),
    });
    let svc_state = state.clone();
    let service = service_fn(move |req| {
        let state = svc_state.clone();
        async move { Ok::<_, Infallible>(state.handle(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http::KEEP_ALIVE_IDLE);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let main = async {
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    let result = driver
        .run(main, || {
            for ctx in state.ctxs.lock().iter() {
                ctx.release_upstream();
            }
        })
        .await;
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %Chain(&*e), "shared-port connection failed");
    }
}

impl SharedConn {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let name = host.and_then(headers::app_name);
        let Some(target) = name.as_deref().and_then(|n| self.resolver.resolve(n)) else {
            return not_found(name.as_deref());
        };
        let protocol = target.route.protocol;
        let ctx = self.ctx_for(target);
        match protocol {
            Protocol::Http | Protocol::Websocket => http::handle(ctx, req).await,
            Protocol::Grpc => grpc::handle(ctx, req).await,
            Protocol::Tcp => plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "421 Misdirected Request: {:?} is a TCP service; connect to its own port.\n",
                    name.unwrap_or_default()
                ),
            ),
        }
    }

    /// This connection's context for `target`, created (and its activity guard taken) on
    /// the first request for it.
    fn ctx_for(&self, target: Target) -> Arc<ConnCtx> {
        let mut ctxs = self.ctxs.lock();
        if let Some(ctx) = ctxs.iter().find(|c| c.target.same_as(&target)) {
            return ctx.clone();
        }
        let guard = target.upstream.connection_opened();
        let ctx = ConnCtx::new(
            target,
            self.peer,
            guard,
            self.shutdown.clone(),
            self.tasks.clone(),
            Some(self.local.clone()),
        );
        ctxs.push(ctx.clone());
        ctx
    }
}

fn not_found(name: Option<&str>) -> Response<ProxyBody> {
    let text = match name {
        Some(name) => format!(
            "404 Not Found: no app named {name:?} is served here. Reach an app as \
             http://NAME.localhost:PORT/, with NAME as `aegis instance list` shows it.\n"
        ),
        None => "404 Not Found: this port serves apps by name. Reach an app as \
                 http://NAME.localhost:PORT/, with NAME as `aegis instance list` shows it.\n"
            .to_string(),
    };
    plain(StatusCode::NOT_FOUND, text)
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
