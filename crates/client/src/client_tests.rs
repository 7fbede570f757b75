//! The client against a scripted server on a temporary unix socket.

use std::time::Duration;

use aegis_api::{
    ApiError, CreateInstance, CreateTask, ErrorCode, IdlePolicy, Instance, InstanceState,
    OutputEvent, PortProtocol, PortSpec, StreamName, Task, TaskState,
};
use futures::StreamExt;

use aegis_testkit::api_values::{json, line, not_found};
use aegis_testkit::fake_aegisd::{FakeAegisd, Recorded, Reply, Then};

use crate::{Client, Error, FollowItem};

fn task(id: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        command: vec!["echo".into(), "hi".into()],
        exit_code: (state == TaskState::Exited).then_some(0),
        ..aegis_testkit::api_values::task(state)
    }
}

fn end(id: &str) -> Vec<u8> {
    aegis_testkit::api_values::end(task(id, TaskState::Exited))
}

#[tokio::test]
async fn status_is_fetched_and_parsed() {
    let server = FakeAegisd::start(|_, _| {
        Reply::Body(
            200,
            br#"{"status":"running","version":"0.1.0","pid":42,"backend":"fake",
                "capabilities":{"pause":true,"memory_snapshot":false,"vsock":false,
                "virtio_fs":false,"accelerator":"none"},"home":"/h","tasks_running":0}"#
                .to_vec(),
        )
    });
    let status = Client::new(server.socket()).status().await.unwrap();
    assert_eq!(status.pid, 42);
    assert_eq!(status.backend, "fake");
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].uri.as_str()),
        ("GET", "/v1/status")
    );
}

#[tokio::test]
async fn a_missing_or_stale_socket_means_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("aegisd.sock");
    let err = Client::new(missing.clone()).status().await.unwrap_err();
    assert!(
        matches!(&err, Error::DaemonNotRunning { socket } if *socket == missing),
        "{err}"
    );

    // A socket file nobody listens on any more, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
    assert!(missing.exists());
    let err = Client::new(missing).list_tasks().await.unwrap_err();
    assert!(matches!(err, Error::DaemonNotRunning { .. }), "{err}");
}

#[tokio::test]
async fn api_errors_carry_status_code_and_message() {
    let server = FakeAegisd::start(|_, _| {
        json(
            404,
            &ApiError::new(ErrorCode::NotFound, "task 'nope' does not exist"),
        )
    });
    let err = Client::new(server.socket())
        .get_task("nope")
        .await
        .unwrap_err();
    match &err {
        Error::Api { status, error } => {
            assert_eq!(*status, 404);
            assert_eq!(error.error.code, ErrorCode::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "task 'nope' does not exist");
    assert!(err.is_not_found());
}

#[tokio::test]
async fn an_error_without_an_api_body_is_a_protocol_error() {
    let server = FakeAegisd::start(|_, _| Reply::Body(502, b"<html>bad gateway</html>".to_vec()));
    let err = Client::new(server.socket()).status().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("502")),
        "{err}"
    );
}

#[tokio::test]
async fn create_task_posts_the_request_and_parses_the_task() {
    let server = FakeAegisd::start(|_, _| json(201, &task("task-1", TaskState::Booting)));
    let req = CreateTask {
        command: vec!["echo".into(), "hi".into()],
        memory_mib: Some(256),
        ..Default::default()
    };
    let created = Client::new(server.socket())
        .create_task(&req)
        .await
        .unwrap();
    assert_eq!(created.id, "task-1");
    let rec = &server.requests()[0];
    assert_eq!(
        (rec.method.as_str(), rec.uri.as_str()),
        ("POST", "/v1/tasks")
    );
    let sent: CreateTask = serde_json::from_slice(&rec.body).unwrap();
    assert_eq!(sent, req);
}

