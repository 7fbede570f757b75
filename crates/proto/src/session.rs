//! The multiplexed session shared by host and guest.
//!
//! One task reads frames and dispatches them (control messages to the owner, data to streams);
//! one task writes frames. Every stream has credit-based flow control: a sender may have at
//! most [`INITIAL_WINDOW`] bytes in flight on a stream, and the receiver grants more as its
//! reader consumes them. A stream whose reader stalls therefore stalls only its own sender,
//! never the session (no head-of-line blocking between a task's stdout and stderr, or between
//! two proxied connections).
//!
//! Stream ids are allocated by the side that opens the stream: odd on the host, even on the
//! guest, so both may open streams without coordination. A stream is created on whichever
//! happens first: the local side claiming it or the first frame for it arriving.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, Notify};

use crate::frame::{Frame, FrameError, StreamId, MAX_DATA};

/// Bytes a sender may have in flight on one stream before it must wait for credit.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Consumed bytes are returned to the sender in batches of at least this size.
const CREDIT_BATCH: u32 = 64 * 1024;
/// Frames queued for the writer task.
const WRITE_QUEUE: usize = 64;

/// Which end of the session this is; decides stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Guest,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("the session with the guest is closed")]
    Closed,
    #[error("stream {0} was reset by the peer")]
    Reset(StreamId),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// What the reader task hands to a stream's receive half.
enum Incoming {
    Data(Bytes),
    Eof,
    Reset,
}

/// State of one stream shared between the dispatcher and the two halves.
struct StreamState {
    id: StreamId,
    incoming: Mutex<IncomingQueue>,
    incoming_ready: Notify,
    send_window: Mutex<u32>,
    send_ready: Notify,
    reset: AtomicBool,
    /// The local reader is gone: incoming bytes are dropped and credited at once, so the
    /// peer's sender never waits for a reader that will not come back.
    discard: AtomicBool,
    /// The peer's final frame (EOF or reset) for this stream has been received.
    peer_done: AtomicBool,
    /// Halves still alive; the stream is retired when both are dropped.
    halves: std::sync::atomic::AtomicU8,
}

#[derive(Default)]
struct IncomingQueue {
    items: VecDeque<Incoming>,
    /// Bytes queued but not yet consumed: a peer that exceeds its window is misbehaving.
    unconsumed: u64,
}

struct Shared {
    side: Side,
    writer: mpsc::Sender<Bytes>,
    streams: Mutex<HashMap<StreamId, Arc<StreamState>>>,
    next_stream: AtomicU32,
    /// Streams both of whose local halves are gone, kept until the peer's final frame
    /// (EOF or reset) arrives so late frames are not mistaken for a new stream.
    retired: Mutex<std::collections::HashSet<StreamId>>,
    closed: AtomicBool,
    closed_notify: Notify,
}

/// A running session. Cheap to clone; all clones drive the same connection.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

