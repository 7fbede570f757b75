//! Serve mode (`aegis run --expose`) and `aegis instance|stop|pause|resume` against a
//! scripted daemon.

mod support;

use std::time::Duration;

use aegis_api::{CreateInstance, IdlePolicy, InstanceState, PortProtocol, StreamName};
use support::*;

const STDOUT: StreamName = StreamName::Stdout;
const STDERR: StreamName = StreamName::Stderr;

const SERVING: &str = "\
aegis: serving http on http://127.0.0.1:41234 -> guest port 8000
aegis: serving tcp on tcp://127.0.0.1:41235 -> guest port 5432
aegis: instance inst-1 (web); Ctrl-C to stop and remove it
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_expose_creates_an_instance_and_follows_its_logs_until_it_is_removed() {
    let binary: Vec<u8> = (0..=255u8).collect();
    let bin = binary.clone();
    let daemon = FakeAegisd::start(
        move |rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
            ("POST", "/v1/instances") => json(201, &instance(InstanceState::Terminated)),
            ("GET", "/v1/images/debian") => json(
                200,
                &serde_json::json!({"reference": "debian", "kind": "builtin", "size_bytes": 1, "layers": 1}),
            ),
            ("GET", uri) if uri.starts_with("/v1/instances/inst-1/logs?follow=true") => {
                match offsets(uri) {
                    // The feed breaks off...
                    (0, 0) => Reply::Chunks(
                        vec![out(STDOUT, 0, b"no newline"), out(STDERR, 0, b"err\r\n")],
                        Then::Cut,
                    ),
                    // ...is resumed from the cursors (with an overlap to drop), then ends
                    // without an end event: the instance was deleted.
                    (10, 5) => Reply::Chunks(
                        vec![out(STDOUT, 5, b"wline"), out(STDOUT, 15, &bin)],
                        Then::End,
                    ),
                    _ => not_found("instance 'inst-1' does not exist"),
                }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let o = run_aegis(
        daemon.home(),
        &[
            "run",
            "--expose",
            "8000",
            "--expose",
            "15432:5432:tcp",
            "--expose",
            "50051:grpc",
            "--expose",
            "8765:websocket",
            "--name",
            "web",
            "--idle-policy",
            "idle",
            "--pause-after",
            "30s",
            "--terminate-after",
            "1h",
            "--wake-timeout",
            "2m",
            "--no-loading-page",
            "--image",
            "debian",
            "-e",
            "A=1",
            "--memory",
            "1G",
            "--cpus",
            "2",
            "-w",
            "/srv",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut want = b"no newline".to_vec();
    want.extend(&binary);
    assert_eq!(o.stdout, want);
    assert_eq!(
        stderr(&o),
        format!("{SERVING}err\r\naegis: instance inst-1 was removed\n")
    );

    let create = &daemon.requests_to("POST", "/v1/instances")[0];
    let sent: CreateInstance = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(sent.command, ["python3", "-m", "http.server", "8000"]);
    assert_eq!(sent.name.as_deref(), Some("web"));
    let ports: Vec<(Option<u16>, u16, PortProtocol)> = sent
        .expose
        .iter()
        .map(|p| (p.host_port, p.guest_port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (None, 8000, PortProtocol::Http),
            (Some(15432), 5432, PortProtocol::Tcp),
            (None, 50051, PortProtocol::Grpc),
            (None, 8765, PortProtocol::Websocket),
        ]
    );
    assert_eq!(sent.idle_policy, IdlePolicy::Idle);
    assert_eq!(
        (
            sent.pause_after_secs,
            sent.terminate_after_secs,
            sent.wake_timeout_secs
        ),
        (Some(30), Some(3600), Some(120))
    );
    assert_eq!(sent.loading_page, Some(false));
    assert_eq!(sent.image.as_deref(), Some("debian"));
    assert_eq!(sent.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(
        (sent.memory_mib, sent.vcpus, sent.workdir.as_deref()),
        (Some(1024), Some(2), Some("/srv"))
    );
    assert_eq!(
        daemon.requests_to("GET", "/v1/instances/inst-1/logs").len(),
        3
    );
    assert!(daemon.requests_to("DELETE", "/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_prints_the_instance_id_only_on_stdout() {
    let daemon = FakeAegisd::start(|_, _| json(201, &instance(InstanceState::Terminated)));
    let o = run_aegis(
        daemon.home(),
        &[
            "run",
            "-d",
            "--expose",
            "8000:http",
            "--",
            "python3",
            "app.py",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inst-1\n");
    // Where it is served still goes to stderr; no Ctrl-C hint, there is nothing to press.
    assert_eq!(
        stderr(&o),
        "aegis: serving http on http://127.0.0.1:41234 -> guest port 8000\n\
         aegis: serving tcp on tcp://127.0.0.1:41235 -> guest port 5432\n"
    );
    assert_eq!(daemon.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_removes_the_instance_and_exits_130() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let daemon = FakeAegisd::start(|rec, _| match rec.method.as_str() {
            "POST" => json(201, &instance(InstanceState::Terminated)),
            "DELETE" => Reply::Body(204, Vec::new()),
            _ => Reply::Chunks(vec![out(STDOUT, 0, b"serving\n")], Then::Hang),
        });
        let mut child = aegis(daemon.home())
            .args(["run", "--expose", "8000", "--", "python3", "app.py"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 8];
        let mut pipe = child.stdout.take().unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read_exact(&mut pipe, &mut first),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&first, b"serving\n");
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            format!("{SERVING}aegis: instance inst-1 removed\n")
        );
        assert_eq!(
            daemon.requests_to("DELETE", "/v1/instances/inst-1").len(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expose_specs_are_refused_before_the_daemon_is_asked() {
    let daemon = FakeAegisd::start(|_, _| panic!("no request expected"));
    for (args, says) in [
        (&["run", "--expose", "0", "--", "x"][..], "guest port 0 is not a port"),
        (&["run", "--expose", "70000", "--", "x"], "guest port 70000 is out of range"),
        (&["run", "--expose", "8080:99999:http", "--", "x"], "guest port 99999 is out of range"),
        (&["run", "--expose", "80:udp", "--", "x"], "unknown protocol 'udp'"),
        (&["run", "--expose", "a:b:c:d", "--", "x"], "too many ':'"),
        (
            &["run", "--expose", "80", "--expose", "8080:80:tcp", "--", "x"],
            "invalid value '8080:80:tcp' for '--expose <SPEC>': guest port 80 is already exposed by '80:http'",
        ),
        (
            &["run", "--expose", "1:80", "--expose", "1:81", "--", "x"],
            "host port 1 is already used",
        ),
        (
            &["run", "--name", "web", "--", "x"],
            "the argument '--name <NAME>' is for serve mode only: add --expose <SPEC>",
        ),
        (&["run", "--expose", "80", "--timeout", "1m", "--", "x"], "cannot be used with"),
        (&["run", "--expose", "80", "--idle-policy", "off", "--", "x"], "use 'on'"),
        (&["run", "--expose", "80", "--pause-after", "soon", "--", "x"], "not a duration"),
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
async fn daemon_refusals_of_an_instance_are_shown_as_they_are() {
    let daemon = FakeAegisd::start(|_, _| {
        json(
            409,
            &aegis_api::ApiError::new(
                aegis_api::ErrorCode::Conflict,
                "host port 8080 is in use; choose another or leave it out",
            ),
        )
    });
    let o = run_aegis(daemon.home(), &["run", "--expose", "8080:80", "--", "x"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "aegis: host port 8080 is in use; choose another or leave it out\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_subcommands_and_shortcuts_use_their_routes() {
    let daemon = FakeAegisd::start(|rec, _| match (rec.method.as_str(), rec.uri.as_str()) {
        ("GET", "/v1/instances") => {
            let mut i = instance(InstanceState::Paused);
            i.active_connections = 3;
            json(200, &vec![i])
        }
        ("GET", "/v1/instances/web") => json(200, &instance(InstanceState::Running)),
        ("POST", "/v1/instances/web/pause") => json(200, &instance(InstanceState::Paused)),
        ("POST", "/v1/instances/web/resume") => json(200, &instance(InstanceState::Running)),
        ("POST", "/v1/instances/web/stop") => json(200, &instance(InstanceState::Terminated)),
        ("DELETE", "/v1/instances/web") => Reply::Body(204, Vec::new()),
        ("GET", uri) if uri.starts_with("/v1/instances/web/logs?follow=false") => Reply::Chunks(
            vec![out(STDOUT, 0, b"so far"), out(STDERR, 0, b"e")],
            Then::End,
        ),
        ("GET", uri) if uri.starts_with("/v1/instances/web/logs?follow=true") => {
            match offsets(uri) {
                (0, 0) => Reply::Chunks(vec![out(STDOUT, 0, b"live")], Then::End),
                _ => not_found("instance 'web' does not exist"),
            }
        }
        _ => not_found("instance 'nope' does not exist"),
    });
    let home = daemon.home();

    let o = run_aegis(home, &["instance", "ls"]).await;
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "STATE", "CONNS", "LAST-ACTIVE", "ENDPOINTS"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..4], ["inst-1", "web", "paused", "3"], "{lines:?}");
    assert!(
        lines[1].ends_with("127.0.0.1:41234->8000/http, 127.0.0.1:41235->5432/tcp"),
        "{lines:?}"
    );

    let o = run_aegis(home, &["instance", "list", "--json"]).await;
    let all: Vec<aegis_api::Instance> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all.len(), 1);

    let o = run_aegis(home, &["instance", "inspect", "web"]).await;
    let i: aegis_api::Instance = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(i.state, InstanceState::Running);

    let o = run_aegis(home, &["instance", "logs", "web"]).await;
    assert_eq!(
        (o.stdout.as_slice(), o.stderr.as_slice()),
        (&b"so far"[..], &b"e"[..])
    );

    let o = run_aegis(home, &["instance", "logs", "-f", "web"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"live");
    assert_eq!(stderr(&o), "aegis: instance web was removed\n");

    for (args, printed) in [
        (&["pause", "web"][..], "inst-1 paused\n"),
        (&["resume", "web"], "inst-1 running\n"),
        (&["stop", "web"], "inst-1 terminated\n"),
        (&["instance", "pause", "web"], "inst-1 paused\n"),
        (&["instance", "resume", "web"], "inst-1 running\n"),
        (&["instance", "stop", "web"], "inst-1 terminated\n"),
    ] {
        let o = run_aegis(home, args).await;
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), printed, "{args:?}");
    }
    assert_eq!(
        daemon.requests_to("POST", "/v1/instances/web/stop").len(),
        2
    );

    let o = run_aegis(home, &["instance", "rm", "web", "nope"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stdout(&o), "web\n");
    assert_eq!(
        stderr(&o),
        "aegis: cannot remove instance nope: instance 'nope' does not exist\n"
    );

    for args in [
        &["instance", "inspect", "nope"][..],
        &["instance", "logs", "-f", "nope"],
        &["stop", "nope"],
    ] {
        let o = run_aegis(home, args).await;
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert_eq!(
            stderr(&o),
            "aegis: instance 'nope' does not exist\n",
            "{args:?}"
        );
    }
}
