//! The fake backend against the real guest agent: boot, streams, pause, reconnect, faults.

use super::*;
use aegis_proto::{ExitStatus, GuestMessage, HostMessage, Session, Side, PROTOCOL_VERSION};
use aegis_testkit::guest;
use std::time::Duration;
use tokio::sync::mpsc;

fn spec(dir: &Path, id: &str) -> VmSpec {
    VmSpec {
        id: id.into(),
        kernel: "/nonexistent/vmlinux".into(),
        initramfs: "/nonexistent/initramfs".into(),
        kernel_args: vec![],
        vcpus: 1,
        memory_mib: 256,
        disks: vec![],
        shares: vec![],
        run_dir: dir.to_path_buf(),
    }
}

async fn hello(vm: &dyn Vm) -> (Session, mpsc::Receiver<GuestMessage>, String) {
    let ch = vm.connect().await.unwrap();
    let (s, mut rx) = Session::start::<GuestMessage, _>(ch, Side::Host);
    s.send(HostMessage::Hello {
        protocol: PROTOCOL_VERSION,
    })
    .await
    .unwrap();
    loop {
        match rx.recv().await.unwrap() {
            GuestMessage::Hello { boot_id, .. } => return (s, rx, boot_id),
            _ => continue,
        }
    }
}

/// The nonce of the next Pong, skipping other messages.
async fn pong(rx: &mut mpsc::Receiver<GuestMessage>) -> Option<u64> {
    loop {
        if let GuestMessage::Pong { nonce } = rx.recv().await? {
            return Some(nonce);
        }
    }
}

/// Runs argv; returns (stdout, exit status).
async fn run(
    s: &Session,
    rx: &mut mpsc::Receiver<GuestMessage>,
    id: u64,
    argv: &[&str],
) -> (Vec<u8>, ExitStatus) {
    let (out, _err) = guest::spawn(s, id, guest::process(argv)).await;
    let (mut out_rx, _out_tx) = out.into_split();
    let stdout = out_rx.read_to_end().await.unwrap();
    loop {
        match rx.recv().await.unwrap() {
            GuestMessage::Exited { id: i, status } if i == id => return (stdout, status),
            GuestMessage::SpawnFailed { error, .. } => panic!("spawn failed: {error:?}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn boots_and_runs_a_real_process() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    assert!(!b.capabilities().memory_snapshot);
    let vm = b.boot(&spec(dir.path(), "f1")).await.unwrap();
    assert_eq!(b.running(), ["f1"]);
    let (s, mut rx, _) = hello(vm.as_ref()).await;
    let (out, status) = run(&s, &mut rx, 1, &["sh", "-c", "echo hi; exit 3"]).await;
    assert_eq!(out, b"hi\n");
    assert_eq!(status, ExitStatus::Code(3));

    s.send(HostMessage::Shutdown).await.unwrap();
    assert_eq!(vm.wait().await, VmExit::PoweredOff);
    assert_eq!(vm.wait().await, VmExit::PoweredOff);
    assert!(b.running().is_empty());
    assert!(matches!(vm.connect().await, Err(VmmError::Exited { .. })));
}

#[tokio::test]
async fn pause_holds_bytes_and_resume_delivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    let vm = b.boot(&spec(dir.path(), "f2")).await.unwrap();
    let (s, mut rx, _) = hello(vm.as_ref()).await;
    vm.pause().await.unwrap();
    s.send(HostMessage::Ping { nonce: 7 }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(200), pong(&mut rx)).await;
    assert!(r.is_err(), "a paused VM answered");
    vm.resume().await.unwrap();
    let nonce = tokio::time::timeout(Duration::from_secs(5), pong(&mut rx))
        .await
        .unwrap();
    assert_eq!(nonce, Some(7));
    vm.kill().await.unwrap();
    vm.kill().await.unwrap();
    assert_eq!(vm.wait().await, VmExit::Killed);
}

#[tokio::test]
async fn a_reconnect_serves_the_same_agent() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    let vm = b.boot(&spec(dir.path(), "f3")).await.unwrap();
    let (s1, _rx1, boot1) = hello(vm.as_ref()).await;
    drop(s1);
    let (s2, mut rx2, boot2) = hello(vm.as_ref()).await;
    assert_eq!(boot1, boot2, "same guest, same boot id");
    let (out, _) = run(&s2, &mut rx2, 1, &["echo", "again"]).await;
    assert_eq!(out, b"again\n");
}

#[tokio::test]
async fn injected_faults() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    b.fail_next_boot();
    assert!(matches!(
        b.boot(&spec(dir.path(), "f4")).await,
        Err(VmmError::Spawn { .. })
    ));
    b.crash_next_boot();
    let vm = b.boot(&spec(dir.path(), "f4")).await.unwrap();
    assert!(matches!(
        vm.wait().await,
        VmExit::Failed { code: Some(1), .. }
    ));
    match vm.connect().await {
        Err(VmmError::Exited { console_tail, .. }) => {
            assert!(console_tail.contains("crashed during boot"))
        }
        _ => panic!("connect to a crashed VM succeeded"),
    }

    let vm = b.boot(&spec(dir.path(), "f5")).await.unwrap();
    let (s, mut rx, _) = hello(vm.as_ref()).await;
    assert!(b.crash("f5"));
    assert!(!b.crash("f5"));
    assert!(matches!(
        vm.wait().await,
        VmExit::Failed {
            signal: Some(_),
            ..
        }
    ));
    // The session sees the channel drop.
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.recv().await.is_some() {}
    })
    .await
    .unwrap();
    assert!(s.is_closed() || s.send(HostMessage::Ping { nonce: 1 }).await.is_err());
    assert_eq!(b.boots(), 3);
}

