//! Serve-mode lifecycle logic against the fake backend (the guest agent in-process, the app a
//! host process): wake on connect, idle pause, resume, terminate, cold boot again, explicit
//! stop/delete, controls that cancel a wake stuck waiting for a port, an instance whose port
//! is taken across a restart. Real VMs cover the lifecycle in `tests/tests/serve.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::sync::Arc;

use aegis_api::{CreateInstance, InstanceState, PortProtocol, PortSpec};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::{free_port, http_get_status as get};
use aegis_vmm::FakeBackend;
use aegisd::Daemon;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_pause_resume_terminate_and_wake_again() {
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    let app_port = free_port();
    let req = CreateInstance {
        name: Some("web".into()),
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
        pause_after_secs: Some(1),
        terminate_after_secs: Some(1),
        ..Default::default()
    };
    let inst = d.instances.create(&d, req).await.unwrap();
    assert_eq!(
        inst.state,
        InstanceState::Terminated,
        "scale to zero from the start"
    );
    assert_eq!(fake.boots(), 0);
    let port = inst.endpoints[0].host_port;

    assert_eq!(get(port).await, 200);
    let rt = d.instances.get("web").unwrap();
    assert_eq!(rt.state(), InstanceState::Running);
    assert_eq!(fake.boots(), 1);

    wait_state(&d, "web", InstanceState::Paused).await;
    assert_eq!(get(port).await, 200, "a request resumes a paused instance");
    assert_eq!(rt.view().stats.resumes, 1);
    assert_eq!(fake.boots(), 1, "resume, not a new boot");

    wait_state(&d, "web", InstanceState::Paused).await;
    wait_state(&d, "web", InstanceState::Terminated).await;
    assert!(fake.running().is_empty(), "terminated means no VM");
    assert_eq!(
        get(port).await,
        200,
        "a request wakes a terminated instance"
    );
    assert_eq!(
        fake.boots(),
        2,
        "the fake has no memory snapshots: a cold boot"
    );

    // Explicit stop and delete.
    let v = d.instances.stop("web").await.unwrap();
    assert_eq!(v.state, InstanceState::Terminated);
    d.instances.delete(&d, "web").await.unwrap();
    assert!(d.instances.get("web").is_err());
    assert!(fake.running().is_empty());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_are_refused() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let base = CreateInstance {
        command: vec!["true".into()],
        expose: vec![PortSpec {
            guest_port: 80,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        ..Default::default()
    };
    let cases: Vec<(CreateInstance, &str)> = vec![
        (
            CreateInstance {
                expose: vec![],
                ..base.clone()
            },
            "at least one port",
        ),
        (
            CreateInstance {
                expose: vec![PortSpec {
                    guest_port: 0,
                    host_port: None,
                    protocol: PortProtocol::Tcp,
                }],
                ..base.clone()
            },
            "port 0",
        ),
        (
            CreateInstance {
                expose: vec![base.expose[0], base.expose[0]],
                ..base.clone()
            },
            "twice",
        ),
        (
            CreateInstance {
                name: Some("Bad Name".into()),
                ..base.clone()
            },
            "invalid instance name",
        ),
        (
            CreateInstance {
                pause_after_secs: Some(0),
                ..base.clone()
            },
            "at least 1 second",
        ),
    ];
    for (req, needle) in cases {
        let e = d.instances.create(&d, req).await.unwrap_err();
        assert!(e.error.message.contains(needle), "{needle}: {e}");
    }
    // Names are unique.
    let named = CreateInstance {
        name: Some("a".into()),
        ..base.clone()
    };
    d.instances.create(&d, named.clone()).await.unwrap();
    let e = d.instances.create(&d, named).await.unwrap_err();
    assert!(e.error.message.contains("already exists"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_port_reuses_one_upstream_per_client_connection() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let app_port = free_port();
    let req = CreateInstance {
        name: Some("app".into()),
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
        ..Default::default()
    };
    d.instances.create(&d, req).await.unwrap();
    d.start_router().await.unwrap();
    let shared = *d.router_addr.get().expect("router bound");
    let rt = d.instances.get("app").unwrap();
    let conns = tokio::task::spawn_blocking(move || {
        // Two requests on one keep-alive client connection, routed by Host.
        let mut s = TcpStream::connect(shared).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut seen = vec![];
        for _ in 0..2 {
            write!(s, "GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n").unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = s.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                head.starts_with("HTTP/1.") && head.contains(" 200 "),
                "{head}"
            );
            // Drain the rest of the body (python closes its side; the router keeps ours).
            std::thread::sleep(Duration::from_millis(200));
            let _ = s.set_nonblocking(true);
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            let _ = s.set_nonblocking(false);
            seen.push(rt.view().active_connections);
        }
        seen
    })
    .await
    .unwrap();
    assert_eq!(
        conns,
        vec![1, 1],
        "one client connection is one activity, request after request"
    );
}

/// A guest whose app never opens its port must not pin its instance's controls: pause, stop
/// and rm cancel the wake in flight and answer at once (bounded here by 10 s, far below the
/// 600 s wake timeout), leaving no VM, run directory or VM record behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stop_and_rm_cancel_a_wake_whose_app_never_listens() {
    let Fixture {
        daemon: d,
        fake,
        home,
    } = fixture().await;
    let req = CreateInstance {
        name: Some("stuck".into()),
        command: vec!["sleep".into(), "600".into()],
        expose: vec![PortSpec {
            guest_port: free_port(),
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        wake_timeout_secs: Some(600),
        ..Default::default()
    };
    d.instances.create(&d, req).await.unwrap();
    for (n, control) in ["pause", "stop", "rm"].into_iter().enumerate() {
        let waking = {
            let d = d.clone();
            tokio::spawn(async move { d.instances.resume("stuck").await })
        };
        // The VM is up and the wake is waiting for the port.
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.boots() <= n as u64 || fake.running().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{control}: the wake never booted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            d.instances.get("stuck").unwrap().state(),
            InstanceState::Booting
        );

        let acted = tokio::time::timeout(Duration::from_secs(10), async {
            match control {
                "pause" => drop(d.instances.pause("stuck").await.unwrap()),
                "stop" => drop(d.instances.stop("stuck").await.unwrap()),
                _ => d.instances.delete(&d, "stuck").await.unwrap(),
            }
        })
        .await;
        assert!(acted.is_ok(), "{control} waited for the stuck wake");
        let woke = tokio::time::timeout(Duration::from_secs(10), waking)
            .await
            .expect("the cancelled wake ends")
            .unwrap();
        let e = woke.expect_err("a cancelled wake is not a success");
        assert!(e.error.message.contains("cancelled"), "{control}: {e}");

        assert!(
            fake.running().is_empty(),
            "{control}: the wake's VM is killed"
        );
        let run_dirs: Vec<_> = std::fs::read_dir(home.path().join("run"))
            .unwrap()
            .collect();
        assert!(run_dirs.is_empty(), "{control}: left {run_dirs:?}");
        assert!(d.registry.list_vms().unwrap().is_empty(), "{control}");
        match d.instances.get("stuck") {
            Ok(rt) => {
                assert_eq!(rt.state(), InstanceState::Terminated, "{control}");
                let why = rt.view().last_error.unwrap_or_default();
                assert!(why.contains("cancelled"), "{control}: {why}");
            }
            Err(_) => assert_eq!(control, "rm"),
        }
    }
    assert!(d.instances.list().is_empty());
}

/// An instance whose host port is taken while aegisd is down stays listed in the `error`
/// state, says why and what to do, never wakes, and can be removed (freeing its name and its
/// workspace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_port_is_taken_across_a_restart_is_listed_in_error_and_removable() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let host_port = free_port();
    let req = CreateInstance {
        name: Some("web".into()),
        command: vec!["sleep".into(), "600".into()],
        expose: vec![PortSpec {
            guest_port: 8000,
            host_port: Some(host_port),
            protocol: PortProtocol::Http,
        }],
        workspace: Some("site".into()),
        ..Default::default()
    };
    {
        let d = aegis_testkit::daemon::start(home.path(), &fake).await;
        d.instances.create(&d, req.clone()).await.unwrap();
        d.instances.shutdown(Duration::from_secs(5)).await;
        d.shutdown.cancel();
    }
    // Someone else takes the port while aegisd is down (retried: the old listener closes
    // asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    let _squatter = loop {
        match std::net::TcpListener::bind(("127.0.0.1", host_port)) {
            Ok(l) => break l,
            Err(e) => assert!(Instant::now() < deadline, "cannot take the port: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let d = aegis_testkit::daemon::start(home.path(), &fake).await;
    d.instances.reload(&d).await;
    let listed = d.instances.list();
    assert_eq!(listed.len(), 1, "still listed");
    let i = &listed[0];
    assert_eq!(i.state, InstanceState::Error);
    assert_eq!(i.state.as_str(), "error");
    let why = i.last_error.clone().unwrap_or_default();
    assert!(
        why.contains(&format!("127.0.0.1:{host_port}"))
            && why.contains("restart aegisd")
            && why.contains("aegis instance rm web"),
        "{why}"
    );
    assert_eq!(
        d.instances.get("web").unwrap().view().state,
        InstanceState::Error
    );
    let e = d.instances.resume("web").await.unwrap_err();
    assert!(e.error.message.contains("cannot listen"), "{e}");
    assert_eq!(fake.boots(), 0, "an unservable instance never boots");
    let stopped = d.instances.stop("web").await.unwrap();
    assert_eq!(
        stopped.state,
        InstanceState::Error,
        "a stop does not hide the error"
    );
    assert_eq!(
        d.workspaces.get(&d, "site").unwrap().used_by,
        std::slice::from_ref(&i.id)
    );

    d.instances.delete(&d, "web").await.unwrap();
    assert!(d.instances.list().is_empty());
    assert!(d.registry.list_instances().unwrap().is_empty());
    assert!(d.workspaces.get(&d, "site").unwrap().used_by.is_empty());
    // The name is free again (on another port: the squatter still has this one).
    let again = CreateInstance {
        expose: vec![PortSpec {
            host_port: None,
            ..req.expose[0]
        }],
        ..req
    };
    d.instances.create(&d, again).await.unwrap();
}
