//! Test doubles: an upstream with controllable readiness in front of real loopback servers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_router::{
    ActivityGuard, ActivityTracker, CancellationToken, ConnectError, Io, PortRoute, Protocol,
    Upstream, WakeError, WakeGate,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct State {
    ready: AtomicBool,
    fail_wake: AtomicBool,
    wake_delay: Mutex<Duration>,
    wakes: AtomicUsize,
    touches: AtomicUsize,
    connects: AtomicUsize,
}

/// An instance stand-in: "asleep" until `ensure_ready` has slept `wake_delay`; apps are
/// loopback servers and a guest port is their loopback port.
pub struct TestUpstream {
    state: Arc<State>,
    gate: WakeGate,
    pub activity: Arc<ActivityTracker>,
}

impl TestUpstream {
    pub fn asleep(wake_delay: Duration) -> Arc<Self> {
        Arc::new(TestUpstream {
            state: Arc::new(State {
                ready: AtomicBool::new(false),
                fail_wake: AtomicBool::new(false),
                wake_delay: Mutex::new(wake_delay),
                wakes: AtomicUsize::new(0),
                touches: AtomicUsize::new(0),
                connects: AtomicUsize::new(0),
            }),
            gate: WakeGate::new(),
            activity: ActivityTracker::new(),
        })
    }

    pub fn awake() -> Arc<Self> {
        let u = Self::asleep(Duration::ZERO);
        u.state.ready.store(true, Ordering::SeqCst);
        u
    }

    /// Puts the instance to sleep (as the daemon's idle timer would).
    pub fn sleep(&self) {
        self.state.ready.store(false, Ordering::SeqCst);
    }

    pub fn fail_wakes(&self) {
        self.state.fail_wake.store(true, Ordering::SeqCst);
    }

    pub fn wakes(&self) -> usize {
        self.state.wakes.load(Ordering::SeqCst)
    }

    pub fn touches(&self) -> usize {
        self.state.touches.load(Ordering::SeqCst)
    }

    pub fn connects(&self) -> usize {
        self.state.connects.load(Ordering::SeqCst)
    }

    pub fn open_connections(&self) -> usize {
        self.activity.open_connections()
    }

    pub fn ready(&self) -> bool {
        self.state.ready.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Upstream for TestUpstream {
    fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    async fn ensure_ready(&self) -> Result<(), WakeError> {
        if self.is_ready() {
            return Ok(());
        }
        let state = self.state.clone();
        self.gate
            .run(|| async move {
                state.wakes.fetch_add(1, Ordering::SeqCst);
                let delay = *state.wake_delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if state.fail_wake.load(Ordering::SeqCst) {
                    return Err(WakeError::failed("the test VM refused to boot"));
                }
                state.ready.store(true, Ordering::Release);
                Ok(())
            })
            .await
    }

    async fn connect(&self, guest_port: u16) -> Result<Box<dyn Io>, ConnectError> {
        if !self.is_ready() {
            return Err(ConnectError::NotRunning);
        }
        self.state.connects.fetch_add(1, Ordering::SeqCst);
        match TcpStream::connect(("127.0.0.1", guest_port)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ConnectError::Refused { port: guest_port })
            }
            Err(e) => Err(ConnectError::Failed {
                port: guest_port,
                source: e.into(),
            }),
        }
    }

    fn connection_opened(&self) -> ActivityGuard {
        self.activity.guard()
    }

    fn touch(&self) {
        self.state.touches.fetch_add(1, Ordering::SeqCst);
        self.activity.touch();
    }
}

/// A router port in front of `upstream`, on an ephemeral loopback port.
pub struct Router {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Router {
    pub async fn port(upstream: Arc<TestUpstream>, route: PortRoute) -> Router {
        Self::port_dyn(upstream, route).await
    }

    pub async fn port_dyn(upstream: Arc<dyn Upstream>, route: PortRoute) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(aegis_router::serve_port(
            listener,
            route,
            upstream,
            shutdown.clone(),
        ));
        Router {
            addr,
            shutdown,
            task,
        }
    }

