//! Bringing a VM up for a wake: restore the cached memory snapshot if a valid one exists,
//! else cold boot from disk layers; start (or re-attach) the served command; wait until every
//! exposed port accepts connections.
//!
//! Every long wait gives way to the wake's cancellation. The VM of a failed or cancelled wake
//! is killed and its run directory and registry record removed before the wake returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_proto::{GuestMessage, HostMessage, ProcessSpec};
use aegis_vmm::VmExit;
use tokio_util::sync::CancellationToken;

use super::error::WakeFailure;
use super::lifecycle::{retire, Live};
use super::runtime::InstanceRuntime;
use super::snapshot_cache::CachedSnapshot;
use crate::daemon::Daemon;
use crate::guest::BootAssets;
use crate::ids;
use crate::vm::{self, GuestVm, LaunchSpec};

/// The guest process id of the served command.
const SERVER_PROC: u64 = 1;
/// Streams of a session that resumes a restored guest start here, far above anything the
/// guest saw in the session it was saved in.
const RESTORED_SESSION_STREAMS: u32 = 0x4000_0001;
/// How often readiness is probed while waiting for the app's ports.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a restored guest may take to re-attach the app to the new session.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `step` unless `cancel` fires first (the step's future is then dropped; whoever owns
/// the VM retires it).
async fn until<T>(
    cancel: &CancellationToken,
    step: impl Future<Output = Result<T, WakeFailure>>,
) -> Result<T, WakeFailure> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(WakeFailure::Cancelled),
        r = step => r,
    }
}

