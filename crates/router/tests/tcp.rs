//! TCP ports: silent hold during a wake, splice, resets on failure, activity.
mod common;

use std::time::{Duration, Instant};

use aegis_router::Protocol;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_connecting_while_asleep_gets_its_echo() {
    init_tracing();
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;

    let start = Instant::now();
    let mut c = TcpStream::connect(router.addr).await.unwrap();
    c.write_all(b"ping while asleep").await.unwrap();
    let mut buf = [0u8; 17];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping while asleep");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "held for the wake"
    );
    assert_eq!(up.wakes(), 1);

    // Half-close: the echo server ends its side after ours, and the router relays both.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
}

#[tokio::test]
async fn a_large_transfer_is_byte_exact_and_reported_as_activity() {
    let app = echo_app().await;
    let up = TestUpstream::awake();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;
    let c = TcpStream::connect(router.addr).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert!(got == data);
    assert!(up.touches() >= 1, "traffic is reported");
    assert_eq!(up.wakes(), 0);
}

#[tokio::test]
async fn a_failed_wake_resets_the_client() {
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(20));
    up.fail_wakes();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;
    let mut c = TcpStream::connect(router.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let r = c.read(&mut buf).await;
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
}

#[tokio::test]
async fn the_deadline_resets_the_client() {
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_secs(5));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_millis(100)),
    )
    .await;
    let start = Instant::now();
    let mut c = TcpStream::connect(router.addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert!(c.read(&mut buf).await.is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_sleeping_upstream_is_woken_by_the_next_byte() {
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(50));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;
    let mut c = TcpStream::connect(router.addr).await.unwrap();
    c.write_all(b"a").await.unwrap();
    c.read_exact(&mut [0u8; 1]).await.unwrap();
    assert_eq!(up.wakes(), 1);
    // The `idle` policy paused the instance under an open, quiet connection.
    up.sleep();
    c.write_all(b"b").await.unwrap();
    let mut buf = [0u8; 1];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"b");
    assert_eq!(up.wakes(), 2);
}

#[tokio::test]
async fn connections_count_as_activity_from_accept_to_close() {
    let app = echo_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Tcp, Duration::from_secs(5)),
    )
    .await;
    let c1 = TcpStream::connect(router.addr).await.unwrap();
    let c2 = TcpStream::connect(router.addr).await.unwrap();
    // Counted while still held for the wake.
    eventually(Duration::from_secs(1), || up.open_connections() == 2).await;
    assert!(!up.ready());
    drop(c1);
    drop(c2);
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
}
