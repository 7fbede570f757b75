//! `aegis instance lease`, `aegis instance leases` and `awake_because` in `aegis instance
//! inspect`, against a scripted daemon.

// The shared support re-exports scripted-feed helpers (`Then`) this file has no use for.
#[allow(unused_imports)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use aegis_api::{ApiError, AwakeBecause, ErrorCode, IdleTimers, InstanceState, Lease};
use support::*;

fn a_lease(id: &str) -> Lease {
    Lease {
        id: id.into(),
        instance: "inst-1".into(),
        holder: Some("ci".into()),
        ttl_secs: 3,
        created_at: "2025-01-01T00:00:00Z".into(),
        expires_at: "2025-01-01T00:00:03Z".into(),
        expires_in_ms: 3000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_held_around_a_command_renewed_retaken_after_a_loss_and_released() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker: PathBuf = marker_dir.path().join("renewed");
    let m = marker.clone();
    let daemon = FakeAegisd::start(
        move |rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
            ("POST", "/v1/instances/web/leases") => {
                // The first lease, then the one taken again after the daemon "lost" it.
                let n = if m.with_extension("first").exists() {
                    "lease-2"
                } else {
                    std::fs::write(m.with_extension("first"), b"").unwrap();
                    "lease-1"
                };
                json(201, &a_lease(n))
            }
            ("POST", "/v1/instances/web/leases/lease-1/renew") => {
                not_found("instance web has no lease 'lease-1'")
            }
            ("POST", "/v1/instances/web/leases/lease-2/renew") => {
                std::fs::write(&m, b"").unwrap();
                json(200, &a_lease("lease-2"))
            }
            ("DELETE", "/v1/instances/web/leases/lease-2") => Reply::Body(204, vec![]),
            other => panic!("unexpected {other:?}"),
        },
    );
    // The command ends once the renewed second lease is seen: no sleeping on the clock.
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exit 7",
        marker.display()
    );
    let o = run_aegis(
        daemon.home(),
        &[
            "instance",
            "lease",
            "--ttl",
            "3s",
            "--renew-every",
            "1s",
            "--holder",
            "ci",
            "web",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(7),
        "the command's exit code: {}",
        stderr(&o)
    );
    let created = daemon.requests_to("POST", "/v1/instances/web/leases");
    let body: serde_json::Value = serde_json::from_slice(&created[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"ttl_secs": 3, "holder": "ci"}));
    let creates = created
        .iter()
        .filter(|r| r.uri == "/v1/instances/web/leases")
        .count();
    assert_eq!(creates, 2, "a lost lease is taken again");
    assert_eq!(
        daemon
            .requests_to("DELETE", "/v1/instances/web/leases/")
            .len(),
        1,
        "released on exit"
    );
    let err = stderr(&o);
    assert!(
        err.contains("holding lease lease-1 on web (ttl 3s, renewed every 1s)"),
        "{err}"
    );
    assert!(err.contains("lease lease-1 is gone"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_command_the_lease_is_held_until_sigterm_then_released() {
    let daemon = FakeAegisd::start(|rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
        ("POST", "/v1/instances/web/leases") => json(201, &a_lease("lease-1")),
        ("POST", "/v1/instances/web/leases/lease-1/renew") => json(200, &a_lease("lease-1")),
        ("DELETE", "/v1/instances/web/leases/lease-1") => Reply::Body(204, vec![]),
        other => panic!("unexpected {other:?}"),
    });
    let mut child = aegis(daemon.home())
        .args(["instance", "lease", "--json", "web"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The lease is printed once held.
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    let held = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while !printed.ends_with(b"}\n") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "aegis exited before holding the lease");
            printed.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .expect("the lease was never held");
    let lease: Lease = serde_json::from_slice(&printed).unwrap();
    assert_eq!(lease.id, "lease-1");
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("aegis did not exit on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        daemon
            .requests_to("DELETE", "/v1/instances/web/leases/lease-1")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_leases_and_bad_flags_exit_125() {
    let daemon = FakeAegisd::start(|rec, _| {
        match (rec.method.as_str(), rec.uri.as_str()) {
        ("POST", "/v1/instances/web/leases") => json(
            400,
            &ApiError::new(ErrorCode::InvalidRequest, "ttl_secs 90000 is out of range: a lease lives at most 86400 seconds (24 hours); use a shorter TTL and renew it"),
        ),
        other => panic!("unexpected {other:?}"),
    }
    });
    let o = run_aegis(daemon.home(), &["instance", "lease", "--ttl", "25h", "web"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("cannot lease instance web"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("at most 86400 seconds"),
        "{}",
        stderr(&o)
    );

    let before = daemon.requests().len();
    let o = run_aegis(
        daemon.home(),
        &[
            "instance",
            "lease",
            "--ttl",
            "10s",
            "--renew-every",
            "10s",
            "web",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not shorter than --ttl 10s"),
        "{}",
        stderr(&o)
    );
    let o = run_aegis(daemon.home(), &["instance", "lease", "--ttl", "0s", "web"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(daemon.requests().len(), before, "bad flags send nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lists_and_inspect_shows_awake_because() {
    let awake = AwakeBecause {
        leases: vec![a_lease("lease-1")],
        timers: IdleTimers::default(),
        ..Default::default()
    };
    let daemon = FakeAegisd::start(
        move |rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
            ("GET", "/v1/instances/web/leases") => json(200, &vec![a_lease("lease-1")]),
            ("GET", "/v1/instances/web") => json(200, &instance(InstanceState::Running)),
            ("GET", "/v1/instances/inst-1/awake") => json(200, &awake),
            other => panic!("unexpected {other:?}"),
        },
    );
    let o = run_aegis(daemon.home(), &["instance", "leases", "web", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: Vec<Lease> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed, vec![a_lease("lease-1")]);
    let o = run_aegis(daemon.home(), &["instance", "leases", "web"]).await;
    let table = stdout(&o);
    assert!(
        table.starts_with("ID") && table.contains("lease-1   ci       3s    3s"),
        "{table}"
    );

    let o = run_aegis(daemon.home(), &["instance", "inspect", "web"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["awake_because"]["leases"][0]["id"], "lease-1");
    assert_eq!(
        v["awake_because"]["timers"]["pauses_in_ms"],
        serde_json::Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_instance_ends_the_lease_with_125() {
    let daemon = FakeAegisd::start(|rec, index| match (rec.method.as_str(), rec.uri.as_str()) {
        ("POST", "/v1/instances/web/leases") if index == 0 => json(201, &a_lease("lease-1")),
        ("POST", _) => not_found("no instance 'web'; list instances with `aegis instance ls`"),
        other => panic!("unexpected {other:?}"),
    });
    let o = run_aegis(
        daemon.home(),
        &[
            "instance",
            "lease",
            "--ttl",
            "2s",
            "--renew-every",
            "1s",
            "web",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no longer leasing it"),
        "{}",
        stderr(&o)
    );
    assert!(
        daemon.requests_to("DELETE", "/").is_empty(),
        "nothing to release"
    );
}
