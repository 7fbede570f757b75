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
//!
//! The peer is not trusted (on the host it is code nobody reviewed). What a peer can make this
//! side hold is bounded:
//! - bytes queued on a stream never exceed its window: a data frame that would overrun it is
//!   dropped and the stream is reset;
//! - streams the peer created and the local side has not claimed are at most
//!   [`SessionConfig::max_peer_streams`];
//! - frames are checked against the limit of their kind before they are read (see
//!   [`crate::frame`]).
//!
//! So queued bytes stay below `(claimed streams + max_peer_streams) * INITIAL_WINDOW`. A peer
//! that goes on after a reset, exceeds the stream limit or sends an invalid frame ends the
//! session with a [`Violation`]: every later operation fails with
//! [`SessionError::Violation`] and [`Session::violation`] names it.

mod dispatch;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Notify};

use crate::frame::{Frame, StreamId};

pub use stream::{RecvHalf, SendHalf, Stream};

/// Bytes a sender may have in flight on one stream before it must wait for credit.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Default of [`SessionConfig::max_peer_streams`]. The guest opens no streams of its own and
/// the host's are claimed by the guest as soon as it reads the message naming them, so a
/// well-behaved peer stays far below this; at the limit the peer can make a session hold at
/// most `128 * INITIAL_WINDOW` = 32 MiB in streams nobody reads.
pub const DEFAULT_MAX_PEER_STREAMS: usize = 128;
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

/// Limits chosen by the session's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Streams the peer may have created (by sending a frame for a new id) that the local side
    /// has not claimed yet. One more is a [`Violation::TooManyStreams`].
    pub max_peer_streams: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_peer_streams: DEFAULT_MAX_PEER_STREAMS,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("the session with the guest is closed")]
    Closed,
    #[error("stream {0} was reset by the peer")]
    Reset(StreamId),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("the session was ended because the peer {0}")]
    Violation(Violation),
}

/// A protocol violation by the peer: the session ends and does not come back. On the host this
/// means the guest is hostile or broken; its VM should be killed with this as the reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Violation {
    #[error(
        "kept sending on stream {stream} after it was reset for overrunning its flow-control \
         window of {window} bytes ({excess} bytes beyond the window)"
    )]
    CreditOverrun {
        stream: StreamId,
        window: u32,
        excess: u64,
    },
    #[error(
        "opened more than {limit} streams that were never claimed (SessionConfig::max_peer_streams)"
    )]
    TooManyStreams { limit: usize },
    #[error("sent an invalid frame: {0}")]
    BadFrame(String),
}

/// Counters of one session, for tests, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Streams in the session's table (claimed or not).
    pub streams: usize,
    /// Streams the peer created that the local side has not claimed.
    pub peer_streams: usize,
    /// Bytes received and not yet read or dropped.
    pub queued_bytes: u64,
    /// The largest `queued_bytes` seen in this session.
    pub peak_queued_bytes: u64,
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
    /// The local side claimed the stream (changed only under the stream table's lock).
    claimed: AtomicBool,
    /// Halves still alive; the stream is retired when both are dropped.
    halves: AtomicU8,
}

#[derive(Default)]
struct IncomingQueue {
    items: VecDeque<Incoming>,
    /// Bytes queued but not yet consumed: never more than the window.
    unconsumed: u64,
    /// Set once the peer overran the window: bytes it sent on the stream since (all dropped).
    overrun: Option<u64>,
}

#[derive(Default)]
struct StreamTable {
    map: HashMap<StreamId, Arc<StreamState>>,
    /// Entries of `map` the peer created and the local side has not claimed.
    unclaimed: usize,
}

