//! Serve-mode lifecycle logic against the fake backend (the guest agent in-process, the app a
//! host process): wake on connect, idle pause, resume, terminate, cold boot again, explicit
//! stop/delete. Real VMs cover the same in `tests/tests/serve.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aegis_api::{CreateInstance, InstanceState, PortProtocol, PortSpec};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::{free_port, http_get_status as get};
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
