//! The same behaviour with connections served thread-per-core on `Workers`.
mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_router::{CancellationToken, Protocol, Workers};
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn on_workers(
    workers: &Arc<Workers>,
    upstream: Arc<TestUpstream>,
    route: aegis_router::PortRoute,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(aegis_router::serve_port_on(
        workers.clone(),
        listener,
        route,
        upstream,
        shutdown.clone(),
    ));
    (addr, shutdown, task)
}

#[tokio::test]
async fn fifty_http_clients_during_one_wake_on_workers() {
    init_tracing();
    let workers = Workers::new(2).unwrap();
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let (addr, shutdown, task) = on_workers(
        &workers,
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(10)),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(tokio::spawn(async move {
            let mut c = h1_client(addr).await;
            let resp = c
                .send_request(get(addr, "/").body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            (resp.status(), body_string(resp).await)
        }));
    }
    for c in clients {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello from the app");
    }
    assert_eq!(up.wakes(), 1);
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn tcp_echo_during_a_wake_on_workers() {
    let workers = Workers::new(2).unwrap();
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let (addr, _shutdown, _task) = on_workers(
        &workers,
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"on a worker").await.unwrap();
    let mut buf = [0u8; 11];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"on a worker");
    assert_eq!(up.wakes(), 1);
}

#[tokio::test]
async fn websocket_and_grpc_on_workers() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let workers = Workers::new(2).unwrap();
    let ws_app = websocket_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let (addr, _s1, _t1) = on_workers(
        &workers,
        up.clone(),
        route(ws_app.port, Protocol::Websocket, Duration::from_secs(5)),
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));

    let grpc = grpc_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let (addr, _s2, _t2) = on_workers(
        &workers,
        up.clone(),
        route(grpc.port, Protocol::Grpc, Duration::from_secs(5)),
    )
    .await;
    let mut client = h2_client(addr).await;
    let req = hyper::Request::post(format!("http://{addr}/test.Echo/Say"))
        .header("content-type", "application/grpc")
        .body(Full::new(grpc_frame(b"x")))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
}

#[tokio::test]
async fn the_shared_port_on_workers() {
    struct One(aegis_router::Target);
    impl aegis_router::Resolver for One {
        fn resolve(&self, name: &str) -> Option<aegis_router::Target> {
            (name == "web").then(|| self.0.clone())
        }
    }
    let workers = Workers::new(2).unwrap();
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let target = aegis_router::Target::new(
        up.clone(),
        aegis_router::PortRoute::new(app.port, Protocol::Http),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(aegis_router::serve_shared_http_on(
        workers,
        listener,
        Arc::new(One(target)),
        shutdown.clone(),
    ));
    let mut client = h1_client(addr).await;
    for (host, status) in [("web.localhost", 200), ("other.localhost", 404)] {
        let req = hyper::Request::get("/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status, "{host}");
        body_string(resp).await;
    }
    drop(client);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(up.open_connections(), 0);
}