#[tokio::test]
async fn every_route_uses_its_method_and_path() {
    let server = FakeAegisd::start(|rec: &Recorded, _| match rec.method.as_str() {
        "DELETE" => Reply::Body(204, Vec::new()),
        "POST" if rec.uri == "/v1/shutdown" => Reply::Body(202, b"{}".to_vec()),
        _ if rec.uri == "/v1/tasks" => json(200, &vec![task("a", TaskState::Running)]),
        _ => json(200, &task("a", TaskState::Cancelled)),
    });
    let c = Client::new(server.socket());
    assert_eq!(c.list_tasks().await.unwrap().len(), 1);
    assert_eq!(c.get_task("a").await.unwrap().id, "a");
    assert_eq!(
        c.cancel_task("a").await.unwrap().state,
        TaskState::Cancelled
    );
    c.delete_task("a").await.unwrap();
    c.shutdown().await.unwrap();
    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.uri))
        .collect();
    let want = [
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/a"),
        ("POST", "/v1/tasks/a/cancel"),
        ("DELETE", "/v1/tasks/a"),
        ("POST", "/v1/shutdown"),
    ];
    assert_eq!(
        seen,
        want.map(|(m, u)| (m.to_string(), u.to_string())).to_vec()
    );
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let hold = tokio::spawn(async move {
        let (_conn, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let err = Client::new(socket)
        .with_timeout(Duration::from_millis(100))
        .status()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("GET /v1/status"), "{err}");
    hold.abort();
}

#[tokio::test]
async fn the_output_feed_parses_huge_lines_split_across_chunks() {
    let big = vec![b'x'; 3 << 20];
    let mut body = line(&OutputEvent::output(StreamName::Stdout, 0, &big));
    body.extend(line(&OutputEvent::output(StreamName::Stderr, 0, b"err")));
    body.extend(end("t"));
    let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024 + 7).map(<[u8]>::to_vec).collect();
    let server = FakeAegisd::start(move |_, _| Reply::Chunks(chunks.clone(), Then::End));
    let feed = Client::new(server.socket())
        .task_output("t", true, 0, 0)
        .await
        .unwrap();
    let events: Vec<OutputEvent> = feed.into_stream().map(|e| e.unwrap()).collect().await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].bytes().unwrap(), big);
    assert_eq!(events[1].bytes().unwrap(), b"err");
    assert!(matches!(events[2], OutputEvent::End { .. }));
    assert_eq!(
        server.requests()[0].uri,
        "/v1/tasks/t/output?follow=true&stdout_offset=0&stderr_offset=0"
    );
}

