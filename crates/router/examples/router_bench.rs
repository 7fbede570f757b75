//! Processes for `bench/router/run.sh` (steady-state HTTP throughput and latency):
//!
//! - `router_bench backend ADDR`: a minimal HTTP/1.1 app (12-byte body), the common backend;
//! - `router_bench router LISTEN BACKEND`: an Aegis router port (protocol `http`) in front of
//!   BACKEND through an always-ready upstream, i.e. the router's steady state: readiness
//!   check, activity accounting, header rewriting and proxying, no wake. Connections are
//!   served on `BENCH_THREADS` [`Workers`] threads (default 2), or with
//!   `BENCH_RT=multi-thread` on a work-stealing runtime of `BENCH_THREADS` workers.
//!
//! Both exit by themselves after `BENCH_MAX_SECS` (default 600) so that a forgotten process
//! cannot linger.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aegis_router::{
    ActivityGuard, ActivityTracker, CancellationToken, ConnectError, Io, PortRoute, Protocol,
    Upstream, WakeError, Workers,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

struct LoopbackUpstream {
    backend: SocketAddr,
    activity: Arc<ActivityTracker>,
}

#[async_trait]
impl Upstream for LoopbackUpstream {
    fn is_ready(&self) -> bool {
        true
    }

    async fn ensure_ready(&self) -> Result<(), WakeError> {
        Ok(())
    }

    async fn connect(&self, _guest_port: u16) -> Result<Box<dyn Io>, ConnectError> {
        let s = TcpStream::connect(self.backend)
            .await
            .map_err(|e| ConnectError::Failed {
                port: self.backend.port(),
                source: e.into(),
            })?;
        let _ = s.set_nodelay(true);
        Ok(Box::new(s))
    }

    fn connection_opened(&self) -> ActivityGuard {
        self.activity.guard()
    }

    fn touch(&self) {
        self.activity.touch();
    }
}

async fn backend(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind backend");
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"hello world\n",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn router(listen: SocketAddr, backend: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind router");
    let upstream = Arc::new(LoopbackUpstream {
        backend,
        activity: ActivityTracker::new(),
    });
    let route = PortRoute::new(backend.port(), Protocol::Http);
    let shutdown = CancellationToken::new();
    match std::env::var("BENCH_RT").as_deref() {
        // The work-stealing runtime serves the connections.
        Ok("multi-thread") => aegis_router::serve_port(listener, route, upstream, shutdown).await,
        // Thread per core: how the daemon runs the router.
        _ => {
            let workers = Workers::new(env_num("BENCH_THREADS", 2) as usize).expect("workers");
            aegis_router::serve_port_on(workers, listener, route, upstream, shutdown).await
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: router_bench backend ADDR | router_bench router LISTEN BACKEND";
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    // The accept loop (and the backend) run here; `router` mode serves connections on
    // `Workers` unless BENCH_RT=multi-thread.
    let threads = match (
        args.get(1).map(String::as_str),
        std::env::var("BENCH_RT").as_deref(),
    ) {
        (Some("router"), Ok("multi-thread")) | (Some("backend"), _) => env_num("BENCH_THREADS", 2),
        _ => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()
        .expect("runtime");
    let max = Duration::from_secs(env_num("BENCH_MAX_SECS", 600));
    runtime.block_on(async {
        let serve = async {
            match args.get(1).map(String::as_str) {
                Some("backend") => backend(addr(2)).await,
                Some("router") => router(addr(2), addr(3)).await,
                _ => panic!("{usage}"),
            }
        };
        let _ = tokio::time::timeout(max, serve).await;
    });
}