#[tokio::test]
async fn kill_stops_running_processes() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    let vm = b.boot(&spec(dir.path(), "f6")).await.unwrap();
    let (s, mut rx, _) = hello(vm.as_ref()).await;
    let pidfile = dir.path().join("sleep.pid");
    let script = format!("echo $$ > {}; exec sleep 100", pidfile.display());
    let _streams = guest::spawn(&s, 9, guest::process(&["sh", "-c", &script])).await;
    loop {
        if let Some(GuestMessage::Spawned { .. }) = rx.recv().await {
            break;
        }
    }
    let pid: i32 = loop {
        if let Ok(t) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = t.trim().parse() {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    vm.kill().await.unwrap();
    let mut alive = true;
    for _ in 0..400 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        if stat.map_or(true, |s| s.contains(") Z ")) {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!alive, "process {pid} survived kill");
}

#[tokio::test]
async fn snapshots_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    let vm = b.boot(&spec(dir.path(), "f7")).await.unwrap();
    assert!(matches!(
        vm.snapshot(dir.path()).await,
        Err(VmmError::Unsupported { .. })
    ));
    let snap = SnapshotRef {
        dir: dir.path().into(),
    };
    assert!(matches!(
        b.restore(&spec(dir.path(), "f8"), &snap).await,
        Err(VmmError::Unsupported { .. })
    ));
}

#[tokio::test]
async fn a_flooding_guest_breaks_the_protocol_after_its_hello() {
    let dir = tempfile::tempdir().unwrap();
    let b = FakeBackend::new();
    let vm = b.boot(&spec(dir.path(), "f-flood")).await.unwrap();
    let (s, mut rx, _) = hello(vm.as_ref()).await;
    // Well-behaved until told otherwise.
    let (out, _) = run(&s, &mut rx, 1, &["echo", "ok"]).await;
    assert_eq!(out, b"ok\n");
    assert!(b.flood_streams("f-flood"));
    assert!(!b.flood_streams("no-such-vm"));
    tokio::time::timeout(Duration::from_secs(30), s.closed())
        .await
        .expect("the flooded session never ended");
    assert!(
        matches!(
            s.violation(),
            Some(aegis_proto::Violation::TooManyStreams { .. })
        ),
        "{:?}",
        s.violation()
    );
    // The host decides what to do with a hostile guest; the fake VM itself keeps running.
    assert_eq!(b.running(), ["f-flood"]);
    vm.kill().await.unwrap();
}