fn encode<C: Serialize>(frame: &Frame<C>) -> Result<Bytes, SessionError> {
    let mut buf = BytesMut::new();
    frame
        .encode(&mut buf)
        .map_err(|e| SessionError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

impl Session {
    /// Starts a session over `io`. Control messages from the peer arrive on the returned
    /// receiver, which ends when the connection does. `In` is the peer's vocabulary.
    pub fn start<In, T>(io: T, side: Side) -> (Session, mpsc::Receiver<In>)
    where
        In: DeserializeOwned + Send + 'static,
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(256);
        let shared = Arc::new(Shared {
            side,
            writer: writer_tx,
            streams: Mutex::new(HashMap::new()),
            retired: Mutex::new(Default::default()),
            next_stream: AtomicU32::new(match side {
                Side::Host => 1,
                Side::Guest => 2,
            }),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
        });
        tokio::spawn(write_loop(write, writer_rx, shared.clone()));
        tokio::spawn(read_loop::<In, _>(read, control_tx, shared.clone()));
        (Session { shared }, control_rx)
    }

    /// Sends one control message.
    pub async fn send<Out: Serialize>(&self, msg: Out) -> Result<(), SessionError> {
        let bytes = encode(&Frame::Control(msg))?;
        self.shared.send_raw(bytes).await
    }

    /// Opens a new stream with an id of this side's parity.
    pub fn open_stream(&self) -> Stream {
        let id = self.shared.next_stream.fetch_add(2, Ordering::Relaxed);
        self.stream(id)
    }

    /// Makes this side allocate stream ids from `first` on (keeping its parity). A host that
    /// reconnects to a guest restored from a memory snapshot uses this so its new streams
    /// never collide with streams the guest still knows from the session it was saved in.
    pub fn allocate_streams_from(&self, first: StreamId) {
        let parity = match self.shared.side {
            Side::Host => 1,
            Side::Guest => 0,
        };
        self.shared
            .next_stream
            .store((first & !1) | parity, Ordering::Relaxed);
    }

    /// Claims the stream `id`, typically one the peer named in a control message.
    pub fn stream(&self, id: StreamId) -> Stream {
        let state = self.shared.state(id);
        Stream {
            recv: RecvHalf {
                state: state.clone(),
                shared: self.shared.clone(),
                pending_credit: 0,
                eof: false,
            },
            send: SendHalf {
                state,
                shared: self.shared.clone(),
                eof_sent: false,
            },
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Tears the session down: every stream fails, the control receiver ends.
    pub fn close(&self) {
        self.shared.mark_closed();
    }

    pub fn side(&self) -> Side {
        self.shared.side
    }
}

impl Shared {
    fn state(&self, id: StreamId) -> Arc<StreamState> {
        self.streams
            .lock()
            .entry(id)
            .or_insert_with(|| {
                Arc::new(StreamState {
                    id,
                    incoming: Mutex::new(IncomingQueue::default()),
                    incoming_ready: Notify::new(),
                    send_window: Mutex::new(INITIAL_WINDOW),
                    send_ready: Notify::new(),
                    reset: AtomicBool::new(false),
                    discard: AtomicBool::new(false),
                    peer_done: AtomicBool::new(false),
                    halves: std::sync::atomic::AtomicU8::new(2),
                })
            })
            .clone()
    }

    fn existing(&self, id: StreamId) -> Option<Arc<StreamState>> {
        self.streams.lock().get(&id).cloned()
    }

    async fn send_raw(&self, bytes: Bytes) -> Result<(), SessionError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionError::Closed);
        }
        self.writer
            .send(bytes)
            .await
            .map_err(|_| SessionError::Closed)
    }

    fn mark_closed(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let streams: Vec<_> = self.streams.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.incoming_ready.notify_waiters();
            s.send_ready.notify_waiters();
        }
        self.closed_notify.notify_waiters();
    }

    /// Called when a local half is dropped; retires the stream once both are.
    fn release(&self, state: &StreamState) {
        if state.halves.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.streams.lock().remove(&state.id);
        if !state.peer_done.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire) {
            self.retired.lock().insert(state.id);
            // Tell the peer to stop sending into a stream nobody reads.
            if let Ok(f) = encode(&Frame::<()>::Reset { stream: state.id }) {
                let _ = self.writer.try_send(f);
            }
        }
    }

    /// Whether a frame for `id` belongs to a retired stream (and should be dropped).
    fn is_retired(&self, id: StreamId, terminal: bool) -> bool {
        let mut retired = self.retired.lock();
        if terminal {
            retired.remove(&id)
        } else {
            retired.contains(&id)
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    write: W,
    mut rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
) {
    let mut w = BufWriter::with_capacity(128 * 1024, write);
    loop {
        let first = tokio::select! {
            biased;
            f = rx.recv() => f,
            // A closed session ends the writer even though `Shared` holds a sender: the
            // connection is dropped (both halves), so the peer sees end of stream.
            _ = wait_closed(&shared) => None,
        };
        let Some(first) = first else { break };
        let mut batch = Some(first);
        // Coalesce whatever is queued into one flush.
        while let Some(bytes) = batch.take().or_else(|| rx.try_recv().ok()) {
            if let Err(e) = w.write_all(&bytes).await {
                tracing::debug!(error = %e, "session write failed");
                shared.mark_closed();
                return;
            }
        }
        if let Err(e) = w.flush().await {
            tracing::debug!(error = %e, "session flush failed");
            shared.mark_closed();
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn wait_closed(shared: &Shared) {
    loop {
        let notified = shared.closed_notify.notified();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

async fn read_loop<In, R>(read: R, control: mpsc::Sender<In>, shared: Arc<Shared>)
where
    In: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut r = BufReader::with_capacity(128 * 1024, read);
    let closed = async {
        loop {
            let notified = shared.closed_notify.notified();
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    };
    tokio::pin!(closed);
    loop {
        let frame = tokio::select! {
            f = Frame::<In>::read_from(&mut r) => f,
            _ = &mut closed => break,
        };
        match frame {
            Ok(Some(frame)) => {
                if !dispatch(frame, &control, &shared).await {
                    break;
                }
            }
            Ok(None) => break,
            Err(FrameError::Decode(e)) => {
                // A message this side does not understand: report and carry on, the framing
                // is intact so the session stays usable.
                tracing::warn!(error = %e, "ignoring undecodable control message");
            }
            Err(e) => {
                tracing::debug!(error = %e, "session read failed");
                break;
            }
        }
    }
    shared.mark_closed();
}

/// Returns false when the owner is gone and the session should end.
async fn dispatch<In>(frame: Frame<In>, control: &mpsc::Sender<In>, shared: &Arc<Shared>) -> bool {
    match frame {
        Frame::Control(msg) => return control.send(msg).await.is_ok(),
        Frame::Data { stream, data } => {
            if shared.is_retired(stream, false) {
                return true;
            }
            let state = shared.state(stream);
            if state.discard.load(Ordering::Acquire) {
                let credit = Frame::<()>::Credit {
                    stream,
                    bytes: data.len() as u32,
                };
                if let Ok(f) = encode(&credit) {
                    let _ = shared.send_raw(f).await;
                }
                return true;
            }
            let overrun = {
                let mut q = state.incoming.lock();
                q.unconsumed += data.len() as u64;
                q.items.push_back(Incoming::Data(data));
                q.unconsumed > u64::from(INITIAL_WINDOW)
            };
            if overrun {
                tracing::warn!(
                    stream,
                    "peer overran its flow-control window; resetting stream"
                );
                state.reset.store(true, Ordering::Release);
                let _ = shared
                    .send_raw(encode(&Frame::<()>::Reset { stream }).unwrap_or_default())
                    .await;
            }
            state.incoming_ready.notify_one();
        }
        Frame::Eof { stream } => {
            if shared.is_retired(stream, true) {
                return true;
            }
            let state = shared.state(stream);
            state.peer_done.store(true, Ordering::Release);
            state.incoming.lock().items.push_back(Incoming::Eof);
            state.incoming_ready.notify_one();
        }
        Frame::Reset { stream } => {
            if shared.is_retired(stream, true) {
                return true;
            }
            if let Some(state) = shared.existing(stream) {
                state.peer_done.store(true, Ordering::Release);
                state.reset.store(true, Ordering::Release);
                state.incoming.lock().items.push_back(Incoming::Reset);
                state.incoming_ready.notify_one();
                state.send_ready.notify_waiters();
            }
        }
        Frame::Credit { stream, bytes } => {
            if let Some(state) = shared.existing(stream) {
                let mut w = state.send_window.lock();
                *w = w.saturating_add(bytes);
                drop(w);
                state.send_ready.notify_waiters();
            }
        }
    }
    true
}

/// One bidirectional byte stream of a session.
pub struct Stream {
    pub recv: RecvHalf,
    pub send: SendHalf,
}

impl Stream {
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
    state: Arc<StreamState>,
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
                    return Err(SessionError::Closed)
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
                q.unconsumed = 0;
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
                return Err(SessionError::Closed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GuestMessage, HostMessage};

    fn pair() -> (
        (Session, mpsc::Receiver<GuestMessage>),
        (Session, mpsc::Receiver<HostMessage>),
    ) {
        let (a, b) = tokio::io::duplex(16 * 1024);
        (
            Session::start(a, Side::Host),
            Session::start(b, Side::Guest),
        )
    }

    #[tokio::test]
    async fn control_messages_flow_both_ways() {
        let ((host, mut host_rx), (guest, mut guest_rx)) = pair();
        host.send(HostMessage::Ping { nonce: 42 }).await.unwrap();
        assert_eq!(guest_rx.recv().await, Some(HostMessage::Ping { nonce: 42 }));
        guest.send(GuestMessage::Pong { nonce: 42 }).await.unwrap();
        assert_eq!(host_rx.recv().await, Some(GuestMessage::Pong { nonce: 42 }));
    }

    #[tokio::test]
    async fn close_ends_the_connection_for_the_peer() {
        let ((host, _h), (_guest, mut guest_rx)) = pair();
        host.close();
        // The guest sees the end of the connection rather than waiting forever.
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), guest_rx.recv()).await;
        assert_eq!(end.expect("peer must see the close"), None);
    }

    #[tokio::test]
    async fn stream_ids_have_side_parity() {
        let ((host, _h), (guest, _g)) = pair();
        assert_eq!(host.open_stream().id() % 2, 1);
        assert_eq!(guest.open_stream().id() % 2, 0);
    }

    #[tokio::test]
    async fn large_transfer_is_byte_exact_and_flow_controlled() {
        let ((host, _h), (guest, _g)) = pair();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut tx = guest.stream(11).send;
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            tx.send(Bytes::from(data)).await.unwrap();
            tx.finish().await.unwrap();
        });
        let mut rx = host.stream(11).recv;
        let got = rx.read_to_end().await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }

    #[tokio::test]
    async fn a_stalled_stream_does_not_block_another() {
        let ((host, _h), (guest, _g)) = pair();
        // Stream 1: the host never reads it; its sender must block after one window.
        let mut stalled = guest.stream(1).send;
        let blocked = tokio::spawn(async move {
            stalled
                .send(Bytes::from(vec![0u8; 4 * INITIAL_WINDOW as usize]))
                .await
        });
        let _stalled_rx = host.stream(1);
        // Stream 3 still flows.
        let mut tx = guest.stream(3).send;
        tx.send(Bytes::from_static(b"hello")).await.unwrap();
        tx.finish().await.unwrap();
        let got = host.stream(3).recv.read_to_end().await.unwrap();
        assert_eq!(got, b"hello");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "sender must wait for credit");
        blocked.abort();
    }

    #[tokio::test]
    async fn a_dropped_reader_never_blocks_the_sender() {
        let ((host, _h), (guest, _g)) = pair();
        let mut tx = guest.stream(5).send;
        let (rx, _keep_send_half) = host.stream(5).into_split();
        drop(rx);
        tx.send(Bytes::from(vec![1u8; 4 * INITIAL_WINDOW as usize]))
            .await
            .unwrap();
        tx.finish().await.unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_stream_resets_the_sender() {
        let ((host, _h), (guest, _g)) = pair();
        let mut tx = guest.stream(7).send;
        drop(host.stream(7));
        let r = tx
            .send(Bytes::from(vec![1u8; 4 * INITIAL_WINDOW as usize]))
            .await;
        assert_eq!(r, Err(SessionError::Reset(7)));
    }

    #[tokio::test]
    async fn connection_loss_fails_streams_and_ends_control() {
        let (a, b) = tokio::io::duplex(1024);
        let (host, mut host_rx) = Session::start::<GuestMessage, _>(a, Side::Host);
        let mut rx = host.stream(2).recv;
        drop(b);
        assert_eq!(host_rx.recv().await, None);
        assert_eq!(rx.recv().await, Err(SessionError::Closed));
        host.closed().await;
        assert!(host.send(HostMessage::Shutdown).await.is_err());
    }
}
