//! Execs outlive aegisd (fake backend, through the API router): after a restart on the same
//! home, `GET /v1/execs/{id}` shows an exec of the previous daemon from its registry row and
//! its output feed reads the durable log from any offset, nothing lost or repeated; an exec
//! still running when aegisd died is `failed` with a message that says what happened and
//! that its output is kept (whether aegisd crashed or stopped cleanly). Stdin, signal and
//! resize answer 409, unknown ids 404.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::{
    CreateExec, CreateInstance, Exec, ExecState, OutputEvent, PortProtocol, PortSpec, StreamName,
    TtySize,
};
use aegis_testkit::daemon::start;
use aegis_testkit::net::free_port;
use aegis_vmm::FakeBackend;
use aegisd::Daemon;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// An instance serving a Python HTTP server on a free port.
async fn instance(d: &Arc<Daemon>, name: &str) -> String {
    let port = free_port();
    let req = CreateInstance {
        name: Some(name.into()),
        command: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        expose: vec![PortSpec {
            guest_port: port,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        pause_after_secs: Some(60),
        ..Default::default()
    };
    d.instances.create(d, req).await.unwrap().id
}

fn sh(script: &str) -> CreateExec {
    CreateExec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// One request to the daemon's API router: (status, body).
async fn call(d: &Arc<Daemon>, method: &str, path: &str) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let resp = aegisd::api::router(d.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: the body never ended"))
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_exec(d: &Arc<Daemon>, id: &str) -> Exec {
    let (status, body) = call(d, "GET", &format!("/v1/execs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The output from `offsets` through `GET /v1/execs/{id}/output?follow=true`, checking that
/// each event starts where the previous one of its stream ended (nothing lost or repeated).
/// The feed must end by itself: the exec has ended.
async fn output(d: &Arc<Daemon>, id: &str, offsets: (u64, u64)) -> (Vec<u8>, Vec<u8>) {
    let path = format!(
        "/v1/execs/{id}/output?follow=true&stdout_offset={}&stderr_offset={}",
        offsets.0, offsets.1
    );
    let (status, body) = call(d, "GET", &path).await;
    assert_eq!(status, 200, "{body}");
    let (mut out, mut err) = (vec![], vec![]);
    let mut at = offsets;
    for line in body.lines() {
        let ev: OutputEvent = serde_json::from_str(line).unwrap();
        let OutputEvent::Output { stream, offset, .. } = &ev else {
            continue;
        };
        let data = ev.bytes().unwrap();
        let (cursor, buf) = match stream {
            StreamName::Stdout => (&mut at.0, &mut out),
            StreamName::Stderr => (&mut at.1, &mut err),
        };
        assert_eq!(*offset, *cursor, "{stream:?} event out of place in {body}");
        *cursor += data.len() as u64;
        buf.extend_from_slice(&data);
    }
    (out, err)
}

/// Waits until `pred` holds of the exec's view in `d`.
async fn wait_for(d: &Arc<Daemon>, id: &str, what: &str, pred: impl Fn(&Exec) -> bool) -> Exec {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = d.instances.exec(d, id).unwrap().view();
        if pred(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "exec {id} never {what}: {e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stdin, signal and resize of an ended exec answer 409 and say why (a resize of an exec
/// without a terminal says that first).
async fn refuses_input(d: &Arc<Daemon>, id: &str, tty: bool) {
    let resize = if tty { "has ended" } else { "no terminal" };
    for (method, path, says) in [
        ("POST", format!("/v1/execs/{id}/stdin"), "has ended"),
        (
            "POST",
            format!("/v1/execs/{id}/signal?signal=15"),
            "has ended",
        ),
        (
            "POST",
            format!("/v1/execs/{id}/resize?rows=10&cols=40"),
            resize,
        ),
    ] {
        let (status, body) = call(d, method, &path).await;
        assert_eq!(status, 409, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_exec_is_shown_and_read_after_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let (instance_id, id, tty_id) = {
        let d = start(home.path(), &fake).await;
        let instance_id = instance(&d, "web").await;
        let script = "printf 'one\\ntwo\\nthree\\n'; printf oops >&2; exit 7";
        let e = d.instances.create_exec("web", sh(script)).await.unwrap();
        let end = wait_for(&d, &e.id, "ended", |e| e.state.is_ended()).await;
        assert_eq!((end.state, end.exit_code), (ExecState::Exited, Some(7)));
        let on_tty = CreateExec {
            tty: Some(TtySize { rows: 24, cols: 80 }),
            ..sh("echo screen")
        };
        let t = d.instances.create_exec("web", on_tty).await.unwrap();
        wait_for(&d, &t.id, "ended", |e| e.state.is_ended()).await;
        d.instances.shutdown(Duration::from_secs(5)).await;
        d.shutdown.cancel();
        (instance_id, e.id, t.id)
    };

    let d = start(home.path(), &fake).await;
    d.instances.reload(&d).await;
    let e = get_exec(&d, &id).await;
    assert_eq!(
        (e.state, e.exit_code, e.error.as_deref()),
        (ExecState::Exited, Some(7), None)
    );
    assert_eq!(
        (e.instance.as_str(), e.command[0].as_str()),
        (instance_id.as_str(), "sh")
    );
    assert_eq!((e.stdout_bytes, e.stderr_bytes), (14, 4));
    assert_eq!(
        output(&d, &id, (0, 0)).await,
        (b"one\ntwo\nthree\n".to_vec(), b"oops".to_vec())
    );
    // A client that had read "one\n" and "oo" resumes from there.
    assert_eq!(
        output(&d, &id, (4, 2)).await,
        (b"two\nthree\n".to_vec(), b"ps".to_vec())
    );
    assert_eq!(output(&d, &id, (14, 4)).await, (vec![], vec![]));
    refuses_input(&d, &id, false).await;
    let t = get_exec(&d, &tty_id).await;
    assert_eq!((t.state, t.exit_code), (ExecState::Exited, Some(0)));
    assert_eq!(output(&d, &tty_id, (0, 0)).await.0, b"screen\r\n");
    refuses_input(&d, &tty_id, true).await;

    let (status, body) = call(&d, "GET", "/v1/execs/exec-000000000000").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(&d, "GET", "/v1/execs/exec-000000000000/output").await;
    assert_eq!(status, 404);

    // Removing the instance takes its execs' records (and their output with its directory).
    d.instances.delete(&d, "web").await.unwrap();
    let (status, body) = call(&d, "GET", &format!("/v1/execs/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(d.registry.list_execs(&instance_id).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_running_when_aegisd_dies_is_failed_after_the_restart_and_keeps_its_output() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let (id, vms, old_daemon_stop) = {
        let d = start(home.path(), &fake).await;
        instance(&d, "web").await;
        let script = "echo started; echo warn >&2; sleep 60";
        let e = d.instances.create_exec("web", sh(script)).await.unwrap();
        assert_eq!(e.state, ExecState::Running);
        wait_for(&d, &e.id, "wrote its output", |e| {
            (e.stdout_bytes, e.stderr_bytes) == (8, 5)
        })
        .await;
        // aegisd dies here: no shutdown, nothing more recorded by it.
        (e.id, fake.running(), d.shutdown.clone())
    };

    let d = start(home.path(), &fake).await;
    // The old VM goes as it would have with its daemon (it had to outlive the restart here:
    // both daemons share one fake backend), and the old daemon's leftovers stop.
    for vm in &vms {
        fake.crash(vm);
    }
    old_daemon_stop.cancel();

    let e = get_exec(&d, &id).await;
    assert_eq!((e.state, e.exit_code), (ExecState::Failed, None));
    let why = e.error.unwrap_or_default();
    assert!(
        why.contains("aegisd restarted while this exec ran")
            && why.contains("output up to then is kept"),
        "{why}"
    );
    assert_eq!((e.stdout_bytes, e.stderr_bytes), (8, 5));
    assert_eq!(
        output(&d, &id, (0, 0)).await,
        (b"started\n".to_vec(), b"warn\n".to_vec())
    );
    assert_eq!(
        output(&d, &id, (3, 4)).await,
        (b"rted\n".to_vec(), b"\n".to_vec())
    );
    refuses_input(&d, &id, false).await;

    // The old daemon's watcher saw its VM go after the restart: the verdict stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = get_exec(&d, &id).await;
    assert_eq!(again.error.as_deref(), Some(why.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_records_why_a_running_exec_failed() {
    let home = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::new());
    let id = {
        let d = start(home.path(), &fake).await;
        instance(&d, "web").await;
        let e = d
            .instances
            .create_exec("web", sh("echo started; sleep 60"))
            .await
            .unwrap();
        wait_for(&d, &e.id, "wrote its output", |e| e.stdout_bytes == 8).await;
        // As `Daemon::serve` stops: the token first, then every VM.
        d.shutdown.cancel();
        d.instances.shutdown(Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.registry.get_exec(&e.id).unwrap().unwrap().state == ExecState::Running {
            assert!(
                Instant::now() < deadline,
                "the exec's end was never recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        e.id
    };

    let d = start(home.path(), &fake).await;
    let e = get_exec(&d, &id).await;
    assert_eq!((e.state, e.exit_code), (ExecState::Failed, None));
    let why = e.error.unwrap_or_default();
    assert!(
        why.contains("aegisd shut down while this exec ran")
            && why.contains("output up to then is kept"),
        "{why}"
    );
    assert_eq!(output(&d, &id, (0, 0)).await.0, b"started\n");
}
