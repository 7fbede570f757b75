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
//!
//! Decoding trusts nothing: the limit of each kind (data [`MAX_DATA`], control [`MAX_FRAME`],
//! credit exactly 4 bytes, EOF and reset none) is checked against the length prefix and the
//! kind byte *before* the payload is read, so no input makes the decoder allocate more than
//! the limit of the frame's kind.

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
    #[error("{kind} frame of {len} bytes exceeds the limit of {limit} bytes for its kind")]
    TooLarge {
        kind: &'static str,
        len: usize,
        limit: usize,
    },
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
        check_len(kind, len)?;
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

/// Largest frame (kind + stream + payload, i.e. the length prefix) allowed for `kind`.
fn limit_of(kind: u8) -> Result<(&'static str, usize), FrameError> {
    Ok(match kind {
        KIND_CONTROL => ("control", MAX_FRAME),
        KIND_DATA => ("data", HEADER + MAX_DATA),
        KIND_EOF => ("eof", HEADER),
        KIND_CREDIT => ("credit", HEADER + 4),
        KIND_RESET => ("reset", HEADER),
        other => return Err(FrameError::UnknownKind(other)),
    })
}

fn check_len(kind: u8, len: usize) -> Result<(), FrameError> {
    let (name, limit) = limit_of(kind)?;
    if len > limit {
        return Err(FrameError::TooLarge {
            kind: name,
            len,
            limit,
        });
    }
    Ok(())
}

impl<C: DeserializeOwned> Frame<C> {
    /// Decodes the body of a frame (everything after the length prefix).
    pub fn decode(mut body: Bytes) -> Result<Self, FrameError> {
        if body.len() > MAX_FRAME {
            return Err(FrameError::TooLarge {
                kind: "any",
                len: body.len(),
                limit: MAX_FRAME,
            });
        }
        if body.len() < HEADER {
            return Err(FrameError::Malformed("frame shorter than its header"));
        }
        check_len(body[0], body.len())?;
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
    ///
    /// The length prefix and the kind byte are checked before the payload buffer is
    /// allocated: a peer cannot make this side reserve more than the limit of the kind.
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Self>, FrameError> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge {
                kind: "any",
                len,
                limit: MAX_FRAME,
            });
        }
        if len < HEADER {
            return Err(FrameError::Malformed("frame shorter than its header"));
        }
        let kind = r.read_u8().await?;
        check_len(kind, len)?;
        let mut body = vec![0u8; len];
        body[0] = kind;
        r.read_exact(&mut body[1..]).await?;
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
            Err(FrameError::TooLarge { .. })
        ));
    }

    /// Builds the bytes of a frame with an arbitrary kind and payload, bypassing the encoder.
    fn raw(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&stream.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn oversize_data_frame_is_rejected() {
        let bytes = raw(KIND_DATA, 1, &vec![7u8; MAX_DATA + 1]);
        let r = Frame::<HostMessage>::read_from(&mut bytes.as_slice()).await;
        assert!(
            matches!(
                r,
                Err(FrameError::TooLarge {
                    kind: "data",
                    len,
                    limit
                }) if len == HEADER + MAX_DATA + 1 && limit == HEADER + MAX_DATA
            ),
            "{r:?}"
        );
        let body = Bytes::from(bytes[4..].to_vec());
        assert!(matches!(
            Frame::<HostMessage>::decode(body),
            Err(FrameError::TooLarge { kind: "data", .. })
        ));
        // The largest legal data frame still passes.
        let bytes = raw(KIND_DATA, 1, &vec![7u8; MAX_DATA]);
        let f = Frame::<HostMessage>::read_from(&mut bytes.as_slice()).await;
        assert!(matches!(f, Ok(Some(Frame::Data { stream: 1, data })) if data.len() == MAX_DATA));
    }

    #[tokio::test]
    async fn a_large_prefix_of_a_small_kind_is_refused_before_reading_its_payload() {
        // A 4 MiB "reset" frame: refused after the kind byte, with only 5 bytes supplied.
        let mut head = ((MAX_FRAME) as u32).to_le_bytes().to_vec();
        head.push(KIND_RESET);
        let r = Frame::<HostMessage>::read_from(&mut head.as_slice()).await;
        assert!(
            matches!(r, Err(FrameError::TooLarge { kind: "reset", .. })),
            "{r:?}"
        );
        let mut head = 3u32.to_le_bytes().to_vec();
        head.extend_from_slice(&[0, 0, 0]);
        let r = Frame::<HostMessage>::read_from(&mut head.as_slice()).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_reject() {
        let f = Frame::<HostMessage>::Data {
            stream: 1,
            data: Bytes::from(vec![0u8; MAX_DATA + 1]),
        };
        assert!(matches!(
            f.encode(&mut BytesMut::new()),
            Err(FrameError::TooLarge { kind: "data", .. })
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
