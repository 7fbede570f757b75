//! One HTTP/1.1 exchange over a fresh unix-socket connection.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::{Client, Error, Result};

/// Owns the task that drives one connection; aborting it on drop closes the connection
/// even when the response body was not read to its end.
#[derive(Debug)]
pub(crate) struct ConnGuard(JoinHandle<()>);

impl ConnGuard {
    /// Drives `conn` in a task owned by the guard.
    pub(crate) fn spawn(conn: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        ConnGuard(tokio::spawn(conn))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// Send one request and return the response head (body unread) and its connection.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(Response<Incoming>, ConnGuard)> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.connect_error(source))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.http_error(source))?;
        let guard = ConnGuard(tokio::spawn(async move {
            // Errors surface through the response or its body; nothing to do here.
            let _ = conn.await;
        }));

        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "aegisd")
            .header(header::ACCEPT, "application/json, application/x-ndjson");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Protocol(format!("cannot build request for {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))?;
        Ok((response, guard))
    }

    /// [`Self::send`] under the client's timeout.
    async fn send_timed(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(Response<Incoming>, ConnGuard)> {
        let what = format!("{method} {path}");
        tokio::time::timeout(self.timeout, self.send(method, path, body))
            .await
            .map_err(|_| Error::Timeout {
                what,
                after: self.timeout,
            })?
    }

    /// A request whose 2xx answer is a JSON `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "{what} answered {status} with a body that does not parse ({e}): {}",
                snippet(&bytes)
            ))
        })
    }

    /// A request whose 2xx answer carries nothing we need.
    pub(crate) async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<()> {
        self.call(method, path, body).await.map(drop)
    }

    /// Send, read the whole body, and turn non-2xx answers into errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let exchange = async {
            let (response, _conn) = self.send(method, path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|source| self.http_error(source))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                what,
                after: self.timeout,
            })??;
        if status.is_success() {
            Ok((status, bytes))
        } else {
            Err(api_error(status, &bytes))
        }
    }

    /// A request whose 2xx body is a stream the caller reads; the head is timed out, the
    /// body is not.
    pub(crate) async fn open_stream(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(Incoming, ConnGuard)> {
        self.open_stream_with(method, path, None).await
    }

    /// [`Self::open_stream`] with a request body.
    pub(crate) async fn open_stream_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(Incoming, ConnGuard)> {
        let (response, conn) = self.send_timed(method, path, body).await?;
        let status = response.status();
        if status.is_success() {
            return Ok((response.into_body(), conn));
        }
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Err(api_error(status, &bytes))
    }

    /// A request whose body is `body`, streamed as it comes, answered by an empty success or an
    /// API error. Not timed out: it lasts as long as the body does. An `Err` item of the body
    /// breaks the upload off, so the daemon never takes a cut-off body for a whole one.
    pub(crate) async fn upload<S, E>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: S,
    ) -> Result<()>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        use futures::StreamExt;
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.connect_error(source))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.http_error(source))?;
        let _conn = ConnGuard::spawn(async move {
            let _ = conn.await;
        });
        let body =
            http_body_util::StreamBody::new(body.map(|chunk| chunk.map(hyper::body::Frame::data)));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "aegisd")
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| Error::Protocol(format!("cannot build request for {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| self.http_error(source))?
            .to_bytes();
        if status.is_success() {
            Ok(())
        } else {
            Err(api_error(status, &bytes))
        }
    }

    pub(crate) fn connect_error(&self, source: io::Error) -> Error {
        match source.kind() {
            // No socket, or a stale one left by a daemon that died.
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::DaemonNotRunning {
                socket: self.socket.clone(),
            },
            _ => Error::Io {
                action: "connect to",
                socket: self.socket.clone(),
                source,
            },
        }
    }

    pub(crate) fn http_error(&self, source: hyper::Error) -> Error {
        Error::Http {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// The error of a non-2xx answer: its [`aegis_api::ApiError`] body, or a protocol error when
/// the body is not one.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice(body) {
        Ok(error) => Error::Api {
            status: status.as_u16(),
            error,
        },
        Err(_) => Error::Protocol(format!("HTTP {status}: {}", snippet(body))),
    }
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text.trim().chars().filter(|c| !c.is_control()).collect();
    if body.len() > MAX {
        s.push_str("...");
    }
    if s.is_empty() {
        s.push_str("(empty body)");
    }
    s
}
