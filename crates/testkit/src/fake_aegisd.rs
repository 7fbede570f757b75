//! A scripted stand-in for aegisd on `<home>/aegisd.sock` that records every request. It
//! speaks the daemon's HTTP/1.1 over a unix socket, so clients under test use their real
//! transport.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// What the stand-in saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Vec<u8>,
}

/// What the stand-in answers.
pub enum Reply {
    /// A complete JSON body with this status.
    Body(u16, Vec<u8>),
    /// A chunked NDJSON body (status 200), one frame per element; then [`Then`].
    Chunks(Vec<Vec<u8>>, Then),
}

/// How a chunked body finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// The body ends normally.
    End,
    /// The connection is cut after the last chunk, as by a daemon that dies.
    Cut,
    /// The body never ends.
    Hang,
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

/// The stand-in; it stops serving when dropped.
pub struct FakeAegisd {
    home: tempfile::TempDir,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeAegisd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAegisd {
    /// Serves `handler(request, index among all requests)` on `<home>/aegisd.sock` of a new
    /// temporary home. Needs a tokio runtime.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let home = tempfile::tempdir().expect("temporary home for the fake aegisd");
        let socket = home.path().join("aegisd.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", socket.display()));
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
                        async move { Ok::<_, Infallible>(serve(req, handler.as_ref(), &seen).await) }
                    });
                    // A client that hangs up early is the client's business, not a failure here.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeAegisd {
            home,
            requests,
            task,
        }
    }

    /// The Aegis home whose `aegisd.sock` this stand-in serves.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `<home>/aegisd.sock`.
    pub fn socket(&self) -> PathBuf {
        self.home.path().join("aegisd.sock")
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests with this method whose path starts with `prefix`.
    pub fn requests_to(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.uri.starts_with(prefix))
            .collect()
    }
}

async fn serve(
    req: Request<Incoming>,
    handler: &Handler,
    seen: &Mutex<Vec<Recorded>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            let message = format!("unreadable request body: {e}");
            return full(400, "text/plain", message.into_bytes());
        }
    };
    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        body,
    };
    let index = {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.push(rec.clone());
        seen.len() - 1
    };
    respond(handler(&rec, index))
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

fn full(status: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_else(|e| panic!("the test scripted an invalid response ({status}): {e}"))
}

fn respond(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Body(status, body) => full(status, "application/json", body),
        Reply::Chunks(chunks, then) => {
            let frames = futures::stream::iter(chunks).then(|c| async move {
                // Separate writes, so the client sees the chunks arrive one by one.
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
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-ndjson"),
            );
            resp
        }
    }
}
