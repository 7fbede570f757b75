//! What can go wrong in an instance's lifecycle, and the one place these become API errors.

use aegis_api::{error_chain, ApiError, ErrorCode};
use aegis_router::WakeError;

use crate::vm::LaunchError;

/// Why a wake did not make the instance ready. The message says which step failed; the
/// source (shown by [`error_chain`]) says why.
#[derive(Debug, thiserror::Error)]
pub enum WakeFailure {
    #[error("cannot prepare the disks of {what}")]
    Root {
        what: String,
        #[source]
        source: ApiError,
    },
    #[error("cannot share the workspace")]
    Workspace(#[source] ApiError),
    #[error("cannot boot the microVM")]
    Boot(#[source] LaunchError),
    #[error("cannot restore the memory snapshot")]
    Restore(#[source] LaunchError),
    #[error("cannot run '{command}' in image '{image}': {reason}")]
    SpawnFailed {
        command: String,
        image: String,
        reason: String,
    },
    #[error("the restored app is not running: {0}")]
    AttachFailed(String),
    #[error("the restored guest did not answer Attach within {secs} s")]
    AttachTimeout { secs: u64 },
    #[error("the guest channel closed while {doing}")]
    ChannelClosed { doing: &'static str },
    #[error("cannot reach the guest while {doing}")]
    Send {
        doing: &'static str,
        #[source]
        source: aegis_proto::SessionError,
    },
    #[error("the app did not listen on guest port {port} within {secs} s")]
    PortWait { port: u16, secs: u64 },
    #[error("the microVM stopped before the app was ready ({exit})")]
    ServerExited { exit: String },
    /// Stop, pause or delete came first; the wake's VM was killed and removed.
    #[error("the wake was cancelled (the instance was stopped, paused or removed)")]
    Cancelled,
    #[error("{0}")]
    Unservable(String),
    /// A limit of the daemon's configuration refused the new VM (docs/CONFIG.md).
    #[error("{0}")]
    Refused(ApiError),
    /// The guest broke the protocol during the wake; its VM was killed.
    #[error("{0}")]
    ProtocolBreach(String),
}

impl WakeFailure {
    /// A launch error of a boot (`restoring` false) or restore, unless it was a cancellation.
    pub fn launch(e: LaunchError, restoring: bool) -> Self {
        match e {
            LaunchError::Cancelled => WakeFailure::Cancelled,
            e if restoring => WakeFailure::Restore(e),
            e => WakeFailure::Boot(e),
        }
    }
}

/// Why an instance cannot be served after a daemon restart. The whole story is in the
/// message: it becomes the instance's `last_error`.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for guest port {guest_port} after aegisd restarted ({cause}); \
     free the port and restart aegisd, or remove the instance with `aegis instance rm {name}` \
     and create it again"
)]
pub struct PortLost {
    pub addr: std::net::SocketAddr,
    pub guest_port: u16,
    pub name: String,
    pub cause: std::io::Error,
}

/// Why a pause was refused.
#[derive(Debug, thiserror::Error)]
pub enum PauseRefused {
    #[error("instance {id} has no running VM to pause")]
    NoVm { id: String },
    #[error("instance {id} is opening a connection; not pausing now")]
    Connecting { id: String },
    #[error("cannot pause instance {id}")]
    Vmm {
        id: String,
        #[source]
        source: aegis_vmm::VmmError,
    },
}

/// A lifecycle failure seen by the API.
pub enum LifecycleError<'a> {
    Wake { key: &'a str, error: WakeError },
    Pause(PauseRefused),
}

impl From<LifecycleError<'_>> for ApiError {
    fn from(e: LifecycleError<'_>) -> ApiError {
        match e {
            LifecycleError::Wake { key, error } => ApiError::new(
                refusal_code(&error).unwrap_or(ErrorCode::Unavailable),
                format!("cannot wake instance {key}: {}", error_chain(&error)),
            ),
            LifecycleError::Pause(e) => ApiError::new(ErrorCode::Conflict, error_chain(&e)),
        }
    }
}

/// The code of a limit that refused the wake (429, 507), kept so the client sees it.
fn refusal_code(error: &WakeError) -> Option<ErrorCode> {
    match error {
        WakeError::Failed(e) => match e.downcast_ref::<WakeFailure>()? {
            WakeFailure::Refused(api) => Some(api.error.code),
            _ => None,
        },
        WakeError::Gone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_message_names_the_step_and_its_cause() {
        let e = WakeError::failed(WakeFailure::Boot(LaunchError::Handshake {
            reason: "no answer".into(),
            console: "(none)".into(),
        }));
        let api = ApiError::from(LifecycleError::Wake {
            key: "web",
            error: e,
        });
        assert_eq!(api.error.code, ErrorCode::Unavailable);
        assert!(
            api.error.message.contains("cannot wake instance web")
                && api
                    .error
                    .message
                    .contains("cannot boot the microVM: the guest did not come up: no answer"),
            "{}",
            api.error.message
        );
        let api = ApiError::from(LifecycleError::Pause(PauseRefused::NoVm { id: "i".into() }));
        assert_eq!(api.error.code, ErrorCode::Conflict);
    }

    #[test]
    fn a_cancelled_launch_is_a_cancelled_wake() {
        assert!(matches!(
            WakeFailure::launch(LaunchError::Cancelled, true),
            WakeFailure::Cancelled
        ));
    }
}
