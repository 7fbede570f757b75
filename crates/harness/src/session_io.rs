//! The channel wrapper one session runs over.
//!
//! Two things the session itself does not offer:
//!
//! - **Cut-off.** A session's writer task may outlive the session (it idles until its queue
//!   ends) and a late frame from it (say, a credit from a stream half dropped after the
//!   disconnect) must never reach the channel once the next session runs on the same
//!   virtio-serial port: it would corrupt the new session's framing. [`IoControl::revoke`]
//!   drops the channel handle; later writes fail and reads see EOF.
//! - **Hand-over.** When a new host turns up on a live channel (a second host `Hello`: the
//!   guest never saw the old host leave), [`IoControl::take`] takes the channel back from the
//!   old session, wakes the old session's reader so it ends, and the agent starts a fresh
//!   session on the same channel.
//! - **Flush tracking.** Before powering off, the agent waits until `ShuttingDown` has been
//!   written out ([`IoControl::settled`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

pub(crate) trait Channel: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Channel for T {}

/// A channel of any type, as a session runs over it.
pub(crate) type BoxedChannel = Pin<Box<dyn Channel>>;

struct Shared {
    io: Mutex<Option<BoxedChannel>>,
    /// The waker of the session's last read, to end it when the channel is taken away.
    reader: Mutex<Option<Waker>>,
    flushes: AtomicU64,
    /// Bytes were handed to the channel since the last completed flush.
    dirty: AtomicBool,
    flushed: Notify,
}

/// The `AsyncRead + AsyncWrite` given to the session.
pub(crate) struct SessionIo {
    shared: Arc<Shared>,
}

/// The agent's handle on the channel of a running session.
pub(crate) struct IoControl {
    shared: Arc<Shared>,
}

#[cfg(test)]
pub(crate) fn wrap<T: AsyncRead + AsyncWrite + Send + 'static>(io: T) -> (SessionIo, IoControl) {
    wrap_boxed(Box::pin(io))
}

pub(crate) fn wrap_boxed(io: BoxedChannel) -> (SessionIo, IoControl) {
    let shared = Arc::new(Shared {
        io: Mutex::new(Some(io)),
        reader: Mutex::new(None),
        flushes: AtomicU64::new(0),
        dirty: AtomicBool::new(false),
        flushed: Notify::new(),
    });
    (
        SessionIo {
            shared: shared.clone(),
        },
        IoControl { shared },
    )
}

fn revoked() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the session has ended")
}

impl AsyncRead for SessionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut io = self.shared.io.lock();
        match io.as_mut() {
            Some(io) => {
                let r = io.as_mut().poll_read(cx, buf);
                if r.is_pending() {
                    *self.shared.reader.lock() = Some(cx.waker().clone());
                }
                r
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for SessionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut io = self.shared.io.lock();
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Err(revoked()));
        };
        self.shared.dirty.store(true, Ordering::Release);
        io.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.shared.io.lock();
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Err(revoked()));
        };
        let r = io.as_mut().poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            self.shared.dirty.store(false, Ordering::Release);
            self.shared.flushes.fetch_add(1, Ordering::AcqRel);
            self.shared.flushed.notify_waiters();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.io.lock().as_mut() {
            Some(io) => io.as_mut().poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl IoControl {
    /// Completed flushes so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Acquire)
    }

    /// Resolves once a flush has completed after `mark` (a value of [`IoControl::flushes`]
    /// taken before the last message was queued) and the writer then stayed idle for a few
    /// milliseconds: by then everything queued before has reached the channel.
    pub(crate) async fn settled(&self, mark: u64) {
        const QUIET: Duration = Duration::from_millis(5);
        loop {
            let notified = self.shared.flushed.notified();
            let now = self.flushes();
            if now > mark && !self.shared.dirty.load(Ordering::Acquire) {
                tokio::time::sleep(QUIET).await;
                if self.flushes() == now && !self.shared.dirty.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            notified.await;
        }
    }

    /// Cuts the session off the channel and drops the channel handle.
    pub(crate) fn revoke(&self) {
        drop(self.take());
    }

    /// Cuts the session off the channel and returns the channel: the session's reader sees
    /// EOF (bytes it had buffered are lost), its writer fails.
    pub(crate) fn take(&self) -> Option<BoxedChannel> {
        let io = self.shared.io.lock().take();
        if let Some(waker) = self.shared.reader.lock().take() {
            waker.wake();
        }
        io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn revoked_channel_refuses_writes_and_reads_eof() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut io, ctl) = wrap(a);
        io.write_all(b"x").await.unwrap();
        io.flush().await.unwrap();
        assert!(ctl.flushes() >= 1);
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();
        ctl.revoke();
        assert!(io.write_all(b"y").await.is_err());
        let mut buf = Vec::new();
        assert_eq!(io.read_to_end(&mut buf).await.unwrap(), 0);
        // The far end sees the channel closed.
        assert_eq!(b.read(&mut one).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn settled_waits_for_a_flush() {
        let (a, _b) = tokio::io::duplex(64);
        let (mut io, ctl) = wrap(a);
        let mark = ctl.flushes();
        let waiter = tokio::spawn(async move { ctl.settled(mark).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        io.write_all(b"z").await.unwrap();
        io.flush().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
