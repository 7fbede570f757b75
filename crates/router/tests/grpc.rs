//! gRPC ports: calls queued during a wake, deadlines honoured, trailers-only statuses.
mod common;

use std::time::{Duration, Instant};

use aegis_router::Protocol;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

fn call(
    addr: std::net::SocketAddr,
    payload: &[u8],
    timeout: Option<&str>,
) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::post(format!("http://{addr}/test.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(Full::new(grpc_frame(payload))).unwrap()
}

/// Status from trailers, or from the headers of a trailers-only response.
async fn grpc_result(
    resp: hyper::Response<hyper::body::Incoming>,
) -> (String, Bytes, hyper::HeaderMap) {
    let headers = resp.headers().clone();
    if let Some(s) = headers.get("grpc-status") {
        return (s.to_str().unwrap().to_string(), Bytes::new(), headers);
    }
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers["grpc-status"].to_str().unwrap().to_string();
    (status, collected.to_bytes(), headers)
}

#[tokio::test]
async fn calls_queued_during_the_wake_are_answered() {
    init_tracing();
    let app = grpc_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Grpc, Duration::from_secs(5)),
    )
    .await;
    let client = h2_client(router.addr).await;
    // Several calls multiplexed on one connection, all queued during the same wake.
    let mut calls = Vec::new();
    for i in 0..5u8 {
        let mut c = client.clone();
        let addr = router.addr;
        calls.push(tokio::spawn(async move {
            let resp = c
                .send_request(call(addr, &[i; 10], Some("5S")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            grpc_result(resp).await
        }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        let (status, body, headers) = c.await.unwrap();
        assert_eq!(status, "0");
        assert_eq!(body, grpc_frame(&[i as u8; 10]));
        // The time spent waiting was taken off the deadline the app sees.
        let seen = headers["x-seen-grpc-timeout"].to_str().unwrap();
        assert!(seen.ends_with('u'), "{seen}");
        let micros: u64 = seen.trim_end_matches('u').parse().unwrap();
        assert!(micros < 4_800_000, "{seen}");
    }
    assert_eq!(up.wakes(), 1);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_wake_is_deadline_exceeded() {
    let app = grpc_app().await;
    // The brief's case: `grpc-timeout: 50m` against a 500 ms wake.
    let up = TestUpstream::asleep(Duration::from_millis(500));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Grpc, Duration::from_secs(5)),
    )
    .await;
    let mut client = h2_client(router.addr).await;
    let start = Instant::now();
    let resp = client
        .send_request(call(router.addr, b"late", Some("50m")))
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(
        !up.ready(),
        "answered before the wake finished ({waited:?})"
    );
    let (status, _, headers) = grpc_result(resp).await;
    assert_eq!(status, "4");
    assert!(headers["grpc-message"].to_str().unwrap().contains("waking"));
    // The wake carries on for the next caller.
    let resp = client
        .send_request(call(router.addr, b"later", Some("5S")))
        .await
        .unwrap();
    assert_eq!(grpc_result(resp).await.0, "0");
    assert_eq!(up.wakes(), 1);
}

#[tokio::test]
async fn a_failed_wake_is_unavailable() {
    let app = grpc_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(10));
    up.fail_wakes();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Grpc, Duration::from_secs(5)),
    )
    .await;
    let mut client = h2_client(router.addr).await;
    let resp = client
        .send_request(call(router.addr, b"x", None))
        .await
        .unwrap();
    let (status, _, headers) = grpc_result(resp).await;
    assert_eq!(status, "14");
    assert!(
        headers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("refused%20to%20boot")
            || headers["grpc-message"]
                .to_str()
                .unwrap()
                .contains("refused to boot")
    );
}

#[tokio::test]
async fn the_wake_deadline_is_unavailable() {
    let app = grpc_app().await;
    let up = TestUpstream::asleep(Duration::from_secs(10));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Grpc, Duration::from_millis(100)),
    )
    .await;
    let mut client = h2_client(router.addr).await;
    let resp = client
        .send_request(call(router.addr, b"x", Some("5S")))
        .await
        .unwrap();
    assert_eq!(grpc_result(resp).await.0, "14");
}

/// A real gRPC client (Debian's python3-grpcio) through the router while the app wakes.
#[tokio::test]
async fn python_grpcio_client_during_the_wake() {
    let python = "/usr/bin/python3";
    // A missing client fails the test: it never passes without having run.
    let probe = std::process::Command::new(python)
        .args(["-c", "import grpc"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{python} has no grpc module ({}): this test needs a real gRPC client; install the \
             Debian package `python3-grpcio` (scripts/deps.sh does)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {python} ({e}): this test needs it with a gRPC client; install the \
             Debian packages `python3` and `python3-grpcio` (scripts/deps.sh does)"
        ),
    }
    let app = grpc_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Grpc, Duration::from_secs(5)),
    )
    .await;
    let script = r#"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
say = ch.unary_unary('/test.Echo/Say')
print(say(b'hello through the router', timeout=10).decode())
"#;
    let client = tokio::process::Command::new(python)
        .args(["-c", script, &router.addr.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the python gRPC client did not finish within 60 s")
        .expect("run the python gRPC client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello through the router"
    );
    assert_eq!(up.wakes(), 1);
}
