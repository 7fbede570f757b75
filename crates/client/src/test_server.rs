//! A tiny scripted HTTP server on a temporary unix socket, standing in for aegisd in tests.

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// What the server saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Vec<u8>,
}

/// What the server answers.
pub enum Reply {
    /// A complete body.
    Body(u16, Vec<u8>),
    /// A chunked body, one frame per element; with `abort`, the connection is cut after
    /// the last one instead of ending the body.
    Chunks { chunks: Vec<Vec<u8>>, abort: bool },
}

pub type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct TestServer {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serve `handler(request, index of the request)` until dropped.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("aegisd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
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
        TestServer {
            _dir: dir,
            socket,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn respond(reply: Reply) -> Response<BoxBody<Bytes, io::Error>> {
    match reply {
        Reply::Body(status, body) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap(),
        Reply::Chunks { chunks, abort } => {
            let frames = futures::stream::iter(chunks).then(|c| async move {
                // Separate writes, so the client sees the chunks arrive one by one.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, io::Error>(Frame::data(Bytes::from(c)))
            });
            let tail = futures::stream::iter(abort.then_some(())).then(|()| async {
                // Let the last chunk leave before the connection is cut.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut"))
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/x-ndjson")
                .body(BodyExt::boxed(StreamBody::new(frames.chain(tail))))
                .unwrap()
        }
    }
}
