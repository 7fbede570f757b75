//! A scripted stand-in for aegisd on `<home>/aegisd.sock`, and a way to run the real `aegis`
//! binary against it. The daemon's own behaviour is tested in its crate; here only the CLI's
//! side of the conversation matters.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_api::{
    CreateInstance, Endpoint, Instance, InstanceState, OutputEvent, PortProtocol, PortSpec,
    StreamName, Task, TaskState, WakeStats,
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub body: Vec<u8>,
}

pub enum Reply {
    Body(u16, Vec<u8>),
    /// A chunked body; then end it, cut the connection, or never end.
    Chunks(Vec<Vec<u8>>, Then),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Then {
    End,
    Cut,
    Hang,
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct FakeDaemon {
    pub home: tempfile::TempDir,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDaemon {
    /// Serve `handler(request, index among all requests)` on `<home>/aegisd.sock`.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let home = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(home.path().join("aegisd.sock")).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes().to_vec();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                body,
                            };
                            let index = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(rec.clone());
                                seen.len() - 1
                            };
                            Ok::<_, Infallible>(respond(handler(&rec, index)))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeDaemon {
            home,
            requests,
            task,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.uri.starts_with(prefix))
            .collect()
    }
}

fn respond(reply: Reply) -> Response<UnsyncBoxBody<Bytes, io::Error>> {
    match reply {
        Reply::Body(status, body) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap(),
        Reply::Chunks(chunks, then) => {
            let frames = futures::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, io::Error>(Frame::data(Bytes::from(c)))
            });
            let tail = futures::stream::iter([then]).then(|then| async move {
                // Let the last chunk leave before the connection is cut.
                tokio::time::sleep(Duration::from_millis(20)).await;
                match then {
                    Then::Hang => futures::future::pending().await,
                    _ => Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut")),
                }
            });
            let body = if then == Then::End {
                StreamBody::new(frames.boxed()).boxed_unsync()
            } else {
                StreamBody::new(frames.chain(tail).boxed()).boxed_unsync()
            };
            Response::builder()
                .status(200)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .unwrap()
        }
    }
}

pub fn task(state: TaskState) -> Task {
    Task {
        id: "task-1".into(),
        state,
        command: vec!["cmd".into()],
        image: "debian".into(),
        vcpus: 1,
        memory_mib: 512,
        timeout_secs: None,
        exit_code: None,
        error: None,
        created_at: "2025-01-01T00:00:00Z".into(),
        started_at: None,
        ended_at: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
        artifacts_dir: None,
        guest_kernel: None,
        workspace: None,
    }
}

/// Instance `inst-1` named `web`, serving guest port 8000 (http) on host port 41234 and
/// guest port 5432 (tcp) on 41235.
pub fn instance(state: InstanceState) -> Instance {
    Instance {
        id: "inst-1".into(),
        name: "web".into(),
        state,
        target: CreateInstance {
            command: vec!["cmd".into()],
            expose: vec![
                PortSpec {
                    guest_port: 8000,
                    host_port: None,
                    protocol: PortProtocol::Http,
                },
                PortSpec {
                    guest_port: 5432,
                    host_port: None,
                    protocol: PortProtocol::Tcp,
                },
            ],
            ..Default::default()
        },
        endpoints: vec![
            Endpoint {
                guest_port: 8000,
                host_port: 41234,
                protocol: PortProtocol::Http,
                url: "http://127.0.0.1:41234".into(),
            },
            Endpoint {
                guest_port: 5432,
                host_port: 41235,
                protocol: PortProtocol::Tcp,
                url: "tcp://127.0.0.1:41235".into(),
            },
        ],
        created_at: "2025-01-01T00:00:00Z".into(),
        last_active_at: "2025-01-01T00:00:00Z".into(),
        active_connections: 0,
        snapshot_cached: false,
        stats: WakeStats::default(),
        last_error: None,
        guest_kernel: None,
    }
}

pub fn not_found(message: &str) -> Reply {
    json(
        404,
        &aegis_api::ApiError::new(aegis_api::ErrorCode::NotFound, message),
    )
}

pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
    Reply::Body(status, serde_json::to_vec(value).unwrap())
}

pub fn out(stream: StreamName, offset: u64, data: &[u8]) -> Vec<u8> {
    line(&OutputEvent::output(stream, offset, data))
}

pub fn end(task: Task) -> Vec<u8> {
    line(&OutputEvent::End {
        task: Box::new(task),
    })
}

fn line(e: &OutputEvent) -> Vec<u8> {
    let mut l = serde_json::to_vec(e).unwrap();
    l.push(b'\n');
    l
}

/// `(stdout_offset, stderr_offset)` of an output request.
pub fn offsets(uri: &str) -> (u64, u64) {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let get = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0)
    };
    (get("stdout_offset"), get("stderr_offset"))
}

pub fn aegis(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aegis"));
    cmd.env("AEGIS_HOME", home)
        .env_remove("AEGIS_DAEMON")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub async fn run_aegis(home: &Path, args: &[&str]) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(60), aegis(home).args(args).output())
        .await
        .expect("aegis did not finish within 60s")
        .unwrap();
    output
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn missing_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    (dir, home)
}
