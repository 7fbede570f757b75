//! Blocking `Read`/`Write` over an async channel of chunks.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Size of the chunks a [`ChunkWriter`] sends.
pub const CHUNK: usize = 64 * 1024;

/// `io::Read` over chunks sent from the async side, for a blocking thread. `Some(chunk)` is
/// data, `None` the stream's clean end; a channel closed without `None` (the sender failed,
/// timed out or was cancelled) is an error, so that an archive cut off exactly at an entry
/// boundary is never taken for a whole one.
pub struct ChunkReader {
    rx: mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Option<Bytes>>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(chunk)) => self.current = chunk,
                Some(None) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive stream broke off before its end",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What a [`ChunkWriter`] sends: a bare chunk, or a chunk of a stream that can also carry an
/// error (an upload body, which must end broken when packing fails).
pub trait Chunk: Send + 'static {
    fn from_bytes(bytes: Bytes) -> Self;
}

impl Chunk for Bytes {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes
    }
}

impl Chunk for io::Result<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Ok(bytes)
    }
}

/// `io::Write` that cuts what is written into [`CHUNK`]-sized chunks for the async side, for
/// a blocking thread. Call `flush` at the end: it sends the last, partial chunk. A receiver
/// gone is `BrokenPipe`, so the writer stops at once.
pub struct ChunkWriter<T: Chunk = Bytes> {
    buf: Vec<u8>,
    tx: mpsc::Sender<T>,
}

impl<T: Chunk> ChunkWriter<T> {
    pub fn new(tx: mpsc::Sender<T>) -> Self {
        ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(T::from_bytes(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the archive's reader is gone"))
    }
}

impl<T: Chunk> Write for ChunkWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_out_as_they_went_in_and_end_cleanly() {
        let (tx, rx) = mpsc::channel(64);
        let data: Vec<u8> = (0..CHUNK * 2 + 10).map(|i| i as u8).collect();
        let mut w = ChunkWriter::<Bytes>::new(tx);
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        drop(w);
        let (ftx, frx) = mpsc::channel(64);
        let mut rx = rx;
        let mut sizes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            sizes.push(chunk.len());
            ftx.try_send(Some(chunk)).unwrap();
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
        ftx.try_send(None).unwrap();
        let mut out = Vec::new();
        ChunkReader::new(frx).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_stream_closed_without_its_end_is_an_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Some(Bytes::from_static(b"part"))).unwrap();
        drop(tx);
        let mut out = Vec::new();
        let e = ChunkReader::new(rx).read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, b"part");
    }

    #[test]
    fn a_gone_reader_is_a_broken_pipe() {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
        drop(rx);
        let mut w = ChunkWriter::new(tx);
        w.write_all(b"x").unwrap();
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