#[tokio::test]
async fn an_output_feed_of_a_missing_task_is_an_api_error() {
    let server =
        FakeAegisd::start(|_, _| json(404, &ApiError::new(ErrorCode::NotFound, "no such task")));
    let err = Client::new(server.socket())
        .task_output("t", false, 0, 0)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_cut_feed_is_a_transient_http_error() {
    let server = FakeAegisd::start(|_, _| {
        Reply::Chunks(
            vec![line(&OutputEvent::output(StreamName::Stdout, 0, b"a"))],
            Then::Cut,
        )
    });
    let mut feed = Client::new(server.socket())
        .task_output("t", true, 0, 0)
        .await
        .unwrap();
    assert!(feed.next_event().await.unwrap().is_some());
    let err = feed.next_event().await.unwrap_err();
    assert!(
        matches!(err, Error::Http { .. }) && err.is_transient(),
        "{err}"
    );
    assert!(feed.next_event().await.unwrap().is_none());
}

async fn collect(follower: &mut crate::OutputFollower) -> (Vec<u8>, Vec<u8>, Option<Task>) {
    let (mut out, mut err, mut end) = (Vec::new(), Vec::new(), None);
    while let Some(item) = follower.next().await.unwrap() {
        match item {
            FollowItem::Output {
                stream: StreamName::Stdout,
                data,
            } => out.extend(data),
            FollowItem::Output { data, .. } => err.extend(data),
            FollowItem::End(task) => end = Some(*task),
            FollowItem::Gone => panic!("a task feed is never gone"),
        }
    }
    (out, err, end)
}

#[tokio::test]
async fn the_follower_resumes_a_cut_feed_without_duplicates_or_loss() {
    let server = FakeAegisd::start(|rec: &Recorded, index| match index {
        // First connection: some output, half a line, then the connection dies.
        0 => {
            let mut partial = line(&OutputEvent::output(StreamName::Stdout, 6, b"world"));
            partial.truncate(10);
            Reply::Chunks(
                vec![
                    line(&OutputEvent::output(StreamName::Stdout, 0, b"hello ")),
                    line(&OutputEvent::output(StreamName::Stderr, 0, b"warn")),
                    partial,
                ],
                Then::Cut,
            )
        }
        // The second one must ask from the cursors; it resends an overlapping range.
        1 => {
            assert!(
                rec.uri
                    .ends_with("follow=true&stdout_offset=6&stderr_offset=4"),
                "{}",
                rec.uri
            );
            let mut body = line(&OutputEvent::output(StreamName::Stdout, 3, b"lo world"));
            body.extend(line(&OutputEvent::output(StreamName::Stderr, 0, b"warn!")));
            Reply::Chunks(vec![body], Then::End)
        }
        // The third: the feed closed without its end event, so it is reopened again.
        _ => Reply::Chunks(
            vec![
                line(&OutputEvent::output(StreamName::Stdout, 11, b"\n")),
                end("t"),
            ],
            Then::End,
        ),
    });
    let client = Client::new(server.socket());
    let mut follower = client.follow_output("t", 0, 0);
    let (out, err, end) = collect(&mut follower).await;
    assert_eq!(out, b"hello world\n");
    assert_eq!(err, b"warn!");
    assert_eq!(end.unwrap().state, TaskState::Exited);
    assert_eq!(follower.reconnects(), 2);
    assert_eq!(follower.offsets(), (12, 5));
    assert!(follower.next().await.unwrap().is_none());
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_feed_healthy_for_longer_than_the_reconnect_window_is_still_resumed() {
    let server = FakeAegisd::start(|_, index| match index {
        0 => {
            // ~100 ms of a healthy feed (blank keep-alive lines), then the cut.
            let mut chunks = vec![b"\n".to_vec(); 100];
            chunks.insert(0, line(&OutputEvent::output(StreamName::Stdout, 0, b"a")));
            Reply::Chunks(chunks, Then::Cut)
        }
        _ => Reply::Chunks(vec![end("t")], Then::End),
    });
    let mut follower = Client::new(server.socket())
        .follow_output("t", 0, 0)
        .with_reconnect_window(Duration::from_millis(20));
    let (out, _, end) = collect(&mut follower).await;
    assert_eq!(out, b"a");
    assert!(end.is_some());
    assert_eq!(follower.reconnects(), 1);
}

#[tokio::test]
async fn the_follower_gives_up_when_the_daemon_stays_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = Client::new(dir.path().join("aegisd.sock"))
        .follow_output("t", 0, 0)
        .with_reconnect_window(Duration::from_millis(200));
    let err = follower.next().await.unwrap_err();
    assert!(matches!(err, Error::DaemonNotRunning { .. }), "{err}");
}

#[tokio::test]
async fn the_follower_stops_on_api_errors() {
    let server =
        FakeAegisd::start(|_, _| json(404, &ApiError::new(ErrorCode::NotFound, "no such task")));
    let mut follower = Client::new(server.socket()).follow_output("t", 0, 0);
    assert!(follower.next().await.unwrap_err().is_not_found());
    assert_eq!(server.requests().len(), 1);
}

fn instance(id: &str, state: InstanceState) -> Instance {
    Instance {
        id: id.into(),
        ..aegis_testkit::api_values::instance(state)
    }
}

#[tokio::test]
async fn create_instance_posts_the_serve_target_and_parses_the_instance() {
    let server =
        FakeAegisd::start(|_, _| json(201, &instance("inst-1", InstanceState::Terminated)));
    let req = CreateInstance {
        name: Some("web".into()),
        command: vec!["python3".into(), "app.py".into()],
        expose: vec![
            PortSpec {
                guest_port: 80,
                host_port: Some(8080),
                protocol: PortProtocol::Http,
            },
            PortSpec {
                guest_port: 5432,
                host_port: None,
                protocol: PortProtocol::Tcp,
            },
        ],
        idle_policy: IdlePolicy::Idle,
        pause_after_secs: Some(30),
        loading_page: Some(false),
        ..Default::default()
    };
    let created = Client::new(server.socket())
        .create_instance(&req)
        .await
        .unwrap();
    assert_eq!(created.id, "inst-1");
    assert_eq!(created.endpoints[0].url, "http://127.0.0.1:41234");
    let rec = &server.requests()[0];
    assert_eq!(
        (rec.method.as_str(), rec.uri.as_str()),
        ("POST", "/v1/instances")
    );
    let sent: CreateInstance = serde_json::from_slice(&rec.body).unwrap();
    assert_eq!(sent, req);
}

#[tokio::test]
async fn every_instance_route_uses_its_method_and_path() {
    let server = FakeAegisd::start(|rec: &Recorded, _| {
        let state = match rec.uri.rsplit('/').next() {
            Some("pause") => InstanceState::Paused,
            Some("resume") => InstanceState::Running,
            Some("stop") => InstanceState::Terminated,
            _ => InstanceState::Running,
        };
        match rec.method.as_str() {
            "DELETE" => Reply::Body(204, Vec::new()),
            _ if rec.uri == "/v1/instances" => json(200, &vec![instance("i", state)]),
            _ => json(200, &instance("i", state)),
        }
    });
    let c = Client::new(server.socket());
    assert_eq!(c.list_instances().await.unwrap().len(), 1);
    // A name is as good as an id, and is percent-encoded like one.
    assert_eq!(c.get_instance("my web").await.unwrap().id, "i");
    assert_eq!(
        c.pause_instance("i").await.unwrap().state,
        InstanceState::Paused
    );
    assert_eq!(
        c.resume_instance("i").await.unwrap().state,
        InstanceState::Running
    );
    assert_eq!(
        c.stop_instance("i").await.unwrap().state,
        InstanceState::Terminated
    );
    c.delete_instance("i").await.unwrap();
    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.uri))
        .collect();
    let want = [
        ("GET", "/v1/instances"),
        ("GET", "/v1/instances/my%20web"),
        ("POST", "/v1/instances/i/pause"),
        ("POST", "/v1/instances/i/resume"),
        ("POST", "/v1/instances/i/stop"),
        ("DELETE", "/v1/instances/i"),
    ];
    assert_eq!(
        seen,
        want.map(|(m, u)| (m.to_string(), u.to_string())).to_vec()
    );
}

