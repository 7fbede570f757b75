//! The agent in-process over a duplex, driven by a host-side session, as the fake backend
//! and the daemon use it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_proto::{
    ExitStatus, GuestMessage, HostMessage, ProcId, ProcessSpec, Session, Side, SpawnErrorKind,
    Stream, PROTOCOL_VERSION,
};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use aegis_testkit::guest::process as spec;

use super::*;

/// Bound on any single wait in these tests, so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

struct Host {
    session: Session,
    /// Cuts the host's end of the connection (`Session::close` leaves it open).
    link: crate::session_io::IoControl,
    inbox: mpsc::Receiver<GuestMessage>,
    agent: Arc<Agent>,
    served: JoinHandle<SessionEnd>,
    _root: tempfile::TempDir,
}

fn config(root: &std::path::Path) -> AgentConfig {
    AgentConfig {
        pid1: false,
        base_env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/root".into()),
        ],
        kernel_release: "test-kernel".into(),
        root: root.to_path_buf(),
    }
}

async fn connect(agent: Arc<Agent>, root: tempfile::TempDir) -> Host {
    let (host_io, guest_io) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve(guest_io).await }
    });
    let (host_io, link) = crate::session_io::wrap(host_io);
    let (session, inbox) = Session::start::<GuestMessage, _>(host_io, Side::Host);
    let mut host = Host {
        session,
        link,
        inbox,
        agent,
        served,
        _root: root,
    };
    match host.next().await {
        GuestMessage::Hello {
            protocol,
            kernel_release,
            boot_id,
        } => {
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert_eq!(kernel_release, "test-kernel");
            assert_eq!(boot_id.len(), 36);
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    host
}

async fn start() -> Host {
    let root = tempfile::tempdir().unwrap();
    let agent = Arc::new(Agent::new(config(root.path())));
    connect(agent, root).await
}

/// What a finished process produced.
#[derive(Debug)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: ExitStatus,
}

impl Host {
    async fn next(&mut self) -> GuestMessage {
        tokio::time::timeout(LIMIT, self.inbox.recv())
            .await
            .expect("no message from the guest in time")
            .expect("session closed")
    }

    async fn send(&self, msg: HostMessage) {
        self.session.send(msg).await.unwrap();
    }

    /// Sends Spawn with fresh stdout/stderr streams; returns them once Spawned arrived.
    async fn spawn(
        &mut self,
        id: ProcId,
        spec: ProcessSpec,
        stdin: bool,
    ) -> (Option<Stream>, Stream, Stream) {
        let (stdin, stdout, stderr) =
            aegis_testkit::guest::spawn_with_stdin(&self.session, id, spec, stdin).await;
        match self.next().await {
            GuestMessage::Spawned { id: got, pid } => {
                assert_eq!(got, id);
                assert!(pid > 1);
            }
            other => panic!("expected Spawned, got {other:?}"),
        }
        (stdin, stdout, stderr)
    }

    /// Reads both outputs to their end, then expects `Exited`.
    async fn finish(&mut self, id: ProcId, stdout: Stream, stderr: Stream) -> Run {
        let (mut out, mut err) = (stdout.recv, stderr.recv);
        let (o, e) = tokio::time::timeout(LIMIT, async {
            tokio::join!(out.read_to_end(), err.read_to_end())
        })
        .await
        .expect("output did not end in time");
        let status = match self.next().await {
            GuestMessage::Exited { id: got, status } => {
                assert_eq!(got, id);
                status
            }
            other => panic!("expected Exited, got {other:?}"),
        };
        Run {
            stdout: o.unwrap(),
            stderr: e.unwrap(),
            status,
        }
    }

    async fn run(&mut self, id: ProcId, spec: ProcessSpec) -> Run {
        let (_, out, err) = self.spawn(id, spec, false).await;
        self.finish(id, out, err).await
    }
}

