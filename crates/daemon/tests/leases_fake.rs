//! Activity leases and `awake_because` against the fake backend, over the daemon's real HTTP
//! routes: a lease keeps an instance from pausing, releasing or letting it expire lets it
//! pause, bad TTLs are 400, unknown leases 404; `awake_because` lists connections, holders,
//! leases and the idle timers. Real VMs are not needed: the timers are the daemon's own.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::{AwakeBecause, CreateInstance, InstanceState, Lease, PortProtocol, PortSpec};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::{free_port, http_get_status as get};
use aegisd::Daemon;
use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One request through the daemon's router: (status, body).
async fn call(d: &Arc<Daemon>, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = aegisd::api::router(d.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn lease(d: &Arc<Daemon>, inst: &str, body: &str) -> Lease {
    let (status, body) = call(d, "POST", &format!("/v1/instances/{inst}/leases"), body).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn awake(d: &Arc<Daemon>, inst: &str) -> AwakeBecause {
    let (status, body) = call(d, "GET", &format!("/v1/instances/{inst}/awake"), "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn wait_state(d: &Daemon, id: &str, want: InstanceState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = d.instances.get(id).unwrap().state();
        if s == want {
            return;
        }
        assert!(Instant::now() < deadline, "never {want:?}, still {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds for the instance's `awake_because`.
async fn wait_awake(d: &Arc<Daemon>, id: &str, what: &str, check: impl Fn(&AwakeBecause) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = awake(d, id).await;
        if check(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A python HTTP server instance named `name` with the given pause timer.
async fn web(d: &Arc<Daemon>, name: &str, pause_after: u64) -> u16 {
    let app_port = free_port();
    let req = CreateInstance {
        name: Some(name.into()),
        command: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            app_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        expose: vec![PortSpec {
            guest_port: app_port,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        pause_after_secs: Some(pause_after),
        terminate_after_secs: Some(600),
        ..Default::default()
    };
    let inst = d.instances.create(d, req).await.unwrap();
    assert_eq!(inst.state, InstanceState::Terminated);
    inst.endpoints[0].host_port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_wakes_the_instance_keeps_it_from_pausing_and_releasing_lets_it_pause() {
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    web(&d, "web", 1).await;
    let l = lease(&d, "web", r#"{"ttl_secs":60,"holder":"agent-7"}"#).await;
    assert_eq!(
        d.instances.get("web").unwrap().state(),
        InstanceState::Running,
        "creating a lease wakes the instance"
    );
    assert_eq!(fake.boots(), 1);
    assert_eq!((l.ttl_secs, l.holder.as_deref()), (60, Some("agent-7")));
    assert!(
        l.id.starts_with("lease-") && l.expires_in_ms <= 60_000,
        "{l:?}"
    );

    // Three times its pause_after: a pause would have happened by now without the lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rt = d.instances.get("web").unwrap();
    assert_eq!(
        rt.state(),
        InstanceState::Running,
        "the lease keeps it awake"
    );
    assert_eq!(rt.view().stats.pauses, 0);
    let a = awake(&d, "web").await;
    assert_eq!(a.leases.len(), 1, "{a:?}");
    assert_eq!(a.leases[0].id, l.id);
    assert_eq!(
        (a.timers.pauses_in_ms, a.timers.terminates_in_ms),
        (None, None),
        "no idle timer runs while a lease is held"
    );

    // Renewal moves the expiry; a PUT on the lease does the same.
    let (status, body) = call(
        &d,
        "POST",
        &format!("/v1/instances/web/leases/{}/renew", l.id),
        r#"{"ttl_secs":120}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let renewed: Lease = serde_json::from_str(&body).unwrap();
    assert_eq!(renewed.ttl_secs, 120);
    assert!(renewed.expires_in_ms > 60_000, "{renewed:?}");
    let (status, body) = call(&d, "PUT", &format!("/v1/instances/web/leases/{}", l.id), "").await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = call(
        &d,
        "DELETE",
        &format!("/v1/instances/web/leases/{}", l.id),
        "",
    )
    .await;
    assert_eq!(status, 204, "{body}");
    wait_state(&d, "web", InstanceState::Paused).await;
    let (status, body) = call(
        &d,
        "DELETE",
        &format!("/v1/instances/web/leases/{}", l.id),
        "",
    )
    .await;
    assert_eq!(status, 404, "a released lease is gone: {body}");
    assert!(body.contains("create a new one"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_stops_counting() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    web(&d, "web", 1).await;
    let l = lease(&d, "web", r#"{"ttl_secs":2}"#).await;
    wait_state(&d, "web", InstanceState::Paused).await;
    let (status, body) = call(&d, "GET", "/v1/instances/web/leases", "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "[]"),
        "the expired lease is dropped"
    );
    let (status, body) = call(
        &d,
        "POST",
        &format!("/v1/instances/web/leases/{}/renew", l.id),
        "",
    )
    .await;
    assert_eq!(status, 404, "an expired lease cannot be renewed: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_exec_holds_the_instance_awake_until_it_ends() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let port = web(&d, "web", 1).await;
    assert_eq!(get(port).await, 200);
    let rt = d.instances.get("web").unwrap();
    // What the exec engine registers for each running exec.
    let exec = rt.holders.hold("exec", "exec-1: sleep 10");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rt.state(), InstanceState::Running, "no pause mid-command");
    let a = awake(&d, "web").await;
    assert_eq!(a.holders.len(), 1, "{a:?}");
    assert_eq!(
        (a.holders[0].kind.as_str(), a.holders[0].label.as_str()),
        ("exec", "exec-1: sleep 10")
    );
    drop(exec);
    wait_state(&d, "web", InstanceState::Paused).await;
    assert!(awake(&d, "web").await.holders.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ttls_are_400_and_unknown_leases_and_instances_404() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    web(&d, "web", 600).await;
    for (body, want) in [
        (r#"{"ttl_secs":0}"#, "ttl_secs 0 is out of range"),
        (r#"{"ttl_secs":-5}"#, "ttl_secs -5 is out of range"),
        (r#"{"ttl_secs":86401}"#, "at most 86400 seconds"),
        (
            r#"{"ttl_secs":99999999999999999999}"#,
            "invalid request body",
        ),
        (r#"{}"#, "missing field `ttl_secs`"),
        (r#"{"ttl_secs":10,"holder":"a\nb"}"#, "control characters"),
        (r#"{"ttl_secs":10,"ttl":5}"#, "unknown field"),
    ] {
        let (status, text) = call(&d, "POST", "/v1/instances/web/leases", body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    assert_eq!(
        d.instances.get("web").unwrap().state(),
        InstanceState::Terminated,
        "a refused lease wakes nothing"
    );
    let (status, text) = call(
        &d,
        "POST",
        "/v1/instances/nope/leases",
        r#"{"ttl_secs":10}"#,
    )
    .await;
    assert_eq!(status, 404, "{text}");
    for (method, path) in [
        ("POST", "/v1/instances/web/leases/lease-nope/renew"),
        ("PUT", "/v1/instances/web/leases/lease-nope"),
        ("DELETE", "/v1/instances/web/leases/lease-nope"),
    ] {
        let (status, text) = call(&d, method, path, "").await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(text.contains("no lease 'lease-nope'"), "{text}");
    }
    let l = lease(&d, "web", r#"{"ttl_secs":10}"#).await;
    let renew = format!("/v1/instances/web/leases/{}/renew", l.id);
    let (status, text) = call(&d, "POST", &renew, r#"{"ttl_secs":0}"#).await;
    assert_eq!(status, 400, "{text}");
    // Leases die with their instance.
    d.instances.delete(&d, "web").await.unwrap();
    let (status, text) = call(&d, "POST", &renew, "").await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("no instance 'web'"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awake_because_lists_connections_leases_and_timers() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let port = web(&d, "web", 600).await;
    let a = awake(&d, "web").await;
    assert_eq!(
        a.timers.pauses_in_ms, None,
        "terminated: no timer runs: {a:?}"
    );
    assert_eq!(get(port).await, 200);

    // The router counts the connection until it has seen it close, a moment after the reply.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (a, pauses_in) = loop {
        let a = awake(&d, "web").await;
        if let Some(p) = a.timers.pauses_in_ms {
            break (a, p);
        }
        assert!(
            Instant::now() < deadline,
            "a running idle instance has a pause timer: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(pauses_in <= 600_000, "{a:?}");
    assert_eq!(a.timers.terminates_in_ms, Some(pauses_in + 600_000));

    // A client connection held open (the router counts it on accept).
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_awake(&d, "web", "an open connection", |a| {
        !a.connections.is_empty()
    })
    .await;
    let a = awake(&d, "web").await;
    let c = &a.connections[0];
    let guest_port = d.instances.get("web").unwrap().target.expose[0].guest_port;
    assert_eq!(
        (c.guest_port, c.protocol, c.open),
        (guest_port, PortProtocol::Http, 1)
    );
    assert_eq!(
        a.timers.pauses_in_ms, None,
        "an open connection stops the `on` idle timer"
    );
    drop(conn);
    wait_awake(&d, "web", "the connection closed", |a| {
        a.connections.is_empty()
    })
    .await;

    lease(&d, "web", r#"{"ttl_secs":30,"holder":"ci"}"#).await;
    let a = awake(&d, "web").await;
    assert_eq!(a.leases.len(), 1);
    assert_eq!(a.leases[0].holder.as_deref(), Some("ci"));
    assert!(a.leases[0].expires_in_ms <= 30_000);
    assert_eq!(
        (a.timers.pauses_in_ms, a.timers.terminates_in_ms),
        (None, None)
    );
}

/// Time spent paused does not count toward `pause_after`: a resumed instance gets its whole
/// idle period again instead of pausing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_time_counts_toward_no_timer() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let port = web(&d, "web", 30).await;
    assert_eq!(get(port).await, 200);
    d.instances.pause("web").await.unwrap();
    let paused = awake(&d, "web").await;
    assert_eq!(paused.timers.pauses_in_ms, None);
    assert!(paused.timers.terminates_in_ms.is_some(), "{paused:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = Instant::now();
    d.instances.resume("web").await.unwrap();
    let a = awake(&d, "web").await;
    let since_resume = u64::try_from(resumed.elapsed().as_millis()).unwrap();
    let left = a
        .timers
        .pauses_in_ms
        .expect("running again: the pause timer runs");
    // Counted from the resume, the timer has at least `30 s - since_resume` left; counted
    // from before the pause, it would have lost the 2 s spent paused as well.
    assert!(
        left + 1 >= 30_000 - since_resume,
        "the pause timer restarted at the resume: {left} ms left, resumed {since_resume} ms ago"
    );
    assert_eq!(
        d.instances.get("web").unwrap().state(),
        InstanceState::Running
    );
}
