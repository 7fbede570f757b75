//! Out-of-range durations are refused at the API, over real HTTP on the daemon's unix socket
//! (an in-process daemon with the fake backend): a huge `timeout_secs` once overflowed the
//! runner's clock, answered 201 and left the task `running` forever.

use std::sync::Arc;
use std::time::Duration;

use aegis_vmm::FakeBackend;
use aegisd::config::Config;
use aegisd::guest::{BootAssets, GuestAssets};
use aegisd::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Served {
    daemon: Arc<Daemon>,
    socket: std::path::PathBuf,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _home: tempfile::TempDir,
}

async fn serve() -> Served {
    let home = tempfile::tempdir().unwrap();
    let mut config = Config::new(home.path().to_path_buf(), "fake").unwrap();
    config.router_addr = "127.0.0.1:0".parse().unwrap();
    let assets = BootAssets {
        kernel: "/dev/null".into(),
        initramfs: "/dev/null".into(),
        layers: vec!["/dev/null".into()],
    };
    let guest = GuestAssets::fixed(&config, assets);
    let socket = config.home.socket();
    let daemon = Daemon::start_with(config, Arc::new(FakeBackend::new()), guest)
        .await
        .unwrap();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve(listener).await }
    });
    Served {
        daemon,
        socket,
        server,
        _home: home,
    }
}

/// One HTTP/1.1 request: (status, body).
async fn request(socket: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: aegisd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut raw))
        .await
        .expect("aegisd did not answer")
        .unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, body.to_string())
}

#[tokio::test]
async fn out_of_range_durations_get_a_400_that_states_the_limit() {
    let s = serve().await;
    for secs in [i64::MAX as u64, u64::MAX, aegis_api::MAX_DURATION_SECS + 1] {
        let (status, body) = request(
            &s.socket,
            "POST",
            "/v1/tasks",
            &format!(r#"{{"command":["true"],"timeout_secs":{secs}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("invalid_request") && body.contains("1 to 604800 seconds (7 days)"),
            "{body}"
        );
    }
    let (status, body) = request(
        &s.socket,
        "POST",
        "/v1/tasks",
        r#"{"command":["true"],"timeout_secs":0}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at least 1 second"), "{body}");
    assert!(
        s.daemon.registry.list_tasks().unwrap().is_empty(),
        "no task was recorded"
    );

    for field in [
        "wake_timeout_secs",
        "pause_after_secs",
        "terminate_after_secs",
    ] {
        let (status, body) = request(
            &s.socket,
            "POST",
            "/v1/instances",
            &format!(
                r#"{{"command":["true"],"expose":[{{"guest_port":8000,"protocol":"http"}}],"{field}":9223372036854775807}}"#
            ),
        )
        .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(
            body.contains(field) && body.contains("7 days"),
            "{field}: {body}"
        );
    }

    // The largest accepted timeout runs a task to its end.
    let (status, body) = request(
        &s.socket,
        "POST",
        "/v1/tasks",
        &format!(
            r#"{{"command":["true"],"timeout_secs":{}}}"#,
            aegis_api::MAX_DURATION_SECS
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let task: aegis_api::Task = serde_json::from_str(&body).unwrap();
    let mut end = task.clone();
    for _ in 0..600 {
        end = s.daemon.tasks.get(&s.daemon, &task.id).unwrap();
        if end.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(end.state, aegis_api::TaskState::Exited, "{end:?}");

    s.daemon.shutdown.cancel();
    s.server.await.unwrap().unwrap();
}
