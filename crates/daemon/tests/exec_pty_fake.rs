//! `exec` on a pseudo-terminal against the fake backend (the agent in-process opens a real
//! PTY on the host): the process sees a terminal of the requested size, a resize reaches it,
//! Ctrl-C typed into it interrupts it, and the end of its input (the client went away) hangs
//! it up with SIGHUP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_api::{CreateExec, CreateInstance, ErrorCode, Exec, PortProtocol, PortSpec, TtySize};
use aegis_testkit::daemon::{fixture, Fixture};
use aegis_testkit::net::free_port;
use aegisd::Daemon;
use bytes::Bytes;

async fn instance(d: &Arc<Daemon>) {
    let port = free_port();
    let req = CreateInstance {
        name: Some("web".into()),
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
        ..Default::default()
    };
    d.instances.create(d, req).await.unwrap();
}

fn tty(script: &str, rows: u16, cols: u16) -> CreateExec {
    CreateExec {
        command: vec!["sh".into(), "-c".into(), script.into()],
        tty: Some(TtySize { rows, cols }),
        ..Default::default()
    }
}

async fn wait_end(d: &Daemon, id: &str) -> Exec {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = d.instances.exec(d, id).unwrap().view();
        if e.state.is_ended() {
            return e;
        }
        assert!(Instant::now() < deadline, "exec {id} never ended: {e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screen(d: &Daemon, id: &str) -> String {
    let exec = d.instances.exec(d, id).unwrap();
    let mut rx = exec.output(false, (0, 0), d.shutdown.clone());
    let mut out = vec![];
    while let Some(line) = rx.recv().await {
        let ev: aegis_api::OutputEvent = serde_json::from_slice(&line).unwrap();
        out.extend_from_slice(&ev.bytes().unwrap_or_default());
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_sees_a_terminal_of_the_requested_size_and_its_resize() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d).await;
    let script = "test -t 0 && test -t 1 && test -t 2 && stty size && read x && stty size";
    let e = d
        .instances
        .create_exec("web", tty(script, 24, 80))
        .await
        .unwrap();
    let exec = d.instances.exec(&d, &e.id).unwrap();
    let mut input = exec.take_stdin().unwrap();
    // The first size is printed before the resize (the shell waits in `read`).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen(&d, &e.id).await.contains("24 80") {
        assert!(
            Instant::now() < deadline,
            "no size: {:?}",
            screen(&d, &e.id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec.resize(TtySize {
        rows: 30,
        cols: 100,
    })
    .await
    .unwrap();
    input.send(Bytes::from_static(b"go\n")).await.unwrap();
    let end = wait_end(&d, &e.id).await;
    assert_eq!(end.exit_code, Some(0), "{:?}", screen(&d, &e.id).await);
    let shown = screen(&d, &e.id).await;
    // A terminal: output lines end in CR LF, typed input is echoed.
    assert!(shown.contains("24 80\r\n"), "{shown:?}");
    assert!(shown.contains("go\r\n30 100\r\n"), "{shown:?}");
    assert_eq!(end.stderr_bytes, 0, "a terminal has one output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_interrupts_and_a_lost_client_hangs_up() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d).await;

    let e = d
        .instances
        .create_exec("web", tty("exec sleep 30", 24, 80))
        .await
        .unwrap();
    let mut input = d.instances.exec(&d, &e.id).unwrap().take_stdin().unwrap();
    input.send(Bytes::from_static(b"\x03")).await.unwrap();
    assert_eq!(
        wait_end(&d, &e.id).await.exit_code,
        Some(128 + 2),
        "SIGINT from ^C"
    );

    let e = d
        .instances
        .create_exec("web", tty("exec sleep 30", 24, 80))
        .await
        .unwrap();
    let input = d.instances.exec(&d, &e.id).unwrap().take_stdin().unwrap();
    drop(input); // the client went away: its upload ended
    assert_eq!(wait_end(&d, &e.id).await.exit_code, Some(128 + 1), "SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_terminal_sizes_and_resizes_are_refused() {
    let Fixture {
        daemon: d,
        home: _home,
        ..
    } = fixture().await;
    instance(&d).await;
    let zero = d
        .instances
        .create_exec("web", tty("true", 0, 80))
        .await
        .unwrap_err();
    assert_eq!(zero.error.code, ErrorCode::InvalidRequest);
    assert!(
        zero.error.message.contains("rows 0"),
        "{}",
        zero.error.message
    );
    let plain = CreateExec {
        command: vec!["sleep".into(), "5".into()],
        ..Default::default()
    };
    let e = d.instances.create_exec("web", plain).await.unwrap();
    let exec = d.instances.exec(&d, &e.id).unwrap();
    let no_tty = exec
        .resize(TtySize { rows: 10, cols: 10 })
        .await
        .unwrap_err();
    assert_eq!(no_tty.error.code, ErrorCode::Conflict);
    let huge = exec
        .resize(TtySize {
            rows: 10,
            cols: 60000,
        })
        .await
        .unwrap_err();
    assert_eq!(huge.error.code, ErrorCode::InvalidRequest);
    exec.signal(9).await.unwrap();
}
