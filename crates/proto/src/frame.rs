//! Wire format.
//!
//! ```text
//! +-----------+--------+-------------+------------------+
//! | len: u32  | kind:u8| stream: u32 | payload          |
//! +-----------+--------+-------------+------------------+
//! ```
//! All integers little-endian. `len` counts the bytes after itself (kind + stream + payload).
//! Control payloads are one JSON-encoded message (typed, versioned, easy to inspect in a
//! capture); data payloads are raw bytes. Data frames are at most [`MAX_DATA`] bytes, so one
//! large write never monopolises the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Identifies one byte stream inside a session. Stream 0 is never used for data.
pub type StreamId = u32;

/// Largest data payload in one frame.
pub const MAX_DATA: usize = 64 * 1024;
/// Largest frame accepted from the peer (control messages carry env and argv, so allow room).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

const HEADER: usize = 1 + 4;

const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_EOF: u8 = 2;
const KIND_CREDIT: u8 = 3;
const KIND_RESET: u8 = 4;

/// One frame of the session, generic over the control vocabulary of the sending side.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<C> {
    /// A typed control message.
    Control(C),
    /// Bytes of one stream.
    Data { stream: StreamId, data: Bytes },
    /// The sender will write no more bytes to `stream`.
    Eof { stream: StreamId },
    /// The receiver of `stream` consumed `bytes`; the sender may send that much more.
    Credit { stream: StreamId, bytes: u32 },
    /// Abort `stream` in both directions.
    Reset { stream: StreamId },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O error on the session channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("undecodable control message: {0}")]
    Decode(#[from] serde_json::Error),
}

impl<C: Serialize> Frame<C> {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let (kind, stream, payload): (u8, StreamId, Bytes) = match self {
            Frame::Control(msg) => (KIND_CONTROL, 0, Bytes::from(serde_json::to_vec(msg)?)),
            Frame::Data { stream, data } => (KIND_DATA, *stream, data.clone()),
            Frame::Eof { stream } => (KIND_EOF, *stream, Bytes::new()),
            Frame::Credit { stream, bytes } => (
                KIND_CREDIT,
                *stream,
                Bytes::copy_from_slice(&bytes.to_le_bytes()),
            ),
            Frame::Reset { stream } => (KIND_RESET, *stream, Bytes::new()),
        };
        let len = HEADER + payload.len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        out.reserve(4 + len);
        out.put_u32_le(len as u32);
        out.put_u8(kind);
        out.put_u32_le(stream);
        out.put_slice(&payload);
        Ok(())
    }

    /// Writes one frame to `w` (not flushed).
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> Result<(), FrameError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        w.write_all(&buf).await?;
        Ok(())
    }
}

impl<C: DeserializeOwned> Frame<C> {
    /// Decodes the body of a frame (everything after the length prefix).
    pub fn decode(mut body: Bytes) -> Result<Self, FrameError> {
        if body.len() < HEADER {
            return Err(FrameError::Malformed("frame shorter than its header"));
        }
        let kind = body.get_u8();
        let stream = body.get_u32_le();
        Ok(match kind {
            KIND_CONTROL => Frame::Control(serde_json::from_slice(&body)?),
            KIND_DATA => Frame::Data { stream, data: body },
            KIND_EOF => Frame::Eof { stream },
            KIND_CREDIT => {
                if body.len() != 4 {
                    return Err(FrameError::Malformed("credit frame without a 4-byte count"));
                }
                Frame::Credit {
                    stream,
                    bytes: body.get_u32_le(),
                }
            }
            KIND_RESET => Frame::Reset { stream },
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Reads one frame. `Ok(None)` on a clean end of stream between frames.
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Self>, FrameError> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Self::decode(Bytes::from(body)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GuestMessage, HostMessage};

    fn roundtrip<C>(f: Frame<C>) -> Frame<C>
    where
        C: Serialize + DeserializeOwned,
    {
        let mut buf = BytesMut::new();
        f.encode(&mut buf).unwrap();
        let mut b = buf.freeze();
        let len = b.get_u32_le() as usize;
        assert_eq!(len, b.len());
        Frame::decode(b).unwrap()
    }

    #[test]
    fn every_kind_roundtrips() {
        let frames: Vec<Frame<HostMessage>> = vec![
            Frame::Control(HostMessage::Ping { nonce: 7 }),
            Frame::Data {
                stream: 3,
                data: Bytes::from_static(b"\0\xffbinary\n"),
            },
            Frame::Eof { stream: 5 },
            Frame::Credit {
                stream: 9,
                bytes: 65536,
            },
            Frame::Reset { stream: 11 },
        ];
        for f in frames {
            assert_eq!(roundtrip(f.clone()), f);
        }
        let g = Frame::Control(GuestMessage::Pong { nonce: 1 });
        assert_eq!(roundtrip(g.clone()), g);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Frame::<HostMessage>::decode(Bytes::from_static(b"\x01")),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            Frame::<HostMessage>::decode(Bytes::from_static(b"\x09\0\0\0\0")),
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(
            Frame::<HostMessage>::decode(Bytes::from_static(b"\x00\0\0\0\0{nope")),
            Err(FrameError::Decode(_))
        ));
        assert!(matches!(
            Frame::<HostMessage>::decode(Bytes::from_static(b"\x03\0\0\0\0\x01")),
            Err(FrameError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let mut bytes: &[u8] = &[0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            Frame::<HostMessage>::read_from(&mut bytes).await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn clean_eof_between_frames() {
        let mut bytes: &[u8] = &[];
        assert!(Frame::<HostMessage>::read_from(&mut bytes)
            .await
            .unwrap()
            .is_none());
    }
}
