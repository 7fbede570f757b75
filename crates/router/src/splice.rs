//! Splicing a client with the app, both ways, half-close aware: TCP connections and upgraded
//! WebSockets. Traffic is reported as activity; a write toward an upstream that went to sleep
//! (the `idle` policy pauses instances with open but quiet connections) wakes it first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::Throttle;
use crate::error::ProxyError;
use crate::hold;
use crate::upstream::Upstream;

/// Copy buffer per direction.
const BUF: usize = 64 * 1024;

type Wake = Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send>>;

/// The upstream side of a splice, instrumented.
struct Metered<T> {
    inner: T,
    upstream: Arc<dyn Upstream>,
    deadline: Duration,
    throttle: Throttle,
    waking: Option<Wake>,
    /// Set when the failure came from this side, so the error is attributed correctly.
    failure: Option<ProxyError>,
    io_failed: bool,
}

impl<T> Metered<T> {
    fn activity(&self) {
        if self.throttle.fire() {
            self.upstream.touch();
        }
    }

    fn note<R>(&mut self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &r {
            self.io_failed = true;
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity();
        }
        this.note(r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.waking.is_none() && !this.upstream.is_ready() {
            let upstream = this.upstream.clone();
            let deadline = this.deadline;
            this.waking = Some(Box::pin(async move {
                hold::until_ready(&*upstream, deadline).await
            }));
        }
        if let Some(wake) = &mut this.waking {
            let r = ready!(wake.as_mut().poll(cx));
            this.waking = None;
            if let Err(e) = r {
                this.failure = Some(e);
                return Poll::Ready(Err(io::Error::other("the app could not be woken")));
            }
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.activity();
            }
        }
        this.note(r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(r)
    }
}

/// Bytes moved by a finished splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spliced {
    pub to_upstream: u64,
    pub to_client: u64,
}

/// Copies both ways until both sides have ended. When one side ends its writes, the other
/// side's write half is shut down and the opposite direction carries on.
pub(crate) async fn splice<C, U>(
    mut client: C,
    upstream_io: U,
    upstream: Arc<dyn Upstream>,
    deadline: Duration,
) -> Result<Spliced, ProxyError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Metered {
        inner: upstream_io,
        upstream,
        deadline,
        throttle: Throttle::new(),
        waking: None,
        failure: None,
        io_failed: false,
    };
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUF, BUF).await {
        Ok((to_upstream, to_client)) => Ok(Spliced {
            to_upstream,
            to_client,
        }),
        Err(e) => Err(match up.failure.take() {
            Some(wake) => wake,
            None if up.io_failed => ProxyError::UpstreamIo(e),
            None => ProxyError::Downstream(e.into()),
        }),
    }
}
