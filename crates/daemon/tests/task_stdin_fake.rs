//! A task's stdin against the fake backend: bytes uploaded while the VM boots reach the
//! command, the end of the upload is its EOF, and a task without stdin refuses an upload.

use std::time::{Duration, Instant};

use aegis_api::{CreateTask, ErrorCode, TaskState};
use aegis_testkit::daemon::fixture;
use bytes::Bytes;

fn cat(stdin: bool) -> CreateTask {
    CreateTask {
        command: vec!["cat".into()],
        stdin,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_stdin_reaches_the_command_and_its_end_is_eof() {
    let f = fixture().await;
    let d = &f.daemon;
    let t = d.tasks.create(d, cat(true)).await.unwrap();
    let tx = d.tasks.stdin(&t.id).unwrap();
    let again = d.tasks.stdin(&t.id).unwrap_err();
    assert_eq!(again.error.code, ErrorCode::Conflict, "one upload per task");
    tx.send(Bytes::from_static(b"sent while booting"))
        .await
        .unwrap();
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        let t = d.tasks.get(d, &t.id).unwrap();
        if t.state != TaskState::Booting && t.state != TaskState::Running {
            break t;
        }
        assert!(Instant::now() < deadline, "cat never saw EOF: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((end.state, end.exit_code), (TaskState::Exited, Some(0)));
    let out = std::fs::read(d.config.home.task_dir(&t.id).join("stdout")).unwrap();
    assert_eq!(out, b"sent while booting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_stdin_refuses_an_upload() {
    let f = fixture().await;
    let d = &f.daemon;
    let t = d.tasks.create(d, cat(false)).await.unwrap();
    let refused = d.tasks.stdin(&t.id).unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::Conflict);
    let unknown = d.tasks.stdin("task-none").unwrap_err();
    assert_eq!(unknown.error.code, ErrorCode::NotFound);
}
