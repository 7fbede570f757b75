//! Files of a live instance: `/v1/instances/{id}/files/...`. Archives stream both ways: a read
//! is a stream of tar bytes, a write sends a stream of tar bytes as the request body.

use std::pin::Pin;
use std::task::{Context, Poll};

use aegis_api::{FileInfo, WatchEvent};
use bytes::Bytes;
use futures::Stream;
use hyper::body::{Body as _, Incoming};
use hyper::Method;

use crate::output::NdjsonStream;
use crate::transport::ConnGuard;
use crate::{encode_segment, instance_path, Client, Error, Result};

/// `/v1/instances/{id}/files/{op}?path=...`, both parts percent-encoded.
fn files_path(id: &str, op: &str, path: &str) -> String {
    instance_path(id, &format!("/files/{op}?path={}", encode_segment(path)))
}

/// The tar stream of a guest path. Ends with an error (never silently short) when the guest
/// or the connection failed midway.
pub struct ArchiveStream {
    body: Incoming,
    _conn: ConnGuard,
}

impl Stream for ArchiveStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Protocol(format!(
                    "the archive broke off: {e}"
                ))))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    // Trailers: nothing we use.
                    Err(_) => continue,
                },
            };
        }
    }
}

impl Client {
    /// `GET .../files/stat?path=`: what the guest path is (symlinks not followed).
    pub async fn stat_path(&self, id: &str, path: &str) -> Result<FileInfo> {
        self.call_json(Method::GET, &files_path(id, "stat", path), None)
            .await
    }

    /// `GET .../files/list?path=`: the path, with a directory's entries.
    pub async fn list_path(&self, id: &str, path: &str) -> Result<FileInfo> {
        self.call_json(Method::GET, &files_path(id, "list", path), None)
            .await
    }

    /// `GET .../files/archive?path=`: the guest path as a tar stream, entries named from its
    /// last component.
    pub async fn read_archive(&self, id: &str, path: &str) -> Result<ArchiveStream> {
        let (body, conn) = self
            .open_stream(Method::GET, &files_path(id, "archive", path))
            .await?;
        Ok(ArchiveStream { body, _conn: conn })
    }

    /// `GET .../files/watch?path=DIR`: changes to the entries of the guest directory `dir`
    /// (not recursive), one event at a time, until the stream is dropped or the directory
    /// goes away. The instance is kept awake meanwhile.
    pub async fn watch_path(&self, id: &str, dir: &str) -> Result<NdjsonStream<WatchEvent>> {
        let (body, conn) = self
            .open_stream(Method::GET, &files_path(id, "watch", dir))
            .await?;
        Ok(NdjsonStream::new(body, conn, self.socket.clone()))
    }

    /// `PUT .../files/archive?path=DIR`: unpacks the tar stream `archive` into the existing
    /// guest directory `dir`. The guest puts entries in place only once all arrived. Not
    /// timed out: the upload lasts as long as the archive does.
    pub async fn write_archive<S>(&self, id: &str, dir: &str, archive: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let uri = files_path(id, "archive", dir);
        self.upload(Method::PUT, &uri, "application/x-tar", archive)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_travel_as_one_query_value() {
        assert_eq!(
            files_path("web", "stat", "/a b/../c?d&path=e"),
            "/v1/instances/web/files/stat?path=%2Fa%20b%2F..%2Fc%3Fd%26path%3De"
        );
    }
}
