//! HTTP ports: loading page, hold, 503 after the deadline, 502 on upstream failure,
//! forwarding headers, single-flight wakes, activity.
mod common;

use std::time::{Duration, Instant};

use aegis_router::Protocol;
use bytes::Bytes;
use common::*;
use http_body_util::Full;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test]
async fn a_browser_gets_the_loading_page_then_the_app() {
    init_tracing();
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(800));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;

    let start = Instant::now();
    let req = get(router.addr, "/")
        .header("accept", BROWSER_ACCEPT)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "served at once"
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-aegis-loading"], "1");
    let page = body_string(resp).await;
    assert!(page.contains("X-Aegis-Wake-Probe") && page.contains("http-equiv=\"refresh\""));

    // What the page's script does: probe every 500 ms until ready, then reload.
    let mut probes = 0;
    loop {
        probes += 1;
        assert!(probes < 20, "never became ready");
        let req = get(router.addr, "/")
            .method("HEAD")
            .header("x-aegis-wake-probe", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 204);
        if resp.headers()["x-aegis-ready"] == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let req = get(router.addr, "/")
        .header("accept", BROWSER_ACCEPT)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-aegis-loading"));
    assert_eq!(body_string(resp).await, "hello from the app");
    assert_eq!(up.wakes(), 1);
}

#[tokio::test]
async fn curl_is_held_until_ready_then_served() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let start = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(router.url("/"))
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "hello from the app\n200",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.wakes(), 1);
}

#[tokio::test]
async fn past_the_deadline_clients_get_503_with_retry_after() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_secs(10));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_millis(200)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let start = Instant::now();
    let resp = client
        .send_request(get(router.addr, "/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2));
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert!(body_string(resp).await.contains("waking up"));
}

#[tokio::test]
async fn a_failed_wake_is_502() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(10));
    up.fail_wakes();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let resp = client
        .send_request(get(router.addr, "/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-aegis-error"], "wake-failed");
    assert!(body_string(resp).await.contains("refused to boot"));
}

#[tokio::test]
async fn an_upstream_killed_mid_request_is_502() {
    let app = http_app().await;
    let up = TestUpstream::awake();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let pending = tokio::spawn(async move {
        let resp = client
            .send_request(
                get(router.addr, "/hang")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        (resp.status(), body_string(resp).await)
    });
    // The request is in the app's hands before the app dies.
    eventually(Duration::from_secs(10), || app.hanging() == 1).await;
    assert_eq!(up.connects(), 1);
    app.kill();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 502);
    assert!(body.contains("Bad Gateway"), "{body}");
}

#[tokio::test]
async fn a_dead_upstream_port_is_502() {
    let app = rude_app().await;
    let up = TestUpstream::awake();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let resp = client
        .send_request(get(router.addr, "/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    // Nothing listens at all.
    drop(app);
    let up2 = TestUpstream::awake();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let router2 = Router::port(
        up2,
        route(closed_port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router2.addr).await;
    let resp = client
        .send_request(
            get(router2.addr, "/")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(body_string(resp)
        .await
        .contains("nothing accepts connections"));
}

#[tokio::test]
async fn headers_are_forwarded_and_hop_by_hop_ones_stripped() {
    let app = http_app().await;
    let up = TestUpstream::awake();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let req = hyper::Request::get("/")
        .header("host", "web.localhost:8099")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "for this hop only")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-seen-host"], "web.localhost:8099");
    assert_eq!(h["x-seen-xff"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-seen-proto"], "http");
    assert_eq!(h["x-seen-secret"], "");
}

#[tokio::test]
async fn the_upstream_connection_is_reopened_when_it_closes() {
    let app = http_app().await;
    let up = TestUpstream::awake();
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    for path in ["/", "/close", "/", "/close", "/"] {
        let resp = client
            .send_request(
                get(router.addr, path)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        body_string(resp).await;
    }
    assert_eq!(
        up.connects(),
        3,
        "one per closed upstream connection, on one client connection"
    );
}

#[tokio::test]
async fn request_bodies_pass_through() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(100));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let mut client = h1_client(router.addr).await;
    let body = Bytes::from(vec![b'x'; 300_000]);
    let req = hyper::Request::post(format!("http://{}/echo", router.addr))
        .header("host", "app")
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await.len(), body.len());
}

#[tokio::test]
async fn fifty_concurrent_clients_cause_one_wake_and_all_succeed() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(500));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(10)),
    )
    .await;
    let addr = router.addr;
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
    // All 50 are held and counted as activity during the one wake.
    eventually(Duration::from_secs(2), || up.open_connections() == 50).await;
    let mut ok = 0;
    for c in clients {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "hello from the app");
        ok += 1;
    }
    assert_eq!(ok, 50);
    assert_eq!(up.wakes(), 1);
    eventually(Duration::from_secs(2), || up.open_connections() == 0).await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_stops_accepting() {
    let app = http_app().await;
    let up = TestUpstream::asleep(Duration::from_millis(300));
    let router = Router::port(
        up.clone(),
        route(app.port, Protocol::Http, Duration::from_secs(5)),
    )
    .await;
    let addr = router.addr;
    let mut client = h1_client(addr).await;
    let pending = tokio::spawn(async move {
        let resp = client
            .send_request(get(addr, "/").body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        resp.status()
    });
    eventually(Duration::from_secs(1), || up.open_connections() == 1).await;
    router.shutdown.cancel();
    assert_eq!(pending.await.unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(3), router.task)
        .await
        .expect("the listener ends once its connections did")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