#[tokio::test]
async fn echo_reaches_stdout() {
    let mut host = start().await;
    let run = host.run(1, spec(&["echo", "hi"])).await;
    assert_eq!(run.stdout, b"hi\n");
    assert_eq!(run.stderr, b"");
    assert_eq!(run.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn stderr_is_kept_apart_and_exit_code_reported() {
    let mut host = start().await;
    let run = host
        .run(1, spec(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await;
    assert_eq!(run.stdout, b"out\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.status, ExitStatus::Code(3));
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let mut host = start().await;
    std::fs::create_dir(host._root.path().join("work")).unwrap();
    let mut s = spec(&["sh", "-c", "echo $A $B; pwd"]);
    s.env = vec![("A".into(), "1".into()), ("HOME".into(), "/x".into())];
    s.env.push(("B".into(), "$HOME".into()));
    s.cwd = Some("/work".into());
    let run = host.run(1, s).await;
    let expected = format!("1 $HOME\n{}\n", host._root.path().join("work").display());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected);
}

#[tokio::test]
async fn signal_reaches_the_process_group() {
    let mut host = start().await;
    let (_, out, err) = host.spawn(7, spec(&["sleep", "1000"]), false).await;
    host.send(HostMessage::Signal { id: 7, signal: 9 }).await;
    let run = host.finish(7, out, err).await;
    assert_eq!(run.status, ExitStatus::Signal(9));
    // Unknown ids are ignored, the session carries on.
    host.send(HostMessage::Signal { id: 99, signal: 9 }).await;
    host.send(HostMessage::Ping { nonce: 5 }).await;
    assert_eq!(host.next().await, GuestMessage::Pong { nonce: 5 });
}

#[tokio::test]
async fn spawn_failures_are_classified() {
    let mut host = start().await;
    let out = host.session.open_stream();
    host.send(HostMessage::Spawn {
        id: 1,
        spec: spec(&["no-such-command-aegis"]),
        stdin: None,
        stdout: out.id(),
        stderr: out.id(),
    })
    .await;
    match host.next().await {
        GuestMessage::SpawnFailed { id: 1, error } => {
            assert_eq!(error.kind, SpawnErrorKind::NotFound);
            assert!(error.message.contains("no-such-command-aegis"), "{error:?}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    host.send(HostMessage::Spawn {
        id: 2,
        spec: spec(&[]),
        stdin: None,
        stdout: out.id(),
        stderr: out.id(),
    })
    .await;
    assert!(matches!(
        host.next().await,
        GuestMessage::SpawnFailed { id: 2, error } if error.kind == SpawnErrorKind::Invalid
    ));
}

#[tokio::test]
async fn ten_megabytes_of_output_arrive_byte_exact() {
    let mut host = start().await;
    let run = host.run(1, spec(&["seq", "1", "1400000"])).await;
    let mut expected = String::with_capacity(10_000_000);
    for i in 1..=1_400_000u32 {
        expected.push_str(&i.to_string());
        expected.push('\n');
    }
    assert!(expected.len() > 10_000_000);
    assert_eq!(run.stdout.len(), expected.len());
    assert!(run.stdout == expected.as_bytes());
    assert_eq!(run.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn stdin_round_trips_through_cat() {
    let mut host = start().await;
    let (stdin, out, err) = host.spawn(1, spec(&["cat"]), true).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut tx = stdin.unwrap().send;
    let input = Bytes::from(data.clone());
    let writer = tokio::spawn(async move {
        tx.send(input).await.unwrap();
        tx.finish().await.unwrap();
    });
    let run = host.finish(1, out, err).await;
    writer.await.unwrap();
    assert_eq!(run.stdout.len(), data.len());
    assert!(run.stdout == data);
    assert_eq!(run.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn one_stream_can_carry_stdin_stdout_and_stderr() {
    let mut host = start().await;
    let io = host.session.open_stream();
    host.send(HostMessage::Spawn {
        id: 1,
        spec: spec(&["sh", "-c", "read x; echo got $x; echo oops >&2"]),
        stdin: Some(io.id()),
        stdout: io.id(),
        stderr: io.id(),
    })
    .await;
    assert!(matches!(
        host.next().await,
        GuestMessage::Spawned { id: 1, .. }
    ));
    let (mut rx, mut tx) = io.into_split();
    tx.send(Bytes::from_static(b"ping\n")).await.unwrap();
    tx.finish().await.unwrap();
    let out = rx.read_to_end().await.unwrap();
    assert_eq!(out, b"got ping\noops\n");
    assert!(matches!(
        host.next().await,
        GuestMessage::Exited {
            id: 1,
            status: ExitStatus::Code(0)
        }
    ));
}

#[tokio::test]
async fn a_background_grandchild_does_not_hold_exited_back() {
    let mut host = start().await;
    let t = Instant::now();
    let run = host
        .run(1, spec(&["sh", "-c", "sleep 3 & echo done"]))
        .await;
    assert_eq!(run.stdout, b"done\n");
    assert_eq!(run.status, ExitStatus::Code(0));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connect_splices_a_guest_port_with_half_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        c.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
    });
    let mut host = start().await;
    let stream = host.session.open_stream();
    host.send(HostMessage::Connect {
        stream: stream.id(),
        port,
    })
    .await;
    assert_eq!(
        host.next().await,
        GuestMessage::Connected {
            stream: stream.id()
        }
    );
    let (mut rx, mut tx) = stream.into_split();
    tx.send(Bytes::from(vec![7u8; 200_000])).await.unwrap();
    tx.finish().await.unwrap();
    let reply = tokio::time::timeout(LIMIT, rx.read_to_end())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"got 200000 bytes");
    server.await.unwrap();
}

#[tokio::test]
async fn connect_to_a_closed_port_fails() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut host = start().await;
    let stream = host.session.open_stream();
    host.send(HostMessage::Connect {
        stream: stream.id(),
        port,
    })
    .await;
    match host.next().await {
        GuestMessage::ConnectFailed { stream: s, error } => {
            assert_eq!(s, stream.id());
            assert!(error.contains(&port.to_string()), "{error}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn read_path_sends_a_tar_of_the_tree() {
    let mut host = start().await;
    let dir = host._root.path().join("srv/app");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), b"alpha").unwrap();
    std::fs::write(dir.join("sub/run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        dir.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();

    let stream = host.session.open_stream();
    host.send(HostMessage::ReadPath {
        stream: stream.id(),
        path: "/srv/app".into(),
    })
    .await;
    let mut rx = stream.recv;
    let bytes = tokio::time::timeout(LIMIT, rx.read_to_end())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        host.next().await,
        GuestMessage::PathSent {
            stream: rx.id(),
            error: None
        }
    );
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap() & 0o7777;
        match path.as_str() {
            "app/a.txt" => {
                let mut s = String::new();
                entry.read_to_string(&mut s).unwrap();
                assert_eq!(s, "alpha");
            }
            "app/sub/run.sh" => assert_eq!(mode, 0o750),
            "app/link" => {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("/etc/passwd")
                );
            }
            _ => {}
        }
        seen.push(path);
    }
    assert_eq!(
        seen,
        ["app", "app/a.txt", "app/link", "app/sub", "app/sub/run.sh"]
    );
}

#[tokio::test]
async fn read_path_of_a_missing_file_reports_an_error() {
    let mut host = start().await;
    let stream = host.session.open_stream();
    host.send(HostMessage::ReadPath {
        stream: stream.id(),
        path: "/nope".into(),
    })
    .await;
    let mut rx = stream.recv;
    assert!(rx.read_to_end().await.is_err(), "the stream is reset");
    match host.next().await {
        GuestMessage::PathSent { error: Some(e), .. } => assert!(e.starts_with("/nope:"), "{e}"),
        other => panic!("expected PathSent with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_stops_every_process() {
    let mut host = start().await;
    let (_, out, err) = host.spawn(1, spec(&["sleep", "1000"]), false).await;
    let t = Instant::now();
    host.send(HostMessage::Shutdown).await;
    let run = host.finish(1, out, err).await;
    assert_eq!(run.status, ExitStatus::Signal(libc::SIGTERM));
    assert_eq!(host.next().await, GuestMessage::ShuttingDown);
    let end = tokio::time::timeout(LIMIT, &mut host.served)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, SessionEnd::Shutdown);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn shutdown_kills_what_ignores_sigterm() {
    let mut host = start().await;
    let (_, out, err) = host
        .spawn(1, spec(&["sh", "-c", "trap '' TERM; sleep 1000"]), false)
        .await;
    // Give sh time to install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.send(HostMessage::Shutdown).await;
    let run = host.finish(1, out, err).await;
    assert_eq!(run.status, ExitStatus::Signal(libc::SIGKILL));
    assert_eq!(host.next().await, GuestMessage::ShuttingDown);
}

#[tokio::test]
async fn processes_survive_a_disconnect_and_the_agent_serves_again() {
    let mut host = start().await;
    let (_, _out, _err) = host.spawn(1, spec(&["sleep", "1000"]), false).await;
    let pid = host.agent.inner.procs.pid(1).unwrap();
    let Host {
        session,
        link,
        inbox,
        agent,
        served,
        _root,
    } = host;
    session.close();
    link.revoke();
    drop(inbox);
    assert_eq!(served.await.unwrap(), SessionEnd::Disconnected);
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(alive, "process must keep running");

    let mut host = connect(agent, _root).await;
    host.send(HostMessage::Hello {
        protocol: PROTOCOL_VERSION,
    })
    .await;
    assert!(matches!(host.next().await, GuestMessage::Hello { .. }));
    // The process is still known: it can be signalled from the new session.
    host.send(HostMessage::Signal { id: 1, signal: 9 }).await;
    tokio::time::timeout(LIMIT, host.agent.inner.procs.all_gone())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_hello_starts_a_new_session_on_the_same_channel() {
    let mut host = start().await;
    let hello = HostMessage::Hello {
        protocol: PROTOCOL_VERSION,
    };
    host.send(hello.clone()).await;
    let GuestMessage::Hello { boot_id, .. } = host.next().await else {
        panic!("expected Hello");
    };
    let (_, _out, _err) = host.spawn(1, spec(&["sleep", "1000"]), false).await;
    // A new host on the same channel (the guest never saw the old one leave).
    host.send(hello).await;
    match host.next().await {
        GuestMessage::Hello { boot_id: again, .. } => assert_eq!(again, boot_id),
        other => panic!("expected Hello, got {other:?}"),
    }
    let run = host.run(2, spec(&["echo", "still here"])).await;
    assert_eq!(run.stdout, b"still here\n");
    host.send(HostMessage::Signal { id: 1, signal: 9 }).await;
    assert!(matches!(
        host.next().await,
        GuestMessage::Exited {
            id: 1,
            status: ExitStatus::Signal(9)
        }
    ));
    assert!(!host.served.is_finished());
}

#[tokio::test]
async fn kill_all_kills_now() {
    let mut host = start().await;
    let (_, out, err) = host.spawn(1, spec(&["sleep", "1000"]), false).await;
    host.agent.kill_all();
    let run = host.finish(1, out, err).await;
    assert_eq!(run.status, ExitStatus::Signal(libc::SIGKILL));
}

#[tokio::test]
async fn a_new_host_attaches_to_a_running_process_and_gets_its_output() {
    let root = tempfile::tempdir().unwrap();
    let gate = root.path().join("gate");
    let done = root.path().join("done");
    let agent = Arc::new(Agent::new(config(root.path())));
    let mut host = connect(agent, root).await;
    // Prints one line, waits for the gate file, prints a line on each stream, then waits for
    // the done file before exiting (a server outliving its host).
    let script = format!(
        "echo before; while [ ! -e {g} ]; do sleep 0.05; done; echo after; echo err-after >&2; \
         while [ ! -e {d} ]; do sleep 0.05; done",
        g = gate.display(),
        d = done.display()
    );
    let (_, mut out, _err) = host.spawn(1, spec(&["sh", "-c", &script]), false).await;
    let first = tokio::time::timeout(LIMIT, out.recv.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"before\n");

    // The host goes away; the process writes while nobody is attached.
    let Host {
        session,
        link,
        inbox,
        agent,
        served,
        _root,
    } = host;
    session.close();
    link.revoke();
    drop(inbox);
    assert_eq!(served.await.unwrap(), SessionEnd::Disconnected);
    std::fs::write(&gate, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new host attaches: the output kept meanwhile arrives, then the exit.
    let mut host = connect(agent, _root).await;
    let out = host.session.open_stream();
    let err = host.session.open_stream();
    host.send(HostMessage::Attach {
        id: 1,
        stdout: out.id(),
        stderr: err.id(),
    })
    .await;
    assert_eq!(host.next().await, GuestMessage::Attached { id: 1 });
    std::fs::write(&done, b"").unwrap();
    let run = host.finish(1, out, err).await;
    assert_eq!(run.stdout, b"after\n");
    assert_eq!(run.stderr, b"err-after\n");
    assert_eq!(run.status, ExitStatus::Code(0));

    // Nothing runs under id 7.
    let out = host.session.open_stream();
    host.send(HostMessage::Attach {
        id: 7,
        stdout: out.id(),
        stderr: out.id(),
    })
    .await;
    match host.next().await {
        GuestMessage::AttachFailed { id: 7, error } => assert!(error.contains('7'), "{error}"),
        other => panic!("expected AttachFailed, got {other:?}"),
    }
}
