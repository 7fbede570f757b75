//! A full disk where aegisd writes: the operation fails with an error that says so, and what
//! was stored stays consistent. The layer disks and the blob store during a pull are covered
//! by `images.rs` (`a_full_disk_during_pull_leaves_nothing_half_written`).

use std::time::Duration;

use aegis_api::{Task, TaskState};
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
