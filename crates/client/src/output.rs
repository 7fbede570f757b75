//! NDJSON feeds (the output of a task or an instance, the progress of a pull), parsed
//! incrementally.

use std::marker::PhantomData;
use std::path::PathBuf;

use aegis_api::OutputEvent;
use bytes::{Buf, BytesMut};
use futures::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::transport::{snippet, ConnGuard};
use crate::{Error, Result};

/// One response of `GET /v1/tasks/{id}/output` or `GET /v1/instances/{id}/logs`: a sequence
/// of [`OutputEvent`]s.
pub type OutputStream = NdjsonStream<OutputEvent>;

/// A streamed response of one JSON value of type `T` per line.
///
/// Lines may be of any length (a task may print megabytes without a newline) and may arrive
/// split anywhere; each is parsed once it is complete.
#[derive(Debug)]
pub struct NdjsonStream<T> {
    body: Incoming,
    lines: LineBuffer,
    eof: bool,
    failed: bool,
    socket: PathBuf,
    _conn: ConnGuard,
    _item: PhantomData<fn() -> T>,
}

impl<T: serde::de::DeserializeOwned> NdjsonStream<T> {
    pub(crate) fn new(body: Incoming, conn: ConnGuard, socket: PathBuf) -> Self {
        NdjsonStream {
            body,
            lines: LineBuffer::default(),
            eof: false,
            failed: false,
            socket,
            _conn: conn,
            _item: PhantomData,
        }
    }

    /// The next event; `None` once the response is complete. A connection lost in the
    /// middle is [`Error::Http`] (transient: resume from your offsets).
    pub async fn next_event(&mut self) -> Result<Option<T>> {
        if self.failed {
            return Ok(None);
        }
        let result = self.read_event().await;
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    async fn read_event(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(line) = self.lines.next_line() {
                if let Some(event) = parse_line(&line)? {
                    return Ok(Some(event));
                }
                continue;
            }
            if self.eof {
                // A last line without its newline is still a line.
                return match self.lines.take_rest() {
                    Some(line) => parse_line(&line),
                    None => Ok(None),
                };
            }
            match self.body.frame().await {
                None => self.eof = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Some(Err(source)) => {
                    return Err(Error::Http {
                        socket: self.socket.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// The same events as a [`Stream`]; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<T>> {
        futures::stream::unfold(self, |mut feed| async move {
            match feed.next_event().await {
                Ok(Some(event)) => Some((Ok(event), feed)),
                Ok(None) => None,
                Err(e) => Some((Err(e), feed)),
            }
        })
    }
}

/// `None` for a blank line.
fn parse_line<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<Option<T>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(line)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("invalid stream event ({e}): {}", snippet(line))))
}

/// Splits bytes into `\n`-terminated lines without a length limit, scanning every byte once.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    buf: BytesMut,
    /// `buf[..scanned]` holds no newline.
    scanned: usize,
}

impl LineBuffer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, without its `\n`.
    pub fn next_line(&mut self) -> Option<BytesMut> {
        let pos = self.buf[self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + self.scanned);
        match pos {
            Some(pos) => {
                let mut line = self.buf.split_to(pos + 1);
                line.truncate(pos);
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Whatever is left after the last newline, if anything.
    pub fn take_rest(&mut self) -> Option<BytesMut> {
        self.scanned = 0;
        if self.buf.has_remaining() {
            Some(self.buf.split())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_are_reassembled() {
        let text = b"{\"a\":1}\n\n{\"b\":2}\n{\"c\"";
        for cut in 0..text.len() {
            let mut lb = LineBuffer::default();
            let mut lines = Vec::new();
            for part in [&text[..cut], &text[cut..]] {
                lb.push(part);
                while let Some(l) = lb.next_line() {
                    lines.push(l.to_vec());
                }
            }
            assert_eq!(
                lines,
                vec![b"{\"a\":1}".to_vec(), b"".to_vec(), b"{\"b\":2}".to_vec()]
            );
            assert_eq!(lb.take_rest().unwrap().as_ref(), b"{\"c\"");
            assert!(lb.take_rest().is_none());
        }
    }

    #[test]
    fn a_long_line_is_scanned_once_per_byte() {
        let mut lb = LineBuffer::default();
        for _ in 0..1000 {
            lb.push(&[b'x'; 1000]);
            assert!(lb.next_line().is_none());
            assert_eq!(lb.scanned, lb.buf.len());
        }
        lb.push(b"\n");
        assert_eq!(lb.next_line().unwrap().len(), 1_000_000);
    }

    #[test]
    fn blank_lines_are_skipped_and_garbage_is_a_protocol_error() {
        assert!(parse_line::<OutputEvent>(b"  \r").unwrap().is_none());
        let err = parse_line::<OutputEvent>(b"not json").unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }
}
