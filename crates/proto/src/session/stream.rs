//! The two halves of a session stream: receiving (with credit grants) and sending (within
//! the peer's credit).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{encode, Incoming, SessionError, Shared, StreamState, CREDIT_BATCH};
use crate::frame::{Frame, StreamId, MAX_DATA};

/// One bidirectional byte stream of a session.
pub struct Stream {
    pub recv: RecvHalf,
    pub send: SendHalf,
}

impl Stream {
    pub(super) fn new(state: Arc<StreamState>, shared: Arc<Shared>) -> Stream {
        Stream {
            recv: RecvHalf {
                state: state.clone(),
                shared: shared.clone(),
                pending_credit: 0,
                eof: false,
            },
            send: SendHalf {
                state,
                shared,
                eof_sent: false,
            },
        }
    }

    pub fn id(&self) -> StreamId {
        self.send.state.id
    }

    pub fn into_split(self) -> (RecvHalf, SendHalf) {
        (self.recv, self.send)
    }
}

/// Receiving half of a stream. Dropping it before end-of-stream resets the stream so the
/// peer's sender never waits for credit that will not come.
pub struct RecvHalf {
    pub(super) state: Arc<StreamState>,
    shared: Arc<Shared>,
    pending_credit: u32,
    eof: bool,
}

impl RecvHalf {
    pub fn id(&self) -> StreamId {
        self.state.id
    }

    /// The next chunk of bytes; `Ok(None)` at end of stream.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, SessionError> {
        if self.eof {
            return Ok(None);
        }
        let state = self.state.clone();
        loop {
            let notified = state.incoming_ready.notified();
            let item = {
                let mut q = state.incoming.lock();
                let item = q.items.pop_front();
                if let Some(Incoming::Data(d)) = &item {
                    q.unconsumed -= d.len() as u64;
                    self.shared.queued_sub(d.len() as u64);
                }
                item
            };
            match item {
                Some(Incoming::Data(d)) => {
                    self.grant(d.len() as u32).await;
                    return Ok(Some(d));
                }
                Some(Incoming::Eof) => {
                    self.eof = true;
                    return Ok(None);
                }
                Some(Incoming::Reset) => {
                    self.eof = true;
                    return Err(SessionError::Reset(self.state.id));
                }
                None if self.shared.closed.load(Ordering::Acquire) => {
                    return Err(self.shared.closed_error())
                }
                None => notified.await,
            }
        }
    }

    /// Reads the stream to its end.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.recv().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn grant(&mut self, n: u32) {
        self.pending_credit += n;
        if self.pending_credit >= CREDIT_BATCH {
            let bytes = std::mem::take(&mut self.pending_credit);
            let stream = self.state.id;
            if let Ok(f) = encode(&Frame::<()>::Credit { stream, bytes }) {
                let _ = self.shared.send_raw(f).await;
            }
        }
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        if !self.eof && !self.shared.closed.load(Ordering::Acquire) {
            // Stop reading: hand back the credit for whatever is queued and drop it; later
            // bytes are credited on arrival.
            self.state.discard.store(true, Ordering::Release);
            let queued = {
                let mut q = self.state.incoming.lock();
                let mut bytes = 0u64;
                for item in q.items.drain(..) {
                    match item {
                        Incoming::Data(d) => bytes += d.len() as u64,
                        Incoming::Eof | Incoming::Reset => self.eof = true,
                    }
                }
                self.shared.queued_sub(std::mem::take(&mut q.unconsumed));
                bytes
            };
            let credit = u32::try_from(queued + u64::from(self.pending_credit)).unwrap_or(u32::MAX);
            if credit > 0 {
                let stream = self.state.id;
                if let Ok(f) = encode(&Frame::<()>::Credit {
                    stream,
                    bytes: credit,
                }) {
                    let _ = self.shared.writer.try_send(f);
                }
            }
        }
        self.shared.release(&self.state);
    }
}

/// Sending half of a stream. Dropping it without [`SendHalf::finish`] ends the stream (EOF).
pub struct SendHalf {
    state: Arc<StreamState>,
    shared: Arc<Shared>,
    eof_sent: bool,
}

impl SendHalf {
    pub fn id(&self) -> StreamId {
        self.state.id
    }

    /// Sends all of `data`, waiting for flow-control credit as needed.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), SessionError> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(MAX_DATA) as u32).await? as usize;
            let chunk = data.split_to(n);
            let f = encode(&Frame::<()>::Data {
                stream: self.state.id,
                data: chunk,
            })?;
            self.shared.send_raw(f).await?;
        }
        Ok(())
    }

    /// Waits until at least one byte of window is available and takes up to `want`.
    async fn reserve(&self, want: u32) -> Result<u32, SessionError> {
        loop {
            let notified = self.state.send_ready.notified();
            if self.state.reset.load(Ordering::Acquire) {
                return Err(SessionError::Reset(self.state.id));
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(self.shared.closed_error());
            }
            {
                let mut w = self.state.send_window.lock();
                if *w > 0 {
                    let n = want.min(*w);
                    *w -= n;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }

    /// Ends the stream: the peer reads EOF after the bytes already sent.
    pub async fn finish(&mut self) -> Result<(), SessionError> {
        if self.eof_sent {
            return Ok(());
        }
        self.eof_sent = true;
        let f = encode(&Frame::<()>::Eof {
            stream: self.state.id,
        })?;
        self.shared.send_raw(f).await
    }

    /// Aborts the stream in both directions.
    pub async fn reset(&mut self) {
        self.eof_sent = true;
        self.state.reset.store(true, Ordering::Release);
        if let Ok(f) = encode(&Frame::<()>::Reset {
            stream: self.state.id,
        }) {
            let _ = self.shared.send_raw(f).await;
        }
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if !self.eof_sent && !self.shared.closed.load(Ordering::Acquire) {
            if let Ok(f) = encode(&Frame::<()>::Eof {
                stream: self.state.id,
            }) {
                // Best effort: if the queue is full the peer learns of the end when the
                // session closes.
                let _ = self.shared.writer.try_send(f);
            }
        }
        self.shared.release(&self.state);
    }
}
