//! A booted microVM with its guest session: boot or restore, handshake with the harness,
//! shut down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aegis_proto::{GuestMessage, HostMessage, Session, Side, PROTOCOL_VERSION};
use aegis_vmm::{Backend, Disk, Share, SnapshotRef, Vm, VmExit, VmSpec, VmmError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::guest::BootAssets;

/// Scratch disk size (sparse: only what the guest writes uses host disk).
pub const SCRATCH_BYTES: u64 = 4 << 30;
/// The scratch disk's file name, in a VM's run directory and in a memory snapshot.
pub const SCRATCH_FILE: &str = "scratch.ext4";
/// How long a guest may take from VMM start to the harness's Hello. Generous: under TCG on a
/// loaded two-core host a boot can take several seconds.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot prepare the VM directory {dir}: {source}")]
    Prepare {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the scratch disk: {0}")]
    Scratch(String),
    #[error("cannot copy the snapshot's scratch disk")]
    ScratchCopy(#[source] crate::sparse_copy::SparseCopyError),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error("the guest did not come up: {reason}; last console lines: {console}")]
    Handshake { reason: String, console: String },
    /// The caller gave up (stop, delete); the VM was killed.
    #[error("cancelled before the guest came up")]
    Cancelled,
}

/// A running VM whose harness has said Hello.
pub struct GuestVm {
    /// Shared so that a watcher can wait for the VMM's exit while the VM is in use.
    pub vm: Arc<dyn Vm>,
    pub session: Session,
    pub events: mpsc::Receiver<GuestMessage>,
    pub kernel_release: String,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub vm_id: String,
    pub run_dir: PathBuf,
    pub assets: BootAssets,
    /// Host directories for the guest (workspace volumes).
    pub shares: Vec<Share>,
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// Serial of disk layer `i` (bottom first). The bottom layer keeps the historical
/// `aegis-root`, so a one-layer VM looks exactly like before layers existed.
pub fn layer_serial(i: usize) -> String {
    if i == 0 {
        "aegis-root".into()
    } else {
        format!("aegis-l{i}")
    }
}

/// The backend spec of an Aegis VM: the disk layers read-only, the scratch disk writable.
/// Disks are found by serial in the guest, never by order.
pub fn vm_spec(spec: &LaunchSpec, scratch: &Path) -> VmSpec {
    let layers = &spec.assets.layers;
    let mut disks: Vec<Disk> = layers
        .iter()
        .enumerate()
        .map(|(i, path)| Disk {
            path: path.clone(),
            read_only: true,
            serial: layer_serial(i),
        })
        .collect();
    disks.push(Disk {
        path: scratch.to_path_buf(),
        read_only: false,
        serial: "aegis-scratch".into(),
    });
    let mut kernel_args = vec![];
    if layers.len() > 1 {
        kernel_args.push(format!("aegis.layers={}", layers.len()));
    }
    if let Some(ws) = spec
        .shares
        .iter()
        .find(|s| s.tag == crate::workspaces::WORKSPACE_TAG)
    {
        // The harness mounts this share at /workspace.
        kernel_args.push(format!("aegis.workspace={}", ws.tag));
        if ws.read_only {
            // Only so that the guest sees EROFS from its own mount; the host enforces it.
            kernel_args.push("aegis.workspace_ro".into());
        }
    }
    VmSpec {
        id: spec.vm_id.clone(),
        kernel: spec.assets.kernel.clone(),
        initramfs: spec.assets.initramfs.clone(),
        kernel_args,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        disks,
        shares: spec.shares.clone(),
        run_dir: spec.run_dir.clone(),
    }
}

/// Prepares the run directory and scratch disk, boots, and waits for the harness. On any
/// failure the VM is killed; the caller removes `run_dir`.
pub async fn launch(backend: &dyn Backend, spec: LaunchSpec) -> Result<GuestVm, LaunchError> {
    launch_cancellable(backend, spec, &CancellationToken::new()).await
}

/// [`launch`] that gives up (killing the VM) as soon as `cancel` fires.
pub async fn launch_cancellable(
    backend: &dyn Backend,
    spec: LaunchSpec,
    cancel: &CancellationToken,
) -> Result<GuestVm, LaunchError> {
    let scratch = prepare_run_dir(&spec)?;
    tokio::task::spawn_blocking({
        let scratch = scratch.clone();
        move || aegis_image::create_scratch_disk(&scratch, SCRATCH_BYTES)
    })
    .await
    .map_err(|e| LaunchError::Scratch(e.to_string()))?
    .map_err(|e| LaunchError::Scratch(e.to_string()))?;
    let spec = vm_spec(&spec, &scratch);
    let vm = backend.boot(&spec).await?;
    attach(Arc::from(vm), None, cancel).await
}

/// Restores a VM from a memory snapshot: the run directory gets a copy of the snapshot's
/// scratch disk (the saved RAM expects exactly those blocks), the backend restores, and the
/// session is opened with stream ids from `first_stream`. On any failure
/// the VM is killed; the caller removes `run_dir`.
pub async fn restore(
    backend: &dyn Backend,
    spec: LaunchSpec,
    snapshot: &SnapshotRef,
    first_stream: u32,
    cancel: &CancellationToken,
) -> Result<GuestVm, LaunchError> {
    let scratch = prepare_run_dir(&spec)?;
    tokio::task::spawn_blocking({
        let from = snapshot.dir.join(SCRATCH_FILE);
        let to = scratch.clone();
        move || crate::sparse_copy::sparse_copy(&from, &to)
    })
    .await
    .map_err(|e| LaunchError::Scratch(e.to_string()))?
    .map_err(LaunchError::ScratchCopy)?;
    let spec = vm_spec(&spec, &scratch);
    let vm = backend.restore(&spec, snapshot).await?;
    attach(Arc::from(vm), Some(first_stream), cancel).await
}

/// Creates the VM's private run directory; returns where its scratch disk goes.
fn prepare_run_dir(spec: &LaunchSpec) -> Result<PathBuf, LaunchError> {
    crate::daemon::create_private_dir(&spec.run_dir).map_err(|e| LaunchError::Prepare {
        dir: spec.run_dir.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok(spec.run_dir.join(SCRATCH_FILE))
}

/// Connects to a booted or restored VM's harness and completes the handshake. `first_stream`
/// sets where this session's stream ids start (see `Session::allocate_streams_from`). On
/// failure or cancellation the VM is killed.
async fn attach(
    vm: Arc<dyn Vm>,
    first_stream: Option<u32>,
    cancel: &CancellationToken,
) -> Result<GuestVm, LaunchError> {
    let outcome = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(None),
        r = handshake(vm.as_ref(), first_stream) => r.map_err(Some),
    };
    match outcome {
        Ok((session, events, kernel_release)) => {
            cut_off_on_violation(&vm, &session);
            Ok(GuestVm {
                vm,
                session,
                events,
                kernel_release,
            })
        }
        Err(reason) => {
            let console = last_lines(&vm.console_tail(), 5);
            let _ = vm.kill().await;
            Err(match reason {
                Some(reason) => LaunchError::Handshake { reason, console },
                None => LaunchError::Cancelled,
            })
        }
    }
}

/// Kills the VM as soon as its guest breaks the protocol (ignores credit, floods streams,
/// sends a bad frame): such a guest is hostile, and whatever waits on the VM sees it exit and
/// asks [`protocol_breach`] why. Armed only after the guest's Hello: before it, bytes of an
/// old connection (after a restore) can end a session without any hostility.
fn cut_off_on_violation(vm: &Arc<dyn Vm>, session: &Session) {
    // Weak: this watcher must not keep a VM alive that its owner dropped.
    let vm = Arc::downgrade(vm);
    let session = session.clone();
    tokio::spawn(async move {
        session.closed().await;
        let (Some(violation), Some(vm)) = (session.violation(), vm.upgrade()) else {
            return;
        };
        tracing::warn!(vm = vm.id(), %violation, "the guest broke the protocol; killing its VM");
        if let Err(e) = vm.kill().await {
            tracing::error!(vm = vm.id(), error = %e, "cannot kill the VM of a hostile guest");
        }
    });
}

/// Why a VM was cut off, if its guest broke the protocol: the reason its task or instance
/// reports instead of "the VM stopped".
pub fn protocol_breach(session: &Session) -> Option<String> {
    session
        .violation()
        .map(|v| format!("the guest broke the protocol ({v}); aegisd killed its microVM"))
}

async fn handshake(
    vm: &dyn Vm,
    first_stream: Option<u32>,
) -> Result<(Session, mpsc::Receiver<GuestMessage>, String), String> {
    let work = async {
        let channel = vm.connect().await.map_err(|e| e.to_string())?;
        let (session, mut events) = Session::start::<GuestMessage, _>(channel, Side::Host);
        if let Some(first) = first_stream {
            session.allocate_streams_from(first);
        }
        session
            .send(HostMessage::Hello {
                protocol: PROTOCOL_VERSION,
            })
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match events.recv().await {
                Some(GuestMessage::Hello {
                    protocol,
                    kernel_release,
                    ..
                }) => {
                    if protocol != PROTOCOL_VERSION {
                        return Err(format!(
                            "the guest harness speaks protocol {protocol}, aegisd speaks \
                             {PROTOCOL_VERSION}; rebuild the harness and initramfs"
                        ));
                    }
                    // The guest has no RTC: give it the host's time.
                    send_clock(&session).await.map_err(|e| e.to_string())?;
                    return Ok((session, events, kernel_release));
                }
                Some(other) => tracing::debug!(?other, "message before Hello ignored"),
                None => return Err("the guest channel closed before the harness said Hello".into()),
            }
        }
    };
    tokio::select! {
        r = work => r,
        exit = vm.wait() => Err(format!("the VM exited during boot ({})", describe_exit(&exit))),
        _ = tokio::time::sleep(BOOT_TIMEOUT) => {
            Err(format!("no answer from the guest harness within {} s", BOOT_TIMEOUT.as_secs()))
        }
    }
}

/// Sets the guest's wall clock to the host's (after boot, restore and resume).
pub async fn send_clock(session: &Session) -> Result<(), aegis_proto::SessionError> {
    let unix_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    session.send(HostMessage::SetClock { unix_nanos }).await
}

impl GuestVm {
    /// Asks the harness to stop everything and power off; kills the VMM if it takes longer
    /// than `grace`. Always leaves the VMM process gone.
    pub async fn shutdown(mut self, grace: Duration) {
        if !grace.is_zero() {
            let polite = async {
                if self.session.send(HostMessage::Shutdown).await.is_ok() {
                    // The VMM exits on its own once the guest powered off.
                    self.vm.wait().await;
                }
            };
            if tokio::time::timeout(grace, polite).await.is_err() {
                tracing::debug!(
                    vm = self.vm.id(),
                    "guest did not power off in time; killing"
                );
            }
        }
        self.session.close();
        self.events.close();
        if let Err(e) = self.vm.kill().await {
            tracing::warn!(vm = self.vm.id(), error = %e, "cannot kill VMM");
        }
    }
}

/// Records a live VMM process in the registry, so a restarted daemon can clean it up.
pub fn record(daemon: &crate::Daemon, vm_id: &str, owner: &str, run_dir: &Path, pid: Option<u32>) {
    let record = aegis_registry::VmRecord {
        id: vm_id.into(),
        owner: owner.into(),
        backend: daemon.backend.kind().to_string(),
        pid,
        run_dir: run_dir.display().to_string(),
        created_at: crate::ids::now(),
    };
    if let Err(e) = daemon.registry.insert_vm(&record) {
        tracing::error!(vm = vm_id, error = %e, "cannot record the VM");
    }
}

/// Removes a VM's run directory and registry record (the VMM must already be gone).
pub fn forget(daemon: &crate::Daemon, vm_id: &str, run_dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %run_dir.display(), error = %e, "cannot remove VM directory");
        }
    }
    if let Err(e) = daemon.registry.delete_vm(vm_id) {
        tracing::warn!(vm = vm_id, error = %e, "cannot delete VM record");
    }
}

/// The last `n` non-empty lines of `text`, joined on one line.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "(none)".into()
    } else {
        tail.join(" | ")
    }
}

pub fn describe_exit(exit: &VmExit) -> String {
    match exit {
        VmExit::PoweredOff => "guest powered off".into(),
        VmExit::Killed => "killed by aegisd".into(),
        VmExit::Failed { code: Some(c), .. } => format!("VMM exited with status {c}"),
        VmExit::Failed {
            signal: Some(s), ..
        } => format!("VMM killed by signal {s}"),
        VmExit::Failed { .. } => "VMM failed".into(),
    }
}