#[tokio::test]
async fn a_missing_instance_is_not_found() {
    let server = FakeAegisd::start(|_, _| not_found("instance 'nope' does not exist"));
    let c = Client::new(server.socket());
    let err = c.get_instance("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.to_string(), "instance 'nope' does not exist");
    assert!(c
        .instance_logs("nope", false, 0, 0)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn instance_logs_ask_from_the_offsets() {
    let server = FakeAegisd::start(|_, _| {
        Reply::Chunks(
            vec![line(&OutputEvent::output(StreamName::Stdout, 5, b"later"))],
            Then::End,
        )
    });
    let feed = Client::new(server.socket())
        .instance_logs("inst-1", false, 5, 7)
        .await
        .unwrap();
    let events: Vec<OutputEvent> = feed.into_stream().map(|e| e.unwrap()).collect().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].bytes().unwrap(), b"later");
    assert_eq!(
        server.requests()[0].uri,
        "/v1/instances/inst-1/logs?follow=false&stdout_offset=5&stderr_offset=7"
    );
}

async fn collect_instance(follower: &mut crate::OutputFollower) -> (Vec<u8>, Vec<u8>, bool) {
    let (mut out, mut err, mut gone) = (Vec::new(), Vec::new(), false);
    while let Some(item) = follower.next().await.unwrap() {
        match item {
            FollowItem::Output {
                stream: StreamName::Stdout,
                data,
            } => out.extend(data),
            FollowItem::Output { data, .. } => err.extend(data),
            FollowItem::Gone => gone = true,
            FollowItem::End(_) => panic!("an instance feed has no end event"),
        }
    }
    (out, err, gone)
}

#[tokio::test]
async fn the_instance_follower_resumes_until_the_instance_is_gone() {
    let server = FakeAegisd::start(|rec: &Recorded, index| {
        assert!(
            rec.uri.starts_with("/v1/instances/web/logs?follow=true"),
            "{}",
            rec.uri
        );
        match index {
            // A feed that breaks off.
            0 => Reply::Chunks(
                vec![
                    line(&OutputEvent::output(StreamName::Stdout, 0, b"Serving ")),
                    line(&OutputEvent::output(StreamName::Stderr, 0, b"GET /")),
                ],
                Then::Cut,
            ),
            // Resumed from the cursors, with an overlap; then it ends without an end event
            // (the daemon's daily restart, say): reopened again.
            1 => {
                assert!(
                    rec.uri.ends_with("stdout_offset=8&stderr_offset=5"),
                    "{}",
                    rec.uri
                );
                Reply::Chunks(
                    vec![line(&OutputEvent::output(
                        StreamName::Stdout,
                        4,
                        b"ing HTTP\n",
                    ))],
                    Then::End,
                )
            }
            2 => {
                assert!(
                    rec.uri.ends_with("stdout_offset=13&stderr_offset=5"),
                    "{}",
                    rec.uri
                );
                Reply::Chunks(
                    vec![line(&OutputEvent::output(StreamName::Stderr, 5, b" 200\n"))],
                    Then::End,
                )
            }
            // Then the instance was deleted.
            _ => not_found("instance 'web' does not exist"),
        }
    });
    let mut follower = Client::new(server.socket()).follow_instance_logs("web", 0, 0);
    let (out, err, gone) = collect_instance(&mut follower).await;
    assert_eq!(out, b"Serving HTTP\n");
    assert_eq!(err, b"GET / 200\n");
    assert!(gone);
    assert_eq!(follower.offsets(), (13, 10));
    assert_eq!(follower.reconnects(), 3);
    assert!(follower.next().await.unwrap().is_none());
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn following_an_instance_that_never_existed_is_an_error() {
    let server = FakeAegisd::start(|_, _| not_found("instance 'nope' does not exist"));
    let mut follower = Client::new(server.socket()).follow_instance_logs("nope", 0, 0);
    assert!(follower.next().await.unwrap_err().is_not_found());
    assert_eq!(server.requests().len(), 1);
}
