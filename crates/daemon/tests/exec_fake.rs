//! `exec` against the fake backend (the guest agent in-process, commands as host processes):
//! wake before the exec, separate streams, exit codes, stdin, activity that holds off the idle
//! pause, and the bad inputs (unknown or removed instance, missing command, bad signal).
//! Real VMs cover exec in `tests/tests/exec.rs`.

use std::time::{Duration, Instant};

use aegis_api::{
    CreateExec, CreateInstance, ErrorCode, Exec, ExecState, InstanceState, PortProtocol, PortSpec,
};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::free_port;
use aegisd::Daemon;
use bytes::Bytes;

/// An instance serving a Python HTTP server on a free port, idle timers as given.
async fn instance(d: &std::sync::Arc<Daemon>, name: &str, pause_after: u64) -> String {
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
        pause_after_secs: Some(pause_after),
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

async fn wait_end(d: &Daemon, id: &str) -> Exec {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = d.instances.exec(d, id).unwrap().view();
        if e.state.is_ended() {
            return e;
        }
        assert!(Instant::now() < deadline, "exec {id} never ended: {e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole output of an ended exec, by stream, through the API's feed.
async fn output(d: &Daemon, id: &str) -> (Vec<u8>, Vec<u8>) {
    let exec = d.instances.exec(d, id).unwrap();
    let mut rx = exec.output(true, (0, 0), d.shutdown.clone());
    let (mut out, mut err) = (vec![], vec![]);
    while let Some(line) = rx.recv().await {
        let ev: aegis_api::OutputEvent = serde_json::from_slice(&line).unwrap();
        if let aegis_api::OutputEvent::Output { stream, .. } = &ev {
            let data = ev.bytes().unwrap();
            match stream {
                aegis_api::StreamName::Stdout => out.extend_from_slice(&data),
                aegis_api::StreamName::Stderr => err.extend_from_slice(&data),
            }
        }
    }
    (out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_wakes_a_terminated_instance_and_keeps_streams_apart() {
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    let id = instance(&d, "web", 60).await;
    assert_eq!(fake.boots(), 0);
    let e = d
        .instances
        .create_exec("web", sh("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(e.instance, id);
    assert_eq!(fake.boots(), 1, "the exec woke the instance");
    let end = wait_end(&d, &e.id).await;
    assert_eq!((end.state, end.exit_code), (ExecState::Exited, Some(3)));
    assert_eq!(
        output(&d, &e.id).await,
        (b"out\n".to_vec(), b"err\n".to_vec())
    );
    assert_eq!((end.stdout_bytes, end.stderr_bytes), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_resumes_a_paused_instance_and_several_run_at_once() {
    let Fixture {
        daemon: d,
        fake,
        home: _home,
    } = fixture().await;
    instance(&d, "web", 60).await;
    d.instances.resume("web").await.unwrap();
    d.instances.pause("web").await.unwrap();
    let rt = d.instances.get("web").unwrap();
    assert_eq!(rt.state(), InstanceState::Paused);
    let (a, b) = tokio::join!(
        d.instances.create_exec("web", sh("sleep 0.3; echo a")),
        d.instances.create_exec("web", sh("sleep 0.3; echo b")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(rt.view().stats.resumes, 1, "resumed, not booted again");
    assert_eq!(fake.boots(), 1);
    assert_eq!(wait_end(&d, &a.id).await.exit_code, Some(0));
    assert_eq!(wait_end(&d, &b.id).await.exit_code, Some(0));
    assert_eq!(output(&d, &a.id).await.0, b"a\n");
    assert_eq!(output(&d, &b.id).await.0, b"b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_fed_and_its_end_is_eof() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d, "web", 60).await;
    let req = CreateExec {
        command: vec!["cat".into()],
        stdin: true,
        ..Default::default()
    };
    let e = d.instances.create_exec("web", req).await.unwrap();
    let exec = d.instances.exec(&d, &e.id).unwrap();
    let mut tx = exec.take_stdin().unwrap();
    let Err(again) = exec.take_stdin() else {
        panic!("a second stdin upload was accepted");
    };
    assert_eq!(
        again.error.code,
        ErrorCode::Conflict,
        "one stdin upload per exec"
    );
    tx.send(Bytes::from_static(b"hello ")).await.unwrap();
    tx.send(Bytes::from_static(b"stdin")).await.unwrap();
    tx.finish().await.unwrap();
    assert_eq!(wait_end(&d, &e.id).await.exit_code, Some(0), "cat saw EOF");
    assert_eq!(output(&d, &e.id).await.0, b"hello stdin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_exec_holds_off_the_idle_pause() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d, "web", 1).await;
    let e = d.instances.create_exec("web", sh("sleep 3")).await.unwrap();
    let rt = d.instances.get("web").unwrap();
    let held = rt.holders.holders();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].kind.as_str(), held[0].label.as_str()),
        ("exec", "sh -c sleep 3")
    );
    let end = wait_end(&d, &e.id).await;
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(rt.view().stats.pauses, 0, "paused mid-command");
    assert!(rt.holders.holders().is_empty());
    // Once the command is over the idle timer applies again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.state() != InstanceState::Paused {
        assert!(Instant::now() < deadline, "never paused after the exec");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_execs_say_what_is_wrong() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let unknown = d
        .instances
        .create_exec("nope", sh("true"))
        .await
        .unwrap_err();
    assert_eq!(unknown.error.code, ErrorCode::NotFound);
    assert!(
        unknown.error.message.contains("no instance 'nope'"),
        "{unknown:?}"
    );

    instance(&d, "web", 60).await;
    let empty = d
        .instances
        .create_exec("web", CreateExec::default())
        .await
        .unwrap_err();
    assert_eq!(empty.error.code, ErrorCode::InvalidRequest);
    let bad_env = CreateExec {
        env: vec![("A=B".into(), "x".into())],
        ..sh("true")
    };
    let bad_env = d.instances.create_exec("web", bad_env).await.unwrap_err();
    assert_eq!(bad_env.error.code, ErrorCode::InvalidRequest);

    let missing = CreateExec {
        command: vec!["no-such-command-aegis".into()],
        ..Default::default()
    };
    let e = d.instances.create_exec("web", missing).await.unwrap();
    assert_eq!((e.state, e.exit_code), (ExecState::Exited, Some(127)));
    assert!(e.error.is_some());

    let e = d
        .instances
        .create_exec("web", sh("sleep 30"))
        .await
        .unwrap();
    let exec = d.instances.exec(&d, &e.id).unwrap();
    let sig = exec.signal(0).await.unwrap_err();
    assert_eq!(sig.error.code, ErrorCode::InvalidRequest);
    exec.signal(15).await.unwrap(); // SIGTERM
    assert_eq!(wait_end(&d, &e.id).await.exit_code, Some(128 + 15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_instance_ends_its_execs() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d, "web", 60).await;
    let e = d
        .instances
        .create_exec("web", sh("sleep 30"))
        .await
        .unwrap();
    let exec = d.instances.exec(&d, &e.id).unwrap();
    d.instances.delete(&d, "web").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exec.view().state.is_ended() {
        assert!(Instant::now() < deadline, "the exec outlived its instance");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = exec.view();
    assert_eq!(end.state, ExecState::Failed);
    assert!(end.error.unwrap().contains("VM stopped"));
    let gone = d
        .instances
        .create_exec("web", sh("true"))
        .await
        .unwrap_err();
    assert_eq!(gone.error.code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_output_go_to_disk_not_memory() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d, "web", 60).await;
    let e = d
        .instances
        .create_exec("web", sh("head -c 104857600 /dev/zero"))
        .await
        .unwrap();
    let end = wait_end(&d, &e.id).await;
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(end.stdout_bytes, 100 << 20);
    // A reader from any offset sees the tail: the bytes are in the exec's log.
    let exec = d.instances.exec(&d, &e.id).unwrap();
    let mut rx = exec.output(false, ((100 << 20) - 10, 0), d.shutdown.clone());
    let line = rx.recv().await.unwrap();
    let ev: aegis_api::OutputEvent = serde_json::from_slice(&line).unwrap();
    assert_eq!(ev.bytes().unwrap(), vec![0u8; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_into_an_instance_that_cannot_wake_says_why() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    let req = CreateInstance {
        name: Some("broken".into()),
        command: vec!["no-such-server-aegis".into()],
        expose: vec![PortSpec {
            guest_port: free_port(),
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        ..Default::default()
    };
    d.instances.create(&d, req).await.unwrap();
    let e = d
        .instances
        .create_exec("broken", sh("true"))
        .await
        .unwrap_err();
    assert_eq!(e.error.code, ErrorCode::Unavailable);
    assert!(
        e.error.message.contains("cannot wake instance broken")
            && e.error.message.contains("no-such-server-aegis"),
        "{}",
        e.error.message
    );
    let rt = d.instances.get("broken").unwrap();
    assert!(
        rt.holders.holders().is_empty(),
        "a failed exec holds nothing"
    );
}
