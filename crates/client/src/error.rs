//! The one error type of the client.
//!
//! Messages say what happened and to what; the underlying cause stays in `source` (not
//! repeated in the message) so a binary prints the whole chain (`{:#}` with anyhow).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use aegis_api::{ApiError, ErrorCode};

/// Result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to `aegisd`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing listens on the socket: it does not exist, or it is a stale file left by a
    /// daemon that died.
    #[error("aegisd is not running (no socket at {}); start it with `aegis up`", socket.display())]
    DaemonNotRunning {
        /// The socket that was tried.
        socket: PathBuf,
    },

    /// The daemon answered with an error (4xx/5xx and an [`ApiError`] body). The message is
    /// the daemon's own, which already says what to do.
    #[error("{error}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The error body.
        error: ApiError,
    },

    /// The socket exists but could not be used (permissions, I/O failure).
    #[error("cannot {action} aegisd socket {}", socket.display())]
    Io {
        /// What we were doing ("connect to").
        action: &'static str,
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The HTTP exchange broke off (the daemon closed the connection, or it died while
    /// answering). A follower of the output feed resumes after this.
    #[error("connection to aegisd at {} was lost", socket.display())]
    Http {
        /// The socket.
        socket: PathBuf,
        /// What hyper saw.
        #[source]
        source: hyper::Error,
    },

    /// The daemon did not answer in time.
    #[error("aegisd did not answer {what} within {}s; see <home>/aegisd.log", after.as_secs())]
    Timeout {
        /// The request, e.g. "GET /v1/status".
        what: String,
        /// How long we waited.
        after: Duration,
    },

    /// The daemon answered something this client does not understand (a version mismatch
    /// or a bug).
    #[error("unexpected answer from aegisd: {0}")]
    Protocol(String),
}

impl Error {
    /// The API error code, when the daemon answered with one.
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { error, .. } => Some(error.error.code),
            _ => None,
        }
    }

    /// Whether the daemon answered 404 (the task, instance or route does not exist).
    pub fn is_not_found(&self) -> bool {
        self.api_code() == Some(ErrorCode::NotFound)
    }

    /// Whether retrying the same request later may succeed: the connection was lost or the
    /// daemon is (for now) not reachable. API errors and protocol errors are final.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::DaemonNotRunning { .. }
                | Error::Io { .. }
                | Error::Http { .. }
                | Error::Timeout { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_not_running_says_what_to_do() {
        let e = Error::DaemonNotRunning {
            socket: PathBuf::from("/h/aegisd.sock"),
        };
        assert_eq!(
            e.to_string(),
            "aegisd is not running (no socket at /h/aegisd.sock); start it with `aegis up`"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn api_error_shows_the_daemon_message() {
        let e = Error::Api {
            status: 404,
            error: ApiError::new(ErrorCode::NotFound, "task 'x' does not exist"),
        };
        assert_eq!(e.to_string(), "task 'x' does not exist");
        assert!(e.is_not_found());
        assert!(!e.is_transient());
    }
}
