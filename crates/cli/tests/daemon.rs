//! `aegis up/down/status` and `aegis task ...` against a scripted daemon, or none.

mod support;

use std::os::unix::fs::PermissionsExt;

use aegis_api::{CapabilitiesInfo, Status, TaskState};
use support::*;

fn status() -> Status {
    Status {
        status: "running".into(),
        version: "0.1.0".into(),
        pid: std::process::id(),
        backend: "fake".into(),
        capabilities: CapabilitiesInfo {
            pause: true,
            memory_snapshot: false,
            vsock: false,
            virtio_fs: false,
            accelerator: "none".into(),
        },
        home: "/h".into(),
        tasks_running: 0,
        router_addr: "127.0.0.1:8099".into(),
        instances: 1,
        builtin_images: vec!["busybox".into(), "debian".into()],
        limits: Some(aegis_api::Limits {
            max_live_vms: 32,
            max_instances: 128,
            max_exposed_ports: 16,
            instance_log_bytes: 16 << 20,
            instance_log_rotated_files: 2,
            task_output_bytes: 256 << 20,
            console_log_bytes: 1 << 20,
            max_blob_bytes: 10 << 30,
            max_layer_unpacked_bytes: 20 << 30,
            max_artifact_bytes: 1 << 30,
            free_disk_reserve_bytes: 1 << 30,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_whether_the_daemon_runs() {
    let (_dir, home) = missing_home();
    let o = run_aegis(&home, &["status"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("aegisd: not running"),
        "{}",
        stdout(&o)
    );
    let o = run_aegis(&home, &["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "not_running");

    let daemon = FakeAegisd::start(|_, _| json(200, &status()));
    let o = run_aegis(daemon.home(), &["status", "--json"]).await;
    assert_eq!(o.status.code(), Some(0));
    let back: Status = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(back, status());
    let o = run_aegis(daemon.home(), &["status"]).await;
    assert!(
        stdout(&o).contains("backend: fake (accelerator none)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("instances: 1\nrouter: http://127.0.0.1:8099 "),
        "{}",
        stdout(&o)
    );
    for shown in [
        "max_live_vms 32, max_instances 128, max_exposed_ports 16",
        "instance_log_bytes 16.0 MiB (+ 2 rotated files)",
        "free_disk_reserve_bytes 1.0 GiB",
    ] {
        assert!(stdout(&o).contains(shown), "{shown}: {}", stdout(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_down_are_no_ops_when_there_is_nothing_to_do() {
    let daemon = FakeAegisd::start(|_, _| json(200, &status()));
    let o = run_aegis(daemon.home(), &["up"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!(
            "aegisd is already running (pid {}, backend fake)\n",
            std::process::id()
        )
    );

    let (_dir, home) = missing_home();
    let o = run_aegis(&home, &["down"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "aegisd is not running\n");
}

/// The router has no authentication: `up` warns whenever the daemon's router is reachable
/// from other hosts, and stays quiet on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_warns_about_a_router_beyond_loopback() {
    let daemon = FakeAegisd::start(|_, _| json(200, &status()));
    let o = run_aegis(daemon.home(), &["up"]).await;
    assert_eq!(stderr(&o), "");
    let exposed = Status {
        router_addr: "0.0.0.0:8099".into(),
        ..status()
    };
    let daemon = FakeAegisd::start(move |_, _| json(200, &exposed));
    let o = run_aegis(daemon.home(), &["up"]).await;
    assert_eq!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("WARNING") && e.contains("0.0.0.0:8099") && e.contains("no authentication"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_shows_why_a_daemon_died_at_start() {
    let (dir, home) = missing_home();
    let script = dir.path().join("aegisd");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"args: $*\" >&2\necho 'error: no usable VMM backend' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = aegis(&home)
        .env("AEGIS_DAEMON", &script)
        .args(["up", "--backend", "qemu"])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.starts_with("aegis: aegisd exited during start-up (exit status: 3)"),
        "{err}"
    );
    assert!(err.contains("  error: no usable VMM backend"), "{err}");
    assert!(
        err.contains(&format!("args: --home {} --backend qemu", home.display())),
        "{err}"
    );
    // The home was created private, and the log kept.
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(std::fs::read_to_string(home.join("aegisd.log"))
        .unwrap()
        .contains("no usable VMM backend"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_a_daemon_binary_says_where_it_looked() {
    let (_dir, home) = missing_home();
    let o = aegis(&home)
        .env("AEGIS_DAEMON", "/nonexistent/aegisd")
        .arg("up")
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "aegis: AEGIS_DAEMON is set to /nonexistent/aegisd, which is not an executable file\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_subcommands_use_their_routes() {
    let daemon = FakeAegisd::start(|rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
        ("GET", "/v1/tasks") => {
            let mut t = task(TaskState::Exited);
            t.exit_code = Some(0);
            json(200, &vec![t])
        }
        ("GET", "/v1/tasks/task-1") => json(200, &task(TaskState::Running)),
        ("POST", "/v1/tasks/task-1/cancel") => json(200, &task(TaskState::Cancelled)),
        ("DELETE", "/v1/tasks/task-1") => Reply::Body(204, Vec::new()),
        ("GET", uri) if uri.starts_with("/v1/tasks/task-1/output") => {
            assert!(uri.contains("follow=false"), "{uri}");
            Reply::Chunks(
                vec![out(aegis_api::StreamName::Stdout, 0, b"so far")],
                Then::End,
            )
        }
        _ => json(
            404,
            &aegis_api::ApiError::new(aegis_api::ErrorCode::NotFound, "task 'x' does not exist"),
        ),
    });
    let home = daemon.home();

    let o = run_aegis(home, &["task", "ls"]).await;
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(lines[0].starts_with("ID "), "{lines:?}");
    assert!(
        lines[1].starts_with("task-1 ") && lines[1].contains(" exited "),
        "{lines:?}"
    );

    let o = run_aegis(home, &["task", "ls", "--json"]).await;
    let tasks: Vec<aegis_api::Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks.len(), 1);

    let o = run_aegis(home, &["task", "inspect", "task-1"]).await;
    let t: aegis_api::Task = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t.state, TaskState::Running);

    let o = run_aegis(home, &["task", "logs", "task-1"]).await;
    assert_eq!(o.stdout, b"so far");

    let o = run_aegis(home, &["task", "cancel", "task-1"]).await;
    assert_eq!(stdout(&o), "task-1 cancelled\n");

    // --force cancels a running task before removing it.
    let before = daemon.requests_to("POST", "/v1/tasks/task-1/cancel").len();
    let o = run_aegis(home, &["task", "rm", "--force", "task-1"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "task-1\n");
    assert_eq!(
        daemon.requests_to("POST", "/v1/tasks/task-1/cancel").len(),
        before + 1
    );
    assert_eq!(daemon.requests_to("DELETE", "/v1/tasks/task-1").len(), 1);

    let o = run_aegis(home, &["task", "inspect", "x"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o), "aegis: task 'x' does not exist\n");
}
