//! A full disk where aegisd writes: the operation fails with an error that says so, and what
//! was stored stays consistent. The layer disks and the blob store during a pull are covered
//! by `images.rs` (`a_full_disk_during_pull_leaves_nothing_half_written`).

use std::time::Duration;

use std::io::{Read, Write};
use std::net::TcpStream;

use aegis_api::{Instance, InstanceState, Task, TaskState};
use aegis_tests::{code, stderr, stdout, wait_task_end, SmallDisk, TestDaemon};

#[test]
fn a_full_disk_under_task_logs_fails_the_task_and_keeps_the_store() {
    let mut disk = None;
    let mut d = TestDaemon::start_prepared("fake", |home| {
        disk = Some(SmallDisk::mount(&home.join("tasks"), "1m"));
    });
    // A small task fits and is kept whole.
    let o = d.aegis(&["run", "--", "echo", "fits"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "fits\n");

    // 4 MB of output into 1 MB: the task fails (it neither hangs nor reports success), and
    // says why. The timeout only turns a hang into a failure this test reports.
    let o = d.aegis(&[
        "run",
        "--detach",
        "--timeout",
        "120s",
        "--",
        "sh",
        "-c",
        "head -c 4000000 /dev/zero | tr '\\0' x",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let end = wait_task_end(&d, &id, Duration::from_secs(180));
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    let why = end.error.unwrap_or_default();
    assert!(
        why.contains("space"),
        "the error names the full disk: {why}"
    );

    // The store is consistent: both tasks are listed, the first one's output is intact, and
    // once there is room again tasks run.
    let o = d.aegis(&["task", "ls", "--json"]);
    let tasks: Vec<Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let first = tasks.iter().find(|t| t.id != id).unwrap();
    let o = d.aegis(&["task", "logs", &first.id]);
    assert_eq!(stdout(&o), "fits\n", "{}", stderr(&o));
    let o = d.aegis(&["task", "rm", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.aegis(&["run", "--", "echo", "again"]);
    assert_eq!(stdout(&o), "again\n", "{}", stderr(&o));
    d.stop();
    drop(disk);
}

fn http_status(port: u16) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the router");
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

fn inspect(d: &TestDaemon, name: &str) -> Instance {
    let o = d.aegis(&["instance", "inspect", name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_full_disk_under_snapshots_costs_only_the_snapshot() {
    let mut disk = None;
    let mut d = TestDaemon::start_prepared("qemu", |home| {
        disk = Some(SmallDisk::mount(&home.join("snapshots"), "1m"));
    });
    let o = d.aegis(&[
        "run",
        "--detach",
        "--name",
        "web",
        "--image",
        "busybox",
        "--expose",
        "8000:http",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www; echo hi > /tmp/www/index.html; exec httpd -f -p 8000 -h /tmp/www",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let port = inspect(&d, "web").endpoints[0].host_port;
    // The wake saves a snapshot that cannot fit: the app is served all the same.
    assert_eq!(http_status(port), 200);
    let i = inspect(&d, "web");
    assert_eq!(i.state, InstanceState::Running, "{i:?}");
    assert!(!i.snapshot_cached, "{i:?}");
    let log = d.log();
    // QEMU reports the full disk as a broken pipe of its migration stream, so the log names
    // the failed snapshot, not the cause.
    assert!(
        log.contains("memory snapshot failed; wakes will boot cold"),
        "the daemon log says there is no snapshot:\n{log}"
    );
    let left: Vec<_> = std::fs::read_dir(d.home.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "half-written snapshot left: {left:?}");
    let o = d.aegis(&["instance", "rm", "web"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    d.assert_no_leftovers();
    d.stop();
    drop(disk);
}

#[test]
fn a_full_disk_under_an_instance_log_does_not_stall_the_app() {
    let mut disk = None;
    let mut d = TestDaemon::start_prepared("fake", |home| {
        disk = Some(SmallDisk::mount(&home.join("instances"), "1m"));
    });
    let app_port = aegis_testkit::net::free_port().to_string();
    // 3 MB of output before the app listens: the log cannot hold it.
    let script = format!(
        "head -c 3000000 /dev/zero | tr '\\0' x; exec python3 -m http.server {app_port} --bind 127.0.0.1"
    );
    let expose = format!("{app_port}:http");
    let o = d.aegis(&[
        "run", "--detach", "--name", "web", "--expose", &expose, "--", "sh", "-c", &script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let port = inspect(&d, "web").endpoints[0].host_port;
    assert_eq!(
        http_status(port),
        200,
        "the app is served although its log is full"
    );
    let i = inspect(&d, "web");
    assert_eq!(i.state, InstanceState::Running, "{i:?}");
    let log = d.log();
    assert!(
        log.contains("cannot store instance output") && log.contains("No space left"),
        "the daemon log says why the output stops:\n{log}"
    );
    let o = d.aegis(&["instance", "rm", "web"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    d.stop();
    drop(disk);
}

/// Fills the file system of `dir` with `dir/filler` until a write fails for lack of space.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "filling {}: {e}",
                dir.display()
            );
            break;
        }
    }
    // Byte-sized writes use up what is left of the last block.
    while f.write_all(&[0]).is_ok() {}
    path
}

#[test]
fn a_full_disk_under_the_registry_refuses_work_and_keeps_the_database() {
    let mut disk = None;
    let mut d = TestDaemon::start_prepared("fake", |home| {
        // The registry database sits at the home's root: the whole home is the small disk,
        // with the guest cache linked into it again.
        disk = Some(SmallDisk::mount(home, "16m"));
        std::os::unix::fs::symlink(aegis_tests::shared_cache(), home.join("cache")).unwrap();
        // Without a reserve: the free-disk quota would refuse the task before the registry
        // is written (that refusal has its own test, limits_fake); this one is about SQLite.
        std::fs::write(
            home.join("config.toml"),
            "[limits]\nfree_disk_reserve_bytes = 0\n",
        )
        .unwrap();
    });
    let o = d.aegis(&["run", "--", "echo", "before"]);
    assert_eq!(stdout(&o), "before\n", "{}", stderr(&o));
    let filler = fill(d.home.path());

    let o = d.aegis(&["run", "--", "echo", "full"]);
    assert_ne!(
        code(&o),
        0,
        "a task was accepted on a full disk: {}",
        stdout(&o)
    );
    let e = stderr(&o);
    println!("measured: a task refused on a full disk: {}", e.trim());
    assert!(
        e.contains("full") || e.contains("space"),
        "the error names the full disk: {e}"
    );

    std::fs::remove_file(filler).unwrap();
    let o = d.aegis(&["task", "ls", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let tasks: Vec<Task> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        tasks.iter().any(|t| t.state == TaskState::Exited),
        "the task from before is kept: {tasks:?}"
    );
    let o = d.aegis(&["run", "--", "echo", "after"]);
    assert_eq!(stdout(&o), "after\n", "{}", stderr(&o));
    d.stop();
    drop(disk);
}
