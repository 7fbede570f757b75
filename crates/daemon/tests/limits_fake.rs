//! The quotas of `[limits]` (docs/CONFIG.md) against an in-process daemon on the fake backend:
//! each refuses with its own code and a message that names the limit, its value and the key
//! that raises it; `GET /v1/status` reports them.

use std::sync::Arc;

use aegis_api::{
    ApiError, CreateInstance, CreateTask, ErrorCode, InstanceState, PortProtocol, PortSpec, Status,
    TaskState,
};
use aegis_testkit::daemon::fixture_with;
use aegis_testkit::net::free_port;
use aegisd::Daemon;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn sleeper() -> CreateTask {
    CreateTask {
        command: vec!["sleep".into(), "60".into()],
        ..Default::default()
    }
}

fn web(name: &str, ports: usize) -> CreateInstance {
    let app_port = free_port();
    CreateInstance {
        name: Some(name.into()),
        command: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            app_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        expose: (0..ports)
            .map(|i| PortSpec {
                guest_port: app_port + i as u16,
                host_port: None,
                protocol: PortProtocol::Http,
            })
            .collect(),
        ..Default::default()
    }
}

/// Asserts `e` is a refusal with `code` whose message names `key`, its `value` and the
/// daemon's configuration file.
fn assert_refused(d: &Daemon, e: &ApiError, code: ErrorCode, key: &str, value: &str) {
    let m = &e.error.message;
    assert_eq!(e.error.code, code, "{m}");
    assert!(m.contains(key), "names the limit {key}: {m}");
    assert!(m.contains(value), "names the value {value}: {m}");
    let file = d.config.config_file.display().to_string();
    assert!(m.contains(&file), "names the file to change, {file}: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_live_vms_refuses_a_task_and_an_instance_wake_with_429() {
    let f = fixture_with(|c| c.limits.max_live_vms = 2).await;
    let d = &f.daemon;
    let a = d.tasks.create(d, sleeper()).await.unwrap();
    let b = d.tasks.create(d, sleeper()).await.unwrap();
    let e = d.tasks.create(d, sleeper()).await.unwrap_err();
    assert_refused(d, &e, ErrorCode::LimitReached, "max_live_vms", "2");
    assert_eq!(e.error.code.http_status(), 429);
    assert!(e.error.message.contains("2 VMs are live"), "{e}");

    // An instance may be created (it has no VM yet) but not woken.
    d.instances.create(d, web("web", 1)).await.unwrap();
    let e = d.instances.resume("web").await.unwrap_err();
    assert_refused(d, &e, ErrorCode::LimitReached, "max_live_vms", "2");
    let rt = d.instances.get("web").unwrap();
    assert_eq!(rt.state(), InstanceState::Terminated, "no VM was started");
    assert!(rt.view().last_error.unwrap().contains("max_live_vms"));

    // A place frees up when a task ends: the instance wakes then.
    d.tasks.cancel(d, &a.id).unwrap();
    wait_task_end(d, &a.id).await;
    d.instances.resume("web").await.unwrap();
    assert_eq!(rt.state(), InstanceState::Running);
    // Now the instance holds the place: a task is refused again.
    let e = d.tasks.create(d, sleeper()).await.unwrap_err();
    assert_eq!(e.error.code, ErrorCode::LimitReached, "{e}");
    d.tasks.cancel(d, &b.id).unwrap();
    d.instances.delete(d, "web").await.unwrap();
}

async fn wait_task_end(d: &Arc<Daemon>, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = d.tasks.get(d, id).unwrap();
        if !matches!(t.state, TaskState::Booting | TaskState::Running) && d.tasks.running() < 2 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_and_max_exposed_ports_refuse_with_429() {
    let f = fixture_with(|c| {
        c.limits.max_instances = 1;
        c.limits.max_exposed_ports = 2;
    })
    .await;
    let d = &f.daemon;
    let e = d.instances.create(d, web("many", 3)).await.unwrap_err();
    assert_refused(d, &e, ErrorCode::LimitReached, "max_exposed_ports", "2");
    assert!(e.error.message.contains("cannot expose 3 ports"), "{e}");
    d.instances.create(d, web("one", 2)).await.unwrap();
    let e = d.instances.create(d, web("two", 1)).await.unwrap_err();
    assert_refused(d, &e, ErrorCode::LimitReached, "max_instances", "1");
    assert!(d.instances.get("two").is_err(), "nothing of it was kept");
    // Removing one makes room.
    d.instances.delete(d, "one").await.unwrap();
    d.instances.create(d, web("two", 1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_disk_reserve_refuses_vms_pulls_and_publishes_with_507() {
    // More than any disk has free.
    let reserve = 1u64 << 60;
    let f = fixture_with(|c| c.limits.free_disk_reserve_bytes = reserve).await;
    let d = &f.daemon;
    let e = d.tasks.create(d, sleeper()).await.unwrap_err();
    assert_refused(
        d,
        &e,
        ErrorCode::InsufficientStorage,
        "free_disk_reserve_bytes",
        "1048576 TiB",
    );
    assert_eq!(e.error.code.http_status(), 507);
    assert!(
        d.registry.list_tasks().unwrap().is_empty(),
        "no task recorded"
    );

    d.instances.create(d, web("web", 1)).await.unwrap();
    let e = d.instances.resume("web").await.unwrap_err();
    assert_eq!(e.error.code, ErrorCode::InsufficientStorage, "{e}");
    assert_eq!(f.fake.boots(), 0, "no VM was started");

    let (status, body) = call(d, "POST", "/v1/images/pull", r#"{"reference":"alpine:3"}"#).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("cannot pull an image"), "{body}");
    let (status, body) = call(
        d,
        "POST",
        "/v1/apps/site/releases",
        r#"{"from":"/nonexistent"}"#,
    )
    .await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("cannot publish a release"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_limits_in_force() {
    let f = fixture_with(|c| c.limits.max_live_vms = 7).await;
    let (status, body) = call(&f.daemon, "GET", "/v1/status", "").await;
    assert_eq!(status, 200, "{body}");
    let s: Status = serde_json::from_str(&body).unwrap();
    let limits = s.limits.expect("status carries the limits");
    assert_eq!(limits.max_live_vms, 7);
    assert_eq!(limits, f.daemon.config.limits);
}

/// One request to the daemon's API router: (status, body).
async fn call(d: &Arc<Daemon>, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = Request::builder()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_take_more_places_than_there_are() {
    let f = fixture_with(|c| c.limits.max_live_vms = 3).await;
    let d = &f.daemon;
    let attempts = (0..12).map(|_| {
        let d = d.clone();
        tokio::spawn(async move { d.tasks.create(&d, sleeper()).await })
    });
    let results = futures::future::join_all(attempts).await;
    let (mut admitted, mut refused) = (vec![], 0);
    for r in results {
        match r.unwrap() {
            Ok(t) => admitted.push(t.id),
            Err(e) => {
                assert_eq!(e.error.code, ErrorCode::LimitReached, "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((admitted.len(), refused), (3, 9));
    assert_eq!(
        d.registry.list_tasks().unwrap().len(),
        3,
        "refusals recorded nothing"
    );
    let dirs = std::fs::read_dir(d.config.home.tasks_dir())
        .unwrap()
        .count();
    assert_eq!(dirs, 3, "refusals left no output directory");
    for id in &admitted {
        d.tasks.cancel(d, id).unwrap();
    }
}
