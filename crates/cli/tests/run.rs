//! `aegis run` against a scripted daemon: output bytes, resumption, exit codes, Ctrl-C.

mod support;

use std::time::Duration;

use aegis_api::{CreateTask, StreamName, TaskState};
use support::*;

const STDOUT: StreamName = StreamName::Stdout;
const STDERR: StreamName = StreamName::Stderr;

/// A daemon whose task ends as `ended` after writing nothing.
fn daemon_ending(ended: aegis_api::Task) -> FakeAegisd {
    FakeAegisd::start(move |rec, _| match rec.method.as_str() {
        "POST" => json(201, &task(TaskState::Booting)),
        _ => Reply::Chunks(vec![end(ended.clone())], Then::End),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_byte_exact_and_the_exit_code_is_the_tasks() {
    let binary: Vec<u8> = (0..=255u8).collect();
    let bin = binary.clone();
    let daemon = FakeAegisd::start(move |rec, _| match rec.method.as_str() {
        "POST" => json(201, &task(TaskState::Booting)),
        _ if rec.uri == "/v1/images/busybox" => json(
            200,
            &serde_json::json!({"reference": "busybox", "kind": "builtin", "size_bytes": 1, "layers": 1}),
        ),
        _ => {
            let mut ended = task(TaskState::Exited);
            ended.exit_code = Some(3);
            Reply::Chunks(
                vec![
                    out(STDOUT, 0, b"no newline"),
                    out(STDERR, 0, b"err\r\n"),
                    out(STDOUT, 10, &bin),
                    end(ended),
                ],
                Then::End,
            )
        }
    });
    let o = run_aegis(
        daemon.home(),
        &[
            "run",
            "--image",
            "busybox",
            "-e",
            "A=1",
            "--memory",
            "1G",
            "--cpus",
            "2",
            "--timeout",
            "1m",
            "--artifact",
            "/out",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "x",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let mut want = b"no newline".to_vec();
    want.extend(&binary);
    assert_eq!(o.stdout, want);
    assert_eq!(o.stderr, b"err\r\n");

    let create = &daemon.requests_to("POST", "/v1/tasks")[0];
    let sent: CreateTask = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(sent.command, ["sh", "-c", "x"]);
    assert_eq!(sent.image.as_deref(), Some("busybox"));
    assert_eq!(sent.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(
        (sent.memory_mib, sent.vcpus, sent.timeout_secs),
        (Some(1024), Some(2), Some(60))
    );
    assert_eq!(sent.artifacts, ["/out"]);
    assert_eq!(sent.workdir.as_deref(), Some("/tmp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_feed_is_resumed_without_duplicates_or_loss() {
    let daemon = FakeAegisd::start(|rec, _| {
        if rec.method == "POST" {
            return json(201, &task(TaskState::Booting));
        }
        match offsets(&rec.uri) {
            (0, 0) => Reply::Chunks(
                vec![out(STDOUT, 0, b"hello "), out(STDERR, 0, b"e1")],
                Then::Cut,
            ),
            // Resent from an earlier offset: the CLI must drop what it already printed.
            (6, 2) => {
                let mut ended = task(TaskState::Exited);
                ended.exit_code = Some(0);
                Reply::Chunks(
                    vec![
                        out(STDOUT, 3, b"lo world\n"),
                        out(STDERR, 2, b"e2"),
                        end(ended),
                    ],
                    Then::End,
                )
            }
            other => panic!("unexpected offsets {other:?}"),
        }
    });
    let o = run_aegis(daemon.home(), &["run", "--", "x"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello world\n");
    assert_eq!(stderr(&o), "e1e2");
    assert_eq!(
        daemon.requests_to("GET", "/v1/tasks/task-1/output").len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_exits_124() {
    let mut ended = task(TaskState::TimedOut);
    ended.timeout_secs = Some(5);
    let daemon = daemon_ending(ended);
    let o = run_aegis(
        daemon.home(),
        &["run", "--timeout", "5s", "--", "sleep", "9"],
    )
    .await;
    assert_eq!(o.status.code(), Some(124));
    assert_eq!(stderr(&o), "aegis: task task-1 timed out after 5s\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_exits_127_with_the_daemons_reason() {
    let mut ended = task(TaskState::Failed);
    ended.exit_code = Some(127);
    ended.error = Some("nope: command not found in the guest's PATH".into());
    let daemon = daemon_ending(ended);
    let o = run_aegis(daemon.home(), &["run", "--", "nope"]).await;
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(
        stderr(&o),
        "aegis: nope: command not found in the guest's PATH\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_failure_exits_125() {
    let mut ended = task(TaskState::Failed);
    ended.error = Some("the VM of task task-1 did not boot: kernel panic".into());
    let daemon = daemon_ending(ended);
    let o = run_aegis(daemon.home(), &["run", "--", "x"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).starts_with("aegis: the VM of task task-1 did not boot"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_reported() {
    let mut ended = task(TaskState::Exited);
    ended.exit_code = Some(0);
    ended.artifacts_dir = Some("/h/tasks/task-1/artifacts".into());
    let daemon = daemon_ending(ended);
    let o = run_aegis(daemon.home(), &["run", "--artifact", "/out", "--", "x"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stderr(&o),
        "aegis: artifacts copied to /h/tasks/task-1/artifacts\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_prints_the_id_only() {
    let daemon = FakeAegisd::start(|_, _| json(201, &task(TaskState::Booting)));
    let o = run_aegis(daemon.home(), &["run", "-d", "--", "sleep", "60"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "task-1\n");
    assert_eq!(daemon.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_task_and_exits_130() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let daemon = FakeAegisd::start(|rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
            ("POST", "/v1/tasks") => json(201, &task(TaskState::Booting)),
            ("POST", _) => json(200, &task(TaskState::Cancelled)),
            _ => Reply::Chunks(vec![out(STDOUT, 0, b"started\n")], Then::Hang),
        });
        let mut child = aegis(daemon.home())
            .args(["run", "--", "sleep", "600"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the task's output flows, so the CLI is following it.
        let mut first = [0u8; 8];
        let mut pipe = child.stdout.take().unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read_exact(&mut pipe, &mut first),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&first, b"started\n");
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(stderr(&o), "aegis: task task-1 cancelled\n");
        assert_eq!(
            daemon.requests_to("POST", "/v1/tasks/task-1/cancel").len(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_the_daemon_is_asked() {
    let daemon = FakeAegisd::start(|_, _| panic!("no request expected"));
    for (args, says) in [
        (
            &["run", "--memory", "0", "--", "x"][..],
            "memory must be at least 64 MiB",
        ),
        (
            &["run", "--memory", "-1", "--", "x"],
            "memory must be a positive size",
        ),
        (
            &["run", "--timeout", "soon", "--", "x"],
            "'soon' is not a duration",
        ),
        (&["run", "-e", "9=x", "--", "x"], "not a variable name"),
        (&["run"], "required arguments were not provided"),
    ] {
        let o = run_aegis(daemon.home(), args).await;
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with("aegis: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("see `aegis run --help`"), "{err}");
    }
    assert!(daemon.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_is_one_line_and_exit_125() {
    let (_dir, home) = missing_home();
    let o = run_aegis(&home, &["run", "--", "true"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!(
            "aegis: aegisd is not running (no socket at {}); start it with `aegis up`\n",
            home.join("aegisd.sock").display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refusals_are_shown_as_they_are() {
    let daemon = FakeAegisd::start(|_, _| {
        json(
            503,
            &aegis_api::ApiError::new(
                aegis_api::ErrorCode::Unavailable,
                "image 'debian' is not built; run `aegis setup`",
            ),
        )
    });
    let o = run_aegis(daemon.home(), &["run", "--", "true"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "aegis: image 'debian' is not built; run `aegis setup`\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_says_which_image_names_are_built_in() {
    let daemon = FakeAegisd::start(|rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
        ("GET", "/v1/status") => json(
            200,
            &serde_json::json!({
                "status": "running", "version": "0.1.0", "pid": 1, "backend": "fake",
                "capabilities": {"pause": true, "memory_snapshot": false, "vsock": false,
                                 "virtio_fs": false, "accelerator": "none"},
                "home": "/h", "tasks_running": 0, "builtin_images": ["busybox", "debian"],
            }),
        ),
        ("GET", _) => not_found("no such image"),
        ("POST", "/v1/images/pull") => json(
            400,
            &aegis_api::ApiError::new(
                aegis_api::ErrorCode::InvalidRequest,
                "the registry has no image nosuch",
            ),
        ),
        _ => json(
            503,
            &aegis_api::ApiError::new(
                aegis_api::ErrorCode::Unavailable,
                "image 'debian' is not built; run `aegis setup`",
            ),
        ),
    });
    // A built-in image that is not built yet is not pulled: the daemon says how to build it.
    let o = run_aegis(daemon.home(), &["run", "--image", "debian", "--", "true"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "aegis: image 'debian' is not built; run `aegis setup`\n"
    );
    assert!(daemon.requests_to("POST", "/v1/images/pull").is_empty());

    // Any other name is an OCI image, pulled first.
    let o = run_aegis(daemon.home(), &["run", "--image", "nosuch", "--", "true"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("If you meant a built-in image, they are: busybox, debian"),
        "{}",
        stderr(&o)
    );
    assert_eq!(daemon.requests_to("POST", "/v1/images/pull").len(), 1);
    assert_eq!(daemon.requests_to("POST", "/v1/tasks").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_feed_for_good_says_how_to_pick_it_up_again() {
    let daemon = FakeAegisd::start(|rec, index| match rec.method.as_str() {
        "POST" => json(201, &task(TaskState::Booting)),
        _ if index == 1 => Reply::Chunks(vec![out(STDOUT, 0, b"partial")], Then::Cut),
        _ => json(
            404,
            &aegis_api::ApiError::new(
                aegis_api::ErrorCode::NotFound,
                "task 'task-1' does not exist",
            ),
        ),
    });
    let o = run_aegis(daemon.home(), &["run", "--", "x"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(o.stdout, b"partial");
    assert_eq!(
        stderr(&o),
        "aegis: lost the output of task task-1 (task 'task-1' does not exist); it may still be \
         running: follow it with `aegis task logs --follow task-1`\n"
    );
}