impl InstanceRuntime {
    /// Restores the cached snapshot if there is a valid one, else boots cold.
    pub(super) async fn bring_up(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        cancel: &CancellationToken,
    ) -> Result<Live, WakeFailure> {
        let release = self.release();
        let assets = until(cancel, self.boot_assets(daemon, release)).await?;
        if let Some(cached) = self.usable_snapshot(daemon, release) {
            let started = Instant::now();
            match self.restore(daemon, &assets, &cached, cancel).await {
                Ok(live) => {
                    self.stats.lock().snapshot_restores += 1;
                    tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "restored from memory snapshot");
                    return Ok(live);
                }
                Err(WakeFailure::Cancelled) => return Err(WakeFailure::Cancelled),
                Err(e) => {
                    // A snapshot is a cache: drop it and boot from disk layers.
                    tracing::warn!(instance = %self.id, error = %super::error_chain(&e), "snapshot restore failed; deleting it and booting cold");
                    self.drop_snapshot();
                }
            }
        }
        let started = Instant::now();
        let live = self.cold_boot(daemon, assets, release, cancel).await?;
        self.stats.lock().cold_boots += 1;
        tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "cold boot ready");
        Ok(live)
    }

    /// The disks to boot: the release's layers (apps), else the image's.
    async fn boot_assets(
        &self,
        daemon: &Arc<Daemon>,
        release: Option<u32>,
    ) -> Result<BootAssets, WakeFailure> {
        if let (Some(app), Some(number)) = (&self.target.app, release) {
            let root = crate::apps::release_root(daemon, app, number)
                .await
                .map_err(|source| WakeFailure::Root {
                    what: format!("release {number} of app '{app}'"),
                    source,
                })?;
            *self.release_process.lock() = Some(root.process());
            return Ok(root.assets);
        }
        let root = crate::images::resolve_root(daemon, &self.image)
            .await
            .map_err(|source| WakeFailure::Root {
                what: format!("image '{}'", self.image),
                source,
            })?;
        Ok(root.assets)
    }

    /// The one place an instance's VM is described: a fresh VM id and run directory, its
    /// disks, workspace share and resources.
    /// The workspace is checked again each time: a host directory may have changed since the
    /// last boot.
    fn launch_spec(&self, daemon: &Daemon, assets: BootAssets) -> Result<LaunchSpec, WakeFailure> {
        let shares = crate::workspaces::shares(&daemon.config, self.target.workspace.as_deref())
            .map_err(WakeFailure::Workspace)?;
        let vm_id = ids::new_id("vm");
        Ok(LaunchSpec {
            run_dir: daemon.config.home.vm_run_dir(&vm_id),
            vm_id,
            assets,
            // A restore never has a workspace (no snapshot is taken then); exact anyway.
            shares,
            vcpus: self.target.vcpus.unwrap_or(aegis_api::DEFAULT_VCPUS),
            memory_mib: self
                .target
                .memory_mib
                .unwrap_or(aegis_api::DEFAULT_MEMORY_MIB),
        })
    }

    async fn cold_boot(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        assets: BootAssets,
        release: Option<u32>,
        cancel: &CancellationToken,
    ) -> Result<Live, WakeFailure> {
        let spec = self.launch_spec(daemon, assets)?;
        let (vm_id, run_dir) = (spec.vm_id.clone(), spec.run_dir.clone());
        let mut gvm = match vm::launch_cancellable(daemon.backend.as_ref(), spec, cancel).await {
            Ok(g) => g,
            Err(e) => {
                vm::forget(daemon, &vm_id, &run_dir);
                return Err(WakeFailure::launch(e, false));
            }
        };
        vm::record(daemon, &vm_id, &self.id, &run_dir, gvm.vm.pid());
        let started = until(cancel, self.start_server(&mut gvm)).await;
        let live = Live::new(gvm, vm_id, run_dir, &self.id);
        if let Err(e) = started {
            let e = blame_guest(e, &live.gvm.session);
            retire(daemon, live).await;
            return Err(e);
        }
        if let Err(e) = until(cancel, self.wait_ports(&live)).await {
            let e = blame_guest(e, &live.gvm.session);
            retire(daemon, live).await;
            return Err(e);
        }
        if self.should_snapshot(daemon) && !cancel.is_cancelled() {
            self.take_snapshot(daemon, &live, release).await;
        }
        Ok(live)
    }

    async fn restore(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        assets: &BootAssets,
        cached: &CachedSnapshot,
        cancel: &CancellationToken,
    ) -> Result<Live, WakeFailure> {
        let spec = self.launch_spec(daemon, assets.clone())?;
        let (vm_id, run_dir) = (spec.vm_id.clone(), spec.run_dir.clone());
        let restored = vm::restore(
            daemon.backend.as_ref(),
            spec,
            &cached.snap,
            RESTORED_SESSION_STREAMS,
            cancel,
        )
        .await;
        let mut gvm = match restored {
            Ok(g) => g,
            Err(e) => {
                vm::forget(daemon, &vm_id, &run_dir);
                return Err(WakeFailure::launch(e, true));
            }
        };
        vm::record(daemon, &vm_id, &self.id, &run_dir, gvm.vm.pid());
        // The restored harness serves this new session; the app it runs still writes to the
        // saved session's streams until it is re-attached to this one.
        if let Err(e) = until(cancel, self.reattach_server(&mut gvm)).await {
            let e = blame_guest(e, &gvm.session);
            gvm.shutdown(Duration::ZERO).await;
            vm::forget(daemon, &vm_id, &run_dir);
            return Err(e);
        }
        let live = Live::new(gvm, vm_id, run_dir, &self.id);
        if let Err(e) = until(cancel, self.wait_ports(&live)).await {
            let e = blame_guest(e, &live.gvm.session);
            retire(daemon, live).await;
            return Err(e);
        }
        Ok(live)
    }

    /// Starts the served command with its output going to the instance log.
    async fn start_server(&self, gvm: &mut GuestVm) -> Result<(), WakeFailure> {
        let (stdout, stderr) = self.open_log_streams(&gvm.session);
        let spawn = HostMessage::Spawn {
            id: SERVER_PROC,
            spec: self.with_release_process(ProcessSpec {
                argv: self.target.command.clone(),
                env: self
                    .target
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd: self.target.workdir.clone(),
                user: self.target.user.clone(),
            }),
            stdin: None,
            stdout,
            stderr,
        };
        ask(gvm, spawn, "starting the app", |answer| match answer {
            GuestMessage::Spawned { .. } => Some(Ok(())),
            GuestMessage::SpawnFailed { error, .. } => Some(Err(WakeFailure::SpawnFailed {
                command: self.target.command.first().cloned().unwrap_or_default(),
                image: self.image.clone(),
                reason: error.message,
            })),
            _ => None,
        })
        .await
    }

    /// After a snapshot restore: the app was started by the saved VM's session, which is
    /// gone; its further output (and what it wrote since the restore) goes to this session's
    /// streams, into the same instance log.
    async fn reattach_server(&self, gvm: &mut GuestVm) -> Result<(), WakeFailure> {
        let (stdout, stderr) = self.open_log_streams(&gvm.session);
        let attach = HostMessage::Attach {
            id: SERVER_PROC,
            stdout,
            stderr,
        };
        let answered = ask(gvm, attach, "re-attaching the app", |answer| match answer {
            GuestMessage::Attached { .. } => Some(Ok(())),
            GuestMessage::AttachFailed { error, .. } => Some(Err(WakeFailure::AttachFailed(error))),
            _ => None,
        });
        tokio::time::timeout(ATTACH_TIMEOUT, answered)
            .await
            .map_err(|_| WakeFailure::AttachTimeout {
                secs: ATTACH_TIMEOUT.as_secs(),
            })?
    }

    /// An app instance runs the process of the release its VM booted, not the target's.
    fn with_release_process(&self, mut spec: ProcessSpec) -> ProcessSpec {
        if let Some(p) = self.release_process.lock().clone() {
            spec.argv = p.argv;
            spec.env = p.env;
            spec.cwd = p.cwd;
            if p.user.is_some() {
                spec.user = p.user;
            }
        }
        spec
    }

    /// Waits until every exposed guest port accepts a connection ("ready" means the app
    /// listens, not merely that the VM booted).
    async fn wait_ports(&self, live: &Live) -> Result<(), WakeFailure> {
        let deadline = Instant::now() + self.wake_timeout();
        for port in self.target.expose.iter().map(|p| p.guest_port) {
            loop {
                if live
                    .connector
                    .connect(port, Duration::from_secs(2))
                    .await
                    .is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(WakeFailure::PortWait {
                        port,
                        secs: self.wake_timeout().as_secs(),
                    });
                }
                if let Some(exit) = exited_now(&live.gvm).await {
                    return Err(WakeFailure::ServerExited {
                        exit: vm::describe_exit(&exit),
                    });
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
        Ok(())
    }
}

/// Sends `message` for the served process and waits for the guest's answer to it: the first
/// event `answer` recognises.
async fn ask(
    gvm: &mut GuestVm,
    message: HostMessage,
    doing: &'static str,
    answer: impl Fn(GuestMessage) -> Option<Result<(), WakeFailure>>,
) -> Result<(), WakeFailure> {
    gvm.session
        .send(message)
        .await
        .map_err(|source| WakeFailure::Send { doing, source })?;
    loop {
        let event = gvm
            .events
            .recv()
            .await
            .ok_or(WakeFailure::ChannelClosed { doing })?;
        if let Some(result) = answer(event) {
            return result;
        }
    }
}

/// A step that failed because the guest broke the protocol (its VM was killed for it) fails
/// for that reason, not for the closed channel or the exit it caused.
fn blame_guest(e: WakeFailure, session: &aegis_proto::Session) -> WakeFailure {
    match (e, vm::protocol_breach(session)) {
        (WakeFailure::Cancelled, _) => WakeFailure::Cancelled,
        (_, Some(breach)) => WakeFailure::ProtocolBreach(breach),
        (e, None) => e,
    }
}

async fn exited_now(gvm: &GuestVm) -> Option<VmExit> {
    tokio::time::timeout(Duration::ZERO, gvm.vm.wait())
        .await
        .ok()
}
