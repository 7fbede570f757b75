//! Output that a guest prints without end takes bounded disk (docs/CONFIG.md): an instance's
//! log is rotated at `instance_log_bytes` keeping `instance_log_rotated_files`, a task's stream
//! is cut at `task_output_bytes` with a line that says so. The fake backend's "guest" is a
//! host process, so `yes` floods as fast as the session carries bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use aegis_api::{CreateInstance, CreateTask, OutputEvent, PortProtocol, PortSpec, TaskState};
use aegis_testkit::daemon::fixture_with;
use aegis_testkit::net::free_port;

/// Bytes of every file under `dir`.
fn disk_use(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_printing_without_end_stays_under_its_log_cap() {
    const FILE: u64 = 64 << 10;
    const KEEP: u32 = 2;
    let f = fixture_with(|c| {
        c.limits.instance_log_bytes = FILE;
        c.limits.instance_log_rotated_files = KEEP;
    })
    .await;
    let d = &f.daemon;
    let port = free_port();
    let req = CreateInstance {
        name: Some("chatty".into()),
        command: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "yes flood & yes err >&2 & exec python3 -m http.server {port} --bind 127.0.0.1"
            ),
        ],
        expose: vec![PortSpec {
            guest_port: port,
            host_port: None,
            protocol: PortProtocol::Http,
        }],
        ..Default::default()
    };
    let inst = d.instances.create(d, req).await.unwrap();
    d.instances.resume("chatty").await.unwrap();
    let rt = d.instances.get("chatty").unwrap();
    // Wait until the guest has printed 50 times what the log may keep.
    let produced = 50 * FILE * u64::from(KEEP + 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt.log.state().stdout < produced || rt.log.state().stderr < produced {
        assert!(
            Instant::now() < deadline,
            "the flood never reached {produced} bytes: {:?}",
            rt.log.state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = f.daemon.config.home.instance_dir(&inst.id);
    // Per stream: the current file and KEEP rotated ones, each at most FILE, plus the small
    // file holding the current file's offset.
    let bound = 2 * (FILE * u64::from(KEEP + 1) + 32);
    let used = disk_use(&dir);
    assert!(
        used <= bound,
        "instance log uses {used} bytes, over {bound}"
    );

    // A follower from offset 0 is taken to the oldest byte kept, and reads real output.
    let mut rx = d.instances.logs(d, "chatty", false, (0, 0)).unwrap();
    let line = rx.recv().await.expect("some output");
    let event: OutputEvent = serde_json::from_slice(&line).unwrap();
    let OutputEvent::Output { offset, .. } = &event else {
        panic!("not output: {event:?}")
    };
    assert!(*offset > 0, "the oldest bytes were rotated away");
    let text = String::from_utf8(event.bytes().unwrap()).unwrap();
    assert!(
        text.contains("flood\n") || text.contains("err\n"),
        "{text:.80}"
    );
    d.instances.delete(d, "chatty").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_is_cut_at_its_cap_and_says_so() {
    const CAP: u64 = 100_000;
    let f = fixture_with(|c| c.limits.task_output_bytes = CAP).await;
    let d = &f.daemon;
    let req = CreateTask {
        // 20 MB, then a line that must not be stored, then a normal exit.
        command: vec![
            "sh".into(),
            "-c".into(),
            "yes | head -c 20000000; echo; echo LAST; echo small >&2".into(),
        ],
        ..Default::default()
    };
    let t = d.tasks.create(d, req).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        let t = d.tasks.get(d, &t.id).unwrap();
        if !matches!(t.state, TaskState::Booting | TaskState::Running) {
            break t;
        }
        assert!(Instant::now() < deadline, "the task never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(end.state, TaskState::Exited, "{:?}", end.error);
    assert_eq!(
        end.exit_code,
        Some(0),
        "chatty output does not fail the task"
    );
    let dir = d.tasks.task_dir(d, &t.id);
    let stdout = std::fs::read(dir.join("stdout")).unwrap();
    let (head, note) = stdout.split_at(CAP as usize);
    assert!(head.iter().all(|b| *b == b'y' || *b == b'\n'));
    let note = String::from_utf8_lossy(note);
    assert!(
        note.starts_with("\n[aegis: stdout truncated at 100000 bytes")
            && note.contains("task_output_bytes"),
        "{note}"
    );
    assert!(!note.contains("LAST"));
    assert_eq!(end.stdout_bytes, stdout.len() as u64);
    assert_eq!(std::fs::read(dir.join("stderr")).unwrap(), b"small\n");
}
