//! Bad input and faults: each gets one clear line and an exit status, and leaves no VMM
//! process, scratch disk or socket behind.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aegis_tests::{bin, code, stderr, stdout, TestDaemon};

#[test]
fn daemon_not_running() {
    let home = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(bin("aegis"))
        .env("AEGIS_HOME", home.path())
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 125);
    let e = stderr(&o);
    assert!(e.contains("not running") && e.contains("aegis up"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
}

#[test]
fn unknown_image() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&["run", "--image", "no-such-image", "--", "true"]);
    assert_eq!(code(&o), 125);
    let e = stderr(&o);
    assert!(e.contains("no-such-image") && e.contains("busybox"), "{e}");
    d.assert_no_leftovers();
}

#[test]
fn command_not_found_in_the_guest() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&["run", "--image", "busybox", "--", "no-such-command", "arg"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no-such-command") && e.contains("not found"),
        "{e}"
    );
    d.assert_no_leftovers();
}

#[test]
fn bad_memory_values() {
    let d = TestDaemon::start("qemu");
    for (mem, needle) in [
        ("0", "at least 64 MiB"),
        ("-5", "memory"),
        ("99999999", "exceeds"),
    ] {
        let o = d.aegis(&["run", "--image", "busybox", "--memory", mem, "--", "true"]);
        assert_eq!(code(&o), 125, "--memory {mem}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "--memory {mem}: {}",
            stderr(&o)
        );
    }
    // The daemon enforces the same rules for API clients that skip the CLI.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let req = aegis_api::CreateTask {
        command: vec!["true".into()],
        image: Some("busybox".into()),
        memory_mib: Some(0),
        ..Default::default()
    };
    let err = rt
        .block_on(d.client().create_task(&req))
        .unwrap_err()
        .to_string();
    assert!(err.contains("too small"), "{err}");
    d.assert_no_leftovers();
}

#[test]
fn a_task_that_never_exits_times_out() {
    let d = TestDaemon::start("qemu");
    let o = d.aegis(&[
        "run",
        "--image",
        "busybox",
        "--timeout",
        "2s",
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    d.assert_no_leftovers();
}

/// Starts a long task, waits until it printed `started`, and returns the child.
fn start_long_task(d: &TestDaemon) -> std::process::Child {
    let mut child = d
        .aegis_cmd(&[
            "run",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo started; sleep 1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    child
}

fn wait_exit(child: &mut std::process::Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().expect("exit code");
        }
        assert!(Instant::now() < deadline, "aegis run did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_and_sigterm_cancel_the_task() {
    let d = TestDaemon::start("qemu");
    for (signal, expected) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let mut child = start_long_task(&d);
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(wait_exit(&mut child), expected);
        d.assert_no_leftovers();
    }
    let o = d.aegis(&["task", "ls", "--json"]);
    let tasks: Vec<aegis_api::Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t.state == aegis_api::TaskState::Cancelled),
        "{tasks:?}"
    );
}

#[test]
fn a_vm_that_crashes_mid_task_fails_cleanly() {
    let d = TestDaemon::start("qemu");
    let mut child = start_long_task(&d);
    let vmms = d.vmm_processes();
    assert_eq!(vmms.len(), 1, "expected one VMM process, got {vmms:?}");
    // SAFETY: signalling the VMM process the test's daemon started.
    unsafe { libc::kill(vmms[0] as i32, libc::SIGKILL) };
    assert_eq!(wait_exit(&mut child), 125);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("microVM stopped"), "{err}");
    d.assert_no_leftovers();
}

#[test]
fn a_daemon_crash_leaves_nothing_behind_after_restart() {
    let mut d = TestDaemon::start("qemu");
    let child = start_long_task(&d);
    assert_eq!(d.vmm_processes().len(), 1);
    d.kill_hard();
    drop(child);
    d.restart();
    d.assert_no_leftovers();
    let o = d.aegis(&["task", "ls", "--json"]);
    let tasks: Vec<aegis_api::Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks[0].state, aegis_api::TaskState::Failed);
    assert!(tasks[0]
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("restarted"));
}

#[test]
fn the_api_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start("fake");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let o = d.aegis(&["status", "--json"]);
    assert_eq!(code(&o), 0);
    let s: aegis_api::Status = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.backend, "fake");
    let _ = stdout(&o);
}