struct Shared {
    side: Side,
    config: SessionConfig,
    writer: mpsc::Sender<Bytes>,
    streams: Mutex<StreamTable>,
    next_stream: AtomicU32,
    /// Streams both of whose local halves are gone, kept until the peer's final frame
    /// (EOF or reset) arrives so late frames are not mistaken for a new stream.
    retired: Mutex<HashSet<StreamId>>,
    closed: AtomicBool,
    closed_notify: Notify,
    violation: Mutex<Option<Violation>>,
    /// Aborts the writer task: after a violation nothing more is owed to the peer, and a peer
    /// that stopped reading must not keep the connection open through a blocked write.
    abort_writer: Mutex<Option<tokio::task::AbortHandle>>,
    queued: AtomicU64,
    peak_queued: AtomicU64,
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
    /// Starts a session over `io` with the default [`SessionConfig`]. Control messages from
    /// the peer arrive on the returned receiver, which ends when the connection does. `In` is
    /// the peer's vocabulary.
    pub fn start<In, T>(io: T, side: Side) -> (Session, mpsc::Receiver<In>)
    where
        In: DeserializeOwned + Send + 'static,
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Session::start_with(io, side, SessionConfig::default())
    }

    /// [`Session::start`] with the owner's limits.
    pub fn start_with<In, T>(
        io: T,
        side: Side,
        config: SessionConfig,
    ) -> (Session, mpsc::Receiver<In>)
    where
        In: DeserializeOwned + Send + 'static,
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(256);
        let shared = Arc::new(Shared {
            side,
            config,
            writer: writer_tx,
            streams: Mutex::new(StreamTable::default()),
            retired: Mutex::new(HashSet::new()),
            next_stream: AtomicU32::new(match side {
                Side::Host => 1,
                Side::Guest => 2,
            }),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            violation: Mutex::new(None),
            abort_writer: Mutex::new(None),
            queued: AtomicU64::new(0),
            peak_queued: AtomicU64::new(0),
        });
        let writer = tokio::spawn(write_loop(write, writer_rx, shared.clone()));
        *shared.abort_writer.lock() = Some(writer.abort_handle());
        tokio::spawn(dispatch::read_loop::<In, _>(
            read,
            control_tx,
            shared.clone(),
        ));
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
        Stream::new(self.shared.claim(id), self.shared.clone())
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is gone. Then [`Session::violation`] says whether the
    /// peer caused it.
    pub async fn closed(&self) {
        wait_closed(&self.shared).await
    }

    /// The protocol violation that ended the session, if one did.
    pub fn violation(&self) -> Option<Violation> {
        self.shared.violation.lock().clone()
    }

    /// Tears the session down: every stream fails, the control receiver ends.
    pub fn close(&self) {
        self.shared.mark_closed();
    }

    pub fn side(&self) -> Side {
        self.shared.side
    }

    pub fn stats(&self) -> SessionStats {
        let (streams, peer_streams) = {
            let t = self.shared.streams.lock();
            (t.map.len(), t.unclaimed)
        };
        SessionStats {
            streams,
            peer_streams,
            queued_bytes: self.shared.queued.load(Ordering::Acquire),
            peak_queued_bytes: self.shared.peak_queued.load(Ordering::Acquire),
        }
    }
}

impl StreamState {
    fn new(id: StreamId, claimed: bool) -> Arc<StreamState> {
        Arc::new(StreamState {
            id,
            incoming: Mutex::new(IncomingQueue::default()),
            incoming_ready: Notify::new(),
            send_window: Mutex::new(INITIAL_WINDOW),
            send_ready: Notify::new(),
            reset: AtomicBool::new(false),
            discard: AtomicBool::new(false),
            peer_done: AtomicBool::new(false),
            claimed: AtomicBool::new(claimed),
            halves: AtomicU8::new(2),
        })
    }
}

impl Shared {
    /// The local side takes stream `id`, creating it or adopting the one the peer created.
    fn claim(&self, id: StreamId) -> Arc<StreamState> {
        let mut table = self.streams.lock();
        if let Some(state) = table.map.get(&id).cloned() {
            if !state.claimed.swap(true, Ordering::AcqRel) {
                table.unclaimed -= 1;
            }
            return state;
        }
        let state = StreamState::new(id, true);
        table.map.insert(id, state.clone());
        state
    }

    /// The stream a frame from the peer is for, created if new, within the peer's limit.
    fn peer_stream(&self, id: StreamId) -> Result<Arc<StreamState>, Violation> {
        let mut table = self.streams.lock();
        if let Some(state) = table.map.get(&id) {
            return Ok(state.clone());
        }
        if table.unclaimed >= self.config.max_peer_streams {
            return Err(Violation::TooManyStreams {
                limit: self.config.max_peer_streams,
            });
        }
        let state = StreamState::new(id, false);
        table.map.insert(id, state.clone());
        table.unclaimed += 1;
        Ok(state)
    }

    fn existing(&self, id: StreamId) -> Option<Arc<StreamState>> {
        self.streams.lock().map.get(&id).cloned()
    }

    /// The error every operation reports once the session is gone.
    fn closed_error(&self) -> SessionError {
        match self.violation.lock().clone() {
            Some(v) => SessionError::Violation(v),
            None => SessionError::Closed,
        }
    }

    async fn send_raw(&self, bytes: Bytes) -> Result<(), SessionError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.writer
            .send(bytes)
            .await
            .map_err(|_| self.closed_error())
    }

    fn queued_add(&self, n: u64) {
        let now = self.queued.fetch_add(n, Ordering::AcqRel) + n;
        self.peak_queued.fetch_max(now, Ordering::AcqRel);
    }

    fn queued_sub(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Ends the session because of the peer. The first violation is the one reported.
    fn violate(&self, v: Violation) {
        tracing::warn!(violation = %v, side = ?self.side, "ending the session: the peer violated the protocol");
        self.violation.lock().get_or_insert(v);
        self.mark_closed();
        if let Some(writer) = self.abort_writer.lock().take() {
            writer.abort();
        }
    }

    fn mark_closed(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let streams: Vec<_> = {
            let mut table = self.streams.lock();
            table.unclaimed = 0;
            table.map.drain().map(|(_, s)| s).collect()
        };
        for s in streams {
            // Nobody can claim an unclaimed stream any more: free what it holds now. Claimed
            // streams keep their bytes for their reader (output sent just before the end).
            if !s.claimed.load(Ordering::Acquire) {
                let mut q = s.incoming.lock();
                q.items.clear();
                self.queued_sub(std::mem::take(&mut q.unconsumed));
            }
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
        self.streams.lock().map.remove(&state.id);
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
