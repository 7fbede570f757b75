//! One client connection's state: its target, its activity guard, and the upstream HTTP
//! connection(s) its requests go to. One upstream connection per client connection (HTTP/1)
//! or one multiplexed HTTP/2 connection (gRPC), opened on first use and re-opened if it
//! closed, e.g. because the instance was restored from a snapshot and its session is new.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::{ActivityGuard, Throttle};
use crate::error::{Chain, ProxyError};
use crate::route::Target;

pub(crate) struct ConnCtx {
    pub(crate) target: Target,
    pub(crate) client: SocketAddr,
    /// `client`'s address as an `X-Forwarded-For` element.
    pub(crate) forwarded_for: hyper::header::HeaderValue,
    /// Fires when the listener shuts down; upgraded sockets watch it too.
    pub(crate) shutdown: CancellationToken,
    /// The listener's tasks, so that it waits for upgraded sockets as well.
    pub(crate) tasks: TaskTracker,
    throttle: Throttle,
    h1: Mutex<Option<http1::SendRequest<Incoming>>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Incoming>>>,
    /// Runs upstream HTTP/1 connections inside the client connection's task.
    local: Option<LocalSpawner>,
    _guard: ActivityGuard,
}

type LocalFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Hands futures to [`run_local`], which polls them in the task of the client connection.
#[derive(Clone)]
pub(crate) struct LocalSpawner(mpsc::UnboundedSender<LocalFuture>);

impl LocalSpawner {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        if let Err(mpsc::error::SendError(fut)) = self.0.send(Box::pin(fut)) {
            tokio::spawn(fut);
        }
    }
}

/// Runs `main` (a client connection) and, in the same task, every future handed to the
/// returned spawner (its upstream connections): a request and its upstream exchange then
/// never cross threads, which is most of the cost of a proxied request on a multi-threaded
/// runtime. Once `main` ends, `finish` releases what keeps the side futures alive (the cached
/// upstream senders) and they are run to completion.
pub(crate) fn local_driver() -> (LocalSpawner, LocalDriver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (LocalSpawner(tx), LocalDriver { rx })
}

pub(crate) struct LocalDriver {
    rx: mpsc::UnboundedReceiver<LocalFuture>,
}

impl LocalDriver {
    pub(crate) async fn run<F: Future>(mut self, main: F, finish: impl FnOnce()) -> F::Output {
        let mut side = FuturesUnordered::new();
        tokio::pin!(main);
        let out = loop {
            tokio::select! {
                biased;
                Some(fut) = self.rx.recv() => side.push(fut),
                Some(()) = side.next(), if !side.is_empty() => {}
                out = &mut main => break out,
            }
        };
        finish();
        self.rx.close();
        while let Ok(fut) = self.rx.try_recv() {
            side.push(fut);
        }
        while side.next().await.is_some() {}
        out
    }
}

impl ConnCtx {
    pub(crate) fn new(
        target: Target,
        client: SocketAddr,
        guard: ActivityGuard,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        local: Option<LocalSpawner>,
    ) -> Arc<Self> {
        Arc::new(ConnCtx {
            target,
            client,
            forwarded_for: crate::headers::forwarded_for(client.ip()),
            shutdown,
            tasks,
            throttle: Throttle::new(),
            h1: Mutex::new(None),
            h2: tokio::sync::Mutex::new(None),
            local,
            _guard: guard,
        })
    }

    /// Drops the cached upstream connections (the client connection ended).
    pub(crate) fn release_upstream(&self) {
        self.h1.lock().take();
    }

    /// Reports traffic, at most about once a second per connection.
    pub(crate) fn touch(&self) {
        if self.throttle.fire() {
            self.target.upstream.touch();
        }
    }

    async fn connect(&self) -> Result<TokioIo<Box<dyn crate::Io>>, ProxyError> {
        let io = self
            .target
            .upstream
            .connect(self.target.route.guest_port)
            .await
            .map_err(ProxyError::Connect)?;
        Ok(TokioIo::new(io))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Incoming>, ProxyError> {
        let io = self.connect().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let conn = async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %Chain(&e), "upstream HTTP/1 connection failed");
            }
        };
        match &self.local {
            Some(local) => local.spawn(conn),
            None => drop(tokio::spawn(conn)),
        }
        Ok(sender)
    }

    /// Sends `req` on this connection's upstream HTTP/1 connection. A request that a stale
    /// connection did not take is retried once on a fresh one (nothing reached the app).
    pub(crate) async fn send_h1(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut force_new = false;
        loop {
            let cached = if force_new {
                None
            } else {
                self.h1.lock().take().filter(|s| !s.is_closed())
            };
            let fresh = cached.is_none();
            let mut sender = match cached {
                Some(s) => s,
                None => self.connect_h1().await?,
            };
            // HTTP/1: waits until the previous response body is complete.
            if let Err(e) = sender.ready().await {
                if fresh {
                    return Err(ProxyError::NotSent(e));
                }
                force_new = true;
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    *self.h1.lock() = Some(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        force_new = true;
                    }
                    Some(_) => return Err(ProxyError::NotSent(e.into_error())),
                    None => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Incoming>, ProxyError> {
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %Chain(&e), "upstream HTTP/2 connection failed");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on this connection's upstream HTTP/2 connection, shared by all of its
    /// concurrent requests; retried once on a fresh connection if the old one did not take it.
    pub(crate) async fn send_h2(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut force_new = false;
        loop {
            let (mut sender, fresh) = {
                let mut slot = self.h2.lock().await;
                match slot.as_ref().filter(|s| !force_new && !s.is_closed()) {
                    Some(s) => (s.clone(), false),
                    None => {
                        let s = self.connect_h2().await?;
                        *slot = Some(s.clone());
                        (s, true)
                    }
                }
            };
            if let Err(e) = sender.ready().await {
                if fresh {
                    return Err(ProxyError::NotSent(e));
                }
                force_new = true;
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        force_new = true;
                    }
                    Some(_) => return Err(ProxyError::NotSent(e.into_error())),
                    None => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
    }
}
