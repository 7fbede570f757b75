//! The reader task: decodes the peer's frames and hands them to the owner and the streams,
//! enforcing the limits the peer must respect.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::{encode, wait_closed, Incoming, Shared, Violation, INITIAL_WINDOW};
use crate::frame::{Frame, FrameError, StreamId};

pub(super) async fn read_loop<In, R>(read: R, control: mpsc::Sender<In>, shared: Arc<Shared>)
where
    In: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut r = BufReader::with_capacity(128 * 1024, read);
    let closed = wait_closed(&shared);
    tokio::pin!(closed);
    loop {
        let frame = tokio::select! {
            f = Frame::<In>::read_from(&mut r) => f,
            _ = &mut closed => break,
        };
        match frame {
            Ok(Some(frame)) => match dispatch(frame, &control, &shared).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(v) => {
                    shared.violate(v);
                    return;
                }
            },
            Ok(None) => break,
            Err(FrameError::Decode(e)) => {
                // A message this side does not understand: report and carry on, the framing
                // is intact so the session stays usable.
                tracing::warn!(error = %e, "ignoring undecodable control message");
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(error = %e, "session read failed");
                break;
            }
            Err(e) => {
                // The framing itself is broken (oversize, unknown kind, malformed): nothing
                // after this point can be trusted to start at a frame boundary.
                shared.violate(Violation::BadFrame(e.to_string()));
                return;
            }
        }
    }
    shared.mark_closed();
}

/// What became of a data frame.
enum Verdict {
    Queued,
    /// The frame overran the window: dropped, and the stream is to be reset.
    Overrun,
    /// Dropped: the stream was already reset for an overrun, or the peer had ended it.
    Dropped,
}

/// `Ok(false)` when the owner is gone and the session should end; `Err` when the peer broke
/// a rule that ends the session.
async fn dispatch<In>(
    frame: Frame<In>,
    control: &mpsc::Sender<In>,
    shared: &Arc<Shared>,
) -> Result<bool, Violation> {
    match frame {
        Frame::Control(msg) => return Ok(control.send(msg).await.is_ok()),
        Frame::Data { stream, data } => {
            if shared.is_retired(stream, false) {
                return Ok(true);
            }
            let state = shared.peer_stream(stream)?;
            if state.discard.load(Ordering::Acquire) {
                credit(shared, stream, data.len() as u32).await;
                return Ok(true);
            }
            match accept(shared, &state, stream, data)? {
                Verdict::Queued => state.incoming_ready.notify_one(),
                Verdict::Dropped => {}
                Verdict::Overrun => {
                    tracing::warn!(
                        stream,
                        "peer overran its flow-control window; dropping its data and resetting \
                         the stream"
                    );
                    state.reset.store(true, Ordering::Release);
                    // The local reader gets the bytes sent within the window, then the reset.
                    state.incoming.lock().items.push_back(Incoming::Reset);
                    state.incoming_ready.notify_one();
                    state.send_ready.notify_waiters();
                    if let Ok(f) = encode(&Frame::<()>::Reset { stream }) {
                        let _ = shared.send_raw(f).await;
                    }
                }
            }
        }
        Frame::Eof { stream } => {
            if shared.is_retired(stream, true) {
                return Ok(true);
            }
            let state = shared.peer_stream(stream)?;
            // Only the first final frame counts: repeats would grow the queue without bound.
            if !state.peer_done.swap(true, Ordering::AcqRel) {
                state.incoming.lock().items.push_back(Incoming::Eof);
                state.incoming_ready.notify_one();
            }
        }
        Frame::Reset { stream } => {
            if shared.is_retired(stream, true) {
                return Ok(true);
            }
            if let Some(state) = shared.existing(stream) {
                state.reset.store(true, Ordering::Release);
                if !state.peer_done.swap(true, Ordering::AcqRel) {
                    state.incoming.lock().items.push_back(Incoming::Reset);
                }
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
    Ok(true)
}

/// Queues `data` on the stream if it fits in the window the peer was granted; never queues
/// a byte beyond it.
fn accept(
    shared: &Shared,
    state: &super::StreamState,
    stream: StreamId,
    data: Bytes,
) -> Result<Verdict, Violation> {
    let len = data.len() as u64;
    let window = u64::from(INITIAL_WINDOW);
    let mut q = state.incoming.lock();
    if let Some(excess) = q.overrun.as_mut() {
        // A peer that overran may have had more frames in flight before it saw the reset:
        // allow one more window of them, then take it for what it is.
        *excess += len;
        if *excess > window {
            return Err(Violation::CreditOverrun {
                stream,
                window: INITIAL_WINDOW,
                excess: *excess,
            });
        }
        return Ok(Verdict::Dropped);
    }
    if state.peer_done.load(Ordering::Acquire) {
        // Data after the peer's own EOF or reset (a send racing its reset): nobody reads it.
        return Ok(Verdict::Dropped);
    }
    if q.unconsumed + len > window {
        q.overrun = Some(q.unconsumed + len - window);
        return Ok(Verdict::Overrun);
    }
    q.unconsumed += len;
    q.items.push_back(Incoming::Data(data));
    shared.queued_add(len);
    Ok(Verdict::Queued)
}

async fn credit(shared: &Shared, stream: StreamId, bytes: u32) {
    if let Ok(f) = encode(&Frame::<()>::Credit { stream, bytes }) {
        let _ = shared.send_raw(f).await;
    }
}
