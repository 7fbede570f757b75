//! Errors, classified the way pingora does: which side failed (the client, the app, or the
//! wake) and whether a retry is safe (nothing reached the app, so repeating the request cannot
//! repeat its effects).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why an upstream could not be made ready. `Clone` so that the result of one wake can be
/// handed to every caller waiting on it (see [`crate::WakeGate`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WakeError {
    /// The instance no longer exists (deleted, or its ServeTarget removed).
    #[error("the instance is gone")]
    Gone,
    /// Resume, restore or boot failed, or the app never started listening.
    #[error("waking the instance failed")]
    Failed(#[source] Arc<dyn StdError + Send + Sync>),
}

impl WakeError {
    pub fn failed(e: impl Into<BoxError>) -> Self {
        WakeError::Failed(Arc::from(e.into()))
    }
}

/// Why [`crate::Upstream::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The instance is not running (paused, terminated, or waking).
    #[error("the instance is not running")]
    NotRunning,
    /// The instance runs but nothing accepts connections on the guest port.
    #[error("nothing accepts connections on guest port {port}")]
    Refused { port: u16 },
    #[error("connecting to guest port {port} failed")]
    Failed {
        port: u16,
        #[source]
        source: BoxError,
    },
}

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The client: it went away, or sent something unusable.
    Downstream,
    /// The app or the path to it: connect, handshake, or the exchange itself failed.
    Upstream,
    /// The instance could not be woken in time or at all.
    Wake,
}

/// A failure to proxy one connection or request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the app did not become ready within {0:?}")]
    WakeTimeout(Duration),
    #[error("the app could not be woken")]
    Wake(#[source] WakeError),
    #[error("cannot connect to the app")]
    Connect(#[source] ConnectError),
    #[error("the HTTP handshake with the app failed")]
    Handshake(#[source] hyper::Error),
    #[error("the connection to the app failed before the request was sent")]
    NotSent(#[source] hyper::Error),
    #[error("the app failed to answer the request")]
    Upstream(#[source] hyper::Error),
    #[error("the connection to the app failed")]
    UpstreamIo(#[source] io::Error),
    #[error("the client connection failed")]
    Downstream(#[source] BoxError),
}

impl ProxyError {
    pub fn side(&self) -> ErrorSide {
        match self {
            ProxyError::WakeTimeout(_) | ProxyError::Wake(_) => ErrorSide::Wake,
            ProxyError::Connect(_)
            | ProxyError::Handshake(_)
            | ProxyError::NotSent(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamIo(_) => ErrorSide::Upstream,
            ProxyError::Downstream(_) => ErrorSide::Downstream,
        }
    }

    /// Whether nothing of the request reached the app, so retrying it is safe whatever its
    /// method.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::WakeTimeout(_)
                | ProxyError::Wake(_)
                | ProxyError::Connect(_)
                | ProxyError::Handshake(_)
                | ProxyError::NotSent(_)
        )
    }
}

/// Displays an error with its whole source chain: `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_retry_safety() {
        let wake = ProxyError::Wake(WakeError::failed("qemu exited"));
        assert_eq!(wake.side(), ErrorSide::Wake);
        assert!(wake.retry_safe());
        let timeout = ProxyError::WakeTimeout(Duration::from_secs(1));
        assert!(timeout.retry_safe());
        let connect = ProxyError::Connect(ConnectError::Refused { port: 80 });
        assert_eq!(connect.side(), ErrorSide::Upstream);
        assert!(connect.retry_safe());
        let io = ProxyError::UpstreamIo(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(io.side(), ErrorSide::Upstream);
        assert!(!io.retry_safe());
        let down = ProxyError::Downstream("gone".into());
        assert_eq!(down.side(), ErrorSide::Downstream);
        assert!(!down.retry_safe());
    }

    #[test]
    fn chain_shows_every_cause() {
        let e = ProxyError::Wake(WakeError::failed("qemu exited with status 1"));
        assert_eq!(
            Chain(&e).to_string(),
            "the app could not be woken: waking the instance failed: qemu exited with status 1"
        );
    }
}