    pub async fn shared(resolver: Arc<dyn aegis_router::Resolver>) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(aegis_router::serve_shared_http(
            listener,
            resolver,
            shutdown.clone(),
        ));
        Router {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub fn route(port: u16, protocol: Protocol, deadline: Duration) -> PortRoute {
    let mut r = PortRoute::new(port, protocol);
    r.wake.deadline = deadline;
    r
}

/// A loopback server; aborting it drops every connection it serves.
pub struct App {
    pub port: u16,
    task: JoinHandle<()>,
    /// Requests that reached a handler which never answers (`/hang` of [`http_app`]).
    hanging: Arc<AtomicUsize>,
}

impl App {
    pub fn kill(&self) {
        self.task.abort();
    }

    /// How many requests are held in the app's never-answering handler: a test waits for
    /// this instead of sleeping to be sure a request is in flight.
    pub fn hanging(&self) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_each<F, Fut>(handler: F) -> App
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((s, _)) = r else { return };
                    conns.spawn(handler(s));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    App {
        port,
        task,
        hanging: Arc::default(),
    }
}

/// Echoes every byte; half-closes after the client does.
pub async fn echo_app() -> App {
    serve_each(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// HTTP/1.1: `/` answers "hello from the app" and reports what it saw in `x-seen-*`
/// headers; `/hang` never answers; `/close` answers with `Connection: close`; `/echo`
/// returns the request body.
pub async fn http_app() -> App {
    let hanging = Arc::new(AtomicUsize::new(0));
    let counter = hanging.clone();
    let mut app = serve_each(move |s| {
        let hanging = counter.clone();
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let hanging = hanging.clone();
                async move {
                    let seen = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap_or("?").to_string())
                            .unwrap_or_default()
                    };
                    let mut resp = Response::builder()
                        .header("x-seen-host", seen("host"))
                        .header("x-seen-xff", seen("x-forwarded-for"))
                        .header("x-seen-proto", seen("x-forwarded-proto"))
                        .header("x-seen-secret", seen("x-secret"))
                        .header("x-seen-connection", seen("connection"));
                    let body = match req.uri().path() {
                        "/hang" => {
                            hanging.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Bytes::new()
                        }
                        "/close" => {
                            resp = resp.header("connection", "close");
                            Bytes::from_static(b"closing")
                        }
                        "/echo" => req.into_body().collect().await.unwrap().to_bytes(),
                        _ => Bytes::from_static(b"hello from the app"),
                    };
                    Ok::<_, Infallible>(resp.body(Full::new(body)).unwrap())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
    })
    .await;
    app.hanging = hanging;
    app
}

/// A gRPC-ish h2c server: echoes the request body (already gRPC-framed) with
/// `grpc-status: 0` trailers; reports the `grpc-timeout` it saw.
pub async fn grpc_app() -> App {
    serve_each(|s| async move {
        let svc = service_fn(|req: Request<Incoming>| async move {
            let timeout = req
                .headers()
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
            let resp = Response::builder()
                .header("content-type", "application/grpc")
                .header("x-seen-grpc-timeout", timeout)
                .body(StreamBody::new(futures::stream::iter(frames)))
                .unwrap();
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

/// A WebSocket echo server.
pub async fn websocket_app() -> App {
    use futures::{SinkExt, StreamExt};
    serve_each(|s| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A port where something accepts and then hangs up on every connection.
pub async fn rude_app() -> App {
    serve_each(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
    })
    .await
}

/// An HTTP/1.1 client connection.
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 prior-knowledge client connection.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn get(addr: SocketAddr, path: &str) -> hyper::http::request::Builder {
    Request::get(format!("http://{addr}{path}")).header("host", addr.to_string())
}

pub async fn body_string(resp: Response<Incoming>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// A gRPC message frame: uncompressed flag, big-endian length, payload.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// How long one whole test may take before it fails.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs a test's body, failing it after [`TEST_LIMIT`]: a test whose upstream never answers
/// must fail, not hang the run.
pub async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .unwrap_or_else(|_| {
            panic!("the test did not finish within {TEST_LIMIT:?}: something waits forever")
        })
}

/// Waits until `cond` holds, polling; panics after `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
