//! The narrow interface every VMM backend implements.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::capabilities::{BackendKind, Capabilities};
use crate::spec::{SnapshotRef, VmSpec};

/// The host end of the host<->guest byte stream (virtio-serial socket, vsock, or in-memory).
pub trait ChannelIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ChannelIo for T {}
pub type Channel = Box<dyn ChannelIo>;

/// How the VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off (or the VMM exited with status 0).
    PoweredOff,
    /// The VMM exited with a failure status.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Aegis killed it.
    Killed,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{what} is not available on this host: {why}")]
    Unavailable { what: String, why: String },
    /// A backend this binary was built without (the fake backend outside test builds).
    #[error("the {backend} backend is not in this build: {why}")]
    NotInBuild { backend: BackendKind, why: String },
    #[error("the {backend} backend cannot {operation}")]
    Unsupported {
        backend: BackendKind,
        operation: &'static str,
    },
    #[error("failed to start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("VM {id} did not {what} within {secs} s")]
    Timeout {
        id: String,
        what: &'static str,
        secs: u64,
    },
    #[error("VM {id} exited early ({exit:?}); console tail:\n{console_tail}")]
    Exited {
        id: String,
        exit: VmExit,
        console_tail: String,
    },
    #[error("{backend} control request '{request}' failed: {detail}")]
    Control {
        backend: BackendKind,
        request: String,
        detail: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// A memory snapshot cannot be used (missing, incomplete, or taken with another machine
    /// shape or VMM version). Snapshots are a cache: delete it and boot from disk layers.
    #[error("snapshot {dir} is unusable: {reason}")]
    Snapshot { dir: PathBuf, reason: String },
}

/// A VMM backend: boots VMs. One instance per daemon; cheap to share.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn capabilities(&self) -> Capabilities;
    /// Boots a VM from disk layers. Returns once the VMM process runs; the guest announces
    /// itself later on the channel ([`Vm::connect`]).
    async fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmmError>;
    /// Restores a VM from a memory snapshot taken by [`Vm::snapshot`]. Only if
    /// `capabilities().memory_snapshot`. The VM starts running.
    async fn restore(&self, spec: &VmSpec, snapshot: &SnapshotRef)
        -> Result<Box<dyn Vm>, VmmError>;
}

/// One running microVM.
#[async_trait]
pub trait Vm: Send + Sync {
    fn id(&self) -> &str;
    /// PID of the VMM process, if there is one (not for the fake backend).
    fn pid(&self) -> Option<u32>;
    fn run_dir(&self) -> &Path;
    /// Connects the host end of the guest channel. Called once per guest session: after a
    /// restore the old connection is dead and a new one is needed.
    async fn connect(&self) -> Result<Channel, VmmError>;
    /// Stops the vCPUs, keeping RAM. Bytes written to the channel are held, not lost.
    async fn pause(&self) -> Result<(), VmmError>;
    async fn resume(&self) -> Result<(), VmmError>;
    /// Saves RAM + device state into `dir` (the VM must be paused; it stays paused).
    async fn snapshot(&self, dir: &Path) -> Result<SnapshotRef, VmmError>;
    /// Resolves when the VMM process has exited.
    async fn wait(&self) -> VmExit;
    /// Kills the VMM now and removes its sockets. Idempotent.
    async fn kill(&self) -> Result<(), VmmError>;
    /// Last bytes of the guest console, for error reports.
    fn console_tail(&self) -> String;
}
