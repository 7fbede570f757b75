//! One instance at run time: its VM (if any), its state, and the transitions between
//! running, paused and terminated. Every transition holds the VM slot's lock, so a wake, an
//! idle pause and an explicit stop never interleave.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aegis_api::{CreateInstance, Endpoint, Instance, InstanceState, StreamName, WakeStats};
use aegis_proto::session::RecvHalf;
use aegis_proto::{GuestMessage, HostMessage, ProcessSpec};
use aegis_router::{ActivityTracker, WakeError, WakeGate};
use aegis_vmm::{SnapshotRef, VmExit};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::connector::Connector;
use crate::daemon::Daemon;
use crate::guest::BootAssets;
use crate::ids;
use crate::sync::lock;
use crate::tasks::output::OutputLog;
use crate::vm::{self, GuestVm, LaunchSpec};

/// The guest process id of the served command.
const SERVER_PROC: u64 = 1;
/// Streams of a session that resumes a restored guest start here, far above anything the
/// guest saw in the session it was saved in.
const RESTORED_SESSION_STREAMS: u32 = 0x4000_0001;
/// How often readiness is probed while waiting for the app's ports.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A VM that currently backs the instance.
struct Live {
    gvm: GuestVm,
    connector: Arc<Connector>,
    vm_id: String,
    run_dir: PathBuf,
    /// Fires when this VM is replaced or torn down, ending its helper tasks.
    retired: CancellationToken,
}

/// A cached memory snapshot of the instance's freshly booted, ready state.
#[derive(Clone)]
struct CachedSnapshot {
    snap: SnapshotRef,
    /// The app release whose layers the snapshot was taken on (apps only).
    release: Option<u32>,
}

pub struct InstanceRuntime {
    pub id: String,
    pub name: String,
    pub target: CreateInstance,
    pub created_at: String,
    pub endpoints: Mutex<Vec<Endpoint>>,
    daemon: Weak<Daemon>,
    image: String,
    state: watch::Sender<InstanceState>,
    ready: AtomicBool,
    slot: tokio::sync::Mutex<Option<Live>>,
    pub gate: WakeGate,
    pub activity: Arc<ActivityTracker>,
    stats: Mutex<WakeStats>,
    last_error: Mutex<Option<String>>,
    guest_kernel: Mutex<Option<String>>,
    snapshot: Mutex<Option<CachedSnapshot>>,
    /// The current VM's connector, readable without the slot lock (hot path of every proxied
    /// connection).
    connector: Mutex<Option<Arc<Connector>>>,
    pub log: Arc<OutputLog>,
    /// Cancelled when the instance is deleted or the daemon stops.
    pub shutdown: CancellationToken,
    /// Guest connections being opened right now: an idle pause waits for them (a paused guest
    /// would leave the router's connect hanging with no one to wake it).
    pub connecting: std::sync::atomic::AtomicUsize,
    /// The router's accept loops of this instance's ports; they end after `shutdown`.
    pub listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The app release served now (`target.release` until switched; see `switch_release`).
    release: Mutex<Option<u32>>,
    /// The process of the release the current VM booted (apps), over the target's command.
    release_process: Mutex<Option<crate::apps::ReleaseProcess>>,
}

impl InstanceRuntime {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        daemon: &Arc<Daemon>,
        id: String,
        name: String,
        target: CreateInstance,
        created_at: String,
        endpoints: Vec<Endpoint>,
        log: Arc<OutputLog>,
    ) -> Arc<Self> {
        let image = target
            .image
            .clone()
            .unwrap_or_else(|| aegis_api::DEFAULT_IMAGE.into());
        let release = target.release;
        Arc::new(InstanceRuntime {
            release: Mutex::new(release),
            release_process: Mutex::new(None),
            id,
            name,
            target,
            created_at,
            endpoints: Mutex::new(endpoints),
            daemon: Arc::downgrade(daemon),
            image,
            state: watch::channel(InstanceState::Terminated).0,
            ready: AtomicBool::new(false),
            slot: tokio::sync::Mutex::new(None),
            gate: WakeGate::new(),
            activity: ActivityTracker::new(),
            stats: Mutex::new(WakeStats::default()),
            last_error: Mutex::new(None),
            guest_kernel: Mutex::new(None),
            snapshot: Mutex::new(None),
            connector: Mutex::new(None),
            log,
            shutdown: CancellationToken::new(),
            connecting: std::sync::atomic::AtomicUsize::new(0),
            listeners: Mutex::new(Vec::new()),
        })
    }

    pub fn state(&self) -> InstanceState {
        *self.state.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn connector(&self) -> Option<Arc<Connector>> {
        lock(&self.connector).clone()
    }

    fn set_state(&self, s: InstanceState) {
        self.ready
            .store(s == InstanceState::Running, Ordering::Release);
        self.state.send_replace(s);
        tracing::info!(instance = %self.id, state = s.as_str(), "instance state");
    }

    fn daemon(&self) -> Result<Arc<Daemon>, WakeError> {
        self.daemon.upgrade().ok_or(WakeError::Gone)
    }

    fn pause_after(&self) -> Duration {
        Duration::from_secs(
            self.target
                .pause_after_secs
                .unwrap_or(aegis_api::instance::DEFAULT_PAUSE_AFTER_SECS),
        )
    }

    fn terminate_after(&self) -> Duration {
        Duration::from_secs(
            self.target
                .terminate_after_secs
                .unwrap_or(aegis_api::instance::DEFAULT_TERMINATE_AFTER_SECS),
        )
    }

    pub fn wake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.target
                .wake_timeout_secs
                .unwrap_or(aegis_api::instance::DEFAULT_WAKE_TIMEOUT_SECS),
        )
    }

    /// The API view.
    pub fn view(&self) -> Instance {
        let last = std::time::SystemTime::now() - self.activity.idle_for();
        Instance {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state(),
            target: CreateInstance {
                release: self.release(),
                ..self.target.clone()
            },
            endpoints: lock(&self.endpoints).clone(),
            created_at: self.created_at.clone(),
            last_active_at: humantime::format_rfc3339_millis(last).to_string(),
            active_connections: self.activity.open_connections() as u64,
            snapshot_cached: lock(&self.snapshot).is_some(),
            stats: *lock(&self.stats),
            last_error: lock(&self.last_error).clone(),
            guest_kernel: lock(&self.guest_kernel).clone(),
        }
    }

    /// Makes the app reachable: resume, restore or cold boot as needed. Single flight.
    pub async fn ensure_ready(self: &Arc<Self>) -> Result<(), WakeError> {
        if self.is_ready() {
            return Ok(());
        }
        let this = self.clone();
        self.gate
            .run(move || async move { this.wake().await })
            .await
    }

    async fn wake(self: Arc<Self>) -> Result<(), WakeError> {
        if self.shutdown.is_cancelled() {
            return Err(WakeError::Gone);
        }
        let daemon = self.daemon()?;
        let mut slot = self.slot.lock().await;
        if let Some(live) = slot.as_ref() {
            match self.state() {
                InstanceState::Running => return Ok(()),
                InstanceState::Paused => {
                    let started = Instant::now();
                    match live.gvm.vm.resume().await {
                        Ok(()) => {
                            let _ = vm::send_clock(&live.gvm.session).await;
                            lock(&self.stats).resumes += 1;
                            // The wake is activity: the idle timer starts now, not at the
                            // connection that asked for it.
                            self.activity.touch();
                            self.set_state(InstanceState::Running);
                            tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "resumed");
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(instance = %self.id, error = %e, "resume failed; replacing the VM");
                            self.note_error(format!("resume failed: {e}"));
                        }
                    }
                }
                _ => {}
            }
        }
        // No usable VM: tear down whatever is left and bring up a new one.
        lock(&self.connector).take();
        if let Some(old) = slot.take() {
            retire(&daemon, old).await;
        }
        self.set_state(InstanceState::Booting);
        let result = self.bring_up(&daemon).await;
        match result {
            Ok(live) => {
                *lock(&self.guest_kernel) = Some(live.gvm.kernel_release.clone());
                *lock(&self.connector) = Some(live.connector.clone());
                self.watch_exit(&live);
                *slot = Some(live);
                self.activity.touch();
                self.set_state(InstanceState::Running);
                Ok(())
            }
            Err(e) => {
                self.note_error(e.clone());
                self.set_state(InstanceState::Terminated);
                Err(WakeError::failed(e))
            }
        }
    }

    /// Restores the cached snapshot if there is a valid one, else boots cold from disk layers.
    async fn bring_up(self: &Arc<Self>, daemon: &Arc<Daemon>) -> Result<Live, String> {
        let release = self.release();
        if let (Some(app), Some(number)) = (&self.target.app, release) {
            let root = crate::apps::release_root(daemon, app, number)
                .await
                .map_err(|e| e.to_string())?;
            *lock(&self.release_process) = Some(root.process());
            return self.boot_from(daemon, root.assets).await;
        }
        let root = crate::images::resolve_root(daemon, &self.image)
            .await
            .map_err(|e| e.to_string())?;
        self.boot_from(daemon, root.assets).await
    }

    /// The release served now (apps).
    pub fn release(&self) -> Option<u32> {
        *lock(&self.release)
    }

    /// Switches an app's instance to another release: the VM is terminated and the memory
    /// snapshot dropped (it holds the old release's state and must never restore into this
    /// one); the next connection boots the new release from its disk layers.
    pub async fn switch_release(&self, release: u32) {
        let slot = self.slot.lock().await;
        *lock(&self.release) = Some(release);
        self.drop_snapshot();
        drop(slot);
        self.terminate().await;
    }

    /// Restores the cached snapshot if there is a valid one, else boots cold from `assets`.
    async fn boot_from(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        assets: BootAssets,
    ) -> Result<Live, String> {
        let cached = lock(&self.snapshot).clone();
        if cached.as_ref().is_some_and(|c| c.release != self.release()) {
            // Taken on other layers: useless, and restoring it would be wrong.
            self.drop_snapshot();
        }
        let cached = lock(&self.snapshot).clone();
        if let Some(cached) = cached {
            if daemon.backend.capabilities().memory_snapshot {
                let started = Instant::now();
                match self.restore(daemon, &assets, &cached).await {
                    Ok(live) => {
                        lock(&self.stats).snapshot_restores += 1;
                        tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "restored from memory snapshot");
                        return Ok(live);
                    }
                    Err(e) => {
                        // A snapshot is a cache: drop it and boot from disk layers.
                        tracing::warn!(instance = %self.id, error = %e, "snapshot restore failed; deleting it and booting cold");
                        self.drop_snapshot();
                    }
                }
            }
        }
        let started = Instant::now();
        let live = self.cold_boot(daemon, assets).await?;
        lock(&self.stats).cold_boots += 1;
        tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "cold boot ready");
        Ok(live)
    }

    fn new_vm_dirs(&self, daemon: &Daemon) -> (String, PathBuf) {
        let vm_id = ids::new_id("vm");
        let run_dir = daemon.config.run_dir().join(&vm_id);
        (vm_id, run_dir)
    }

    async fn cold_boot(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        assets: BootAssets,
    ) -> Result<Live, String> {
        // Checked at every boot: a host directory may have changed since the last one.
        let shares = crate::workspaces::shares(&daemon.config, self.target.workspace.as_deref())
            .map_err(|e| format!("cannot boot the microVM: {}", e.error.message))?;
        let (vm_id, run_dir) = self.new_vm_dirs(daemon);
        let spec = LaunchSpec {
            vm_id: vm_id.clone(),
            run_dir: run_dir.clone(),
            assets,
            shares,
            vcpus: self.target.vcpus.unwrap_or(aegis_api::DEFAULT_VCPUS),
            memory_mib: self
                .target
                .memory_mib
                .unwrap_or(aegis_api::DEFAULT_MEMORY_MIB),
        };
        let backend = daemon.backend.clone();
        // Boot in its own task so a caller giving up cannot drop a half-booted VM.
        let booted = tokio::spawn(async move { vm::launch(backend.as_ref(), spec).await })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut gvm = match booted {
            Ok(g) => g,
            Err(e) => {
                vm::forget(daemon, &vm_id, &run_dir);
                return Err(format!("cannot boot the microVM: {e}"));
            }
        };
        vm::record(daemon, &vm_id, &self.id, &run_dir, gvm.vm.pid());
        let started = self.start_server(&mut gvm).await;
        let live = Live::new(gvm, vm_id, run_dir, &self.id);
        if let Err(e) = started {
            retire(daemon, live).await;
            return Err(e);
        }
        if let Err(e) = self.wait_ports(&live).await {
            retire(daemon, live).await;
            return Err(e);
        }
        // Workspace data must never be in a memory snapshot (and virtio-fs cannot be
        // migrated): an instance with a workspace cold-boots after each terminate.
        if daemon.backend.capabilities().memory_snapshot
            && lock(&self.snapshot).is_none()
            && self.target.workspace.is_none()
        {
            self.take_snapshot(daemon, &live).await;
        }
        Ok(live)
    }

    /// Starts the served command with its output going to the instance log.
    async fn start_server(&self, gvm: &mut GuestVm) -> Result<(), String> {
        let stdout = gvm.session.open_stream();
        let stderr = gvm.session.open_stream();
        let ids = (stdout.id(), stderr.id());
        self.pump_logs(stdout.into_split().0, stderr.into_split().0);
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
            stdout: ids.0,
            stderr: ids.1,
        };
        gvm.session.send(spawn).await.map_err(|e| e.to_string())?;
        loop {
            match gvm.events.recv().await {
                Some(GuestMessage::Spawned { .. }) => return Ok(()),
                Some(GuestMessage::SpawnFailed { error, .. }) => {
                    return Err(format!(
                        "cannot run '{}' in image '{}': {}",
                        self.target
                            .command
                            .first()
                            .map(String::as_str)
                            .unwrap_or_default(),
                        self.image,
                        error.message
                    ))
                }
                Some(_) => continue,
                None => return Err("the guest channel closed while starting the app".into()),
            }
        }
    }

    /// After a snapshot restore: the app was started by the saved VM's session, which is
    /// gone; its further output (and what it wrote since the restore) goes to this session's
    /// streams, into the same instance log.
    async fn reattach_server(&self, gvm: &mut GuestVm) -> Result<(), String> {
        let stdout = gvm.session.open_stream();
        let stderr = gvm.session.open_stream();
        let attach = HostMessage::Attach {
            id: SERVER_PROC,
            stdout: stdout.id(),
            stderr: stderr.id(),
        };
        self.pump_logs(stdout.into_split().0, stderr.into_split().0);
        gvm.session.send(attach).await.map_err(|e| e.to_string())?;
        let answer = async {
            loop {
                match gvm.events.recv().await {
                    Some(GuestMessage::Attached { .. }) => return Ok(()),
                    Some(GuestMessage::AttachFailed { error, .. }) => {
                        return Err(format!("the restored app is not running: {error}"))
                    }
                    Some(_) => continue,
                    None => {
                        return Err("the guest channel closed while re-attaching the app".into())
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .map_err(|_| "the restored guest did not answer Attach within 30 s".to_string())?
    }

    /// An app instance runs the process of the release its VM booted, not the target's.
    fn with_release_process(&self, mut spec: ProcessSpec) -> ProcessSpec {
        if let Some(p) = lock(&self.release_process).clone() {
            spec.argv = p.argv;
            spec.env = p.env;
            spec.cwd = p.cwd;
            if p.user.is_some() {
                spec.user = p.user;
            }
        }
        spec
    }

    fn pump_logs(&self, out: RecvHalf, err: RecvHalf) {
        for (mut rx, stream) in [(out, StreamName::Stdout), (err, StreamName::Stderr)] {
            let log = self.log.clone();
            tokio::spawn(async move {
                while let Ok(Some(bytes)) = rx.recv().await {
                    if let Err(e) = log.append(stream, &bytes) {
                        tracing::warn!(error = %e, "cannot store instance output");
                        return;
                    }
                }
            });
        }
    }

    /// Waits until every exposed guest port accepts a connection ("ready" means the app
    /// listens, not merely that the VM booted).
    async fn wait_ports(&self, live: &Live) -> Result<(), String> {
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
                    return Err(format!(
                        "the app did not listen on guest port {port} within {} s",
                        self.wake_timeout().as_secs()
                    ));
                }
                if let Some(exit) = exited_now(&live.gvm).await {
                    return Err(format!(
                        "the microVM stopped before the app was ready ({})",
                        vm::describe_exit(&exit)
                    ));
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
        Ok(())
    }

    /// Saves the freshly booted, ready VM as a memory snapshot (plus a copy of its scratch
    /// disk, which must match the saved RAM). Failure only costs future wakes a cold boot.
    async fn take_snapshot(&self, daemon: &Daemon, live: &Live) {
        let dir = daemon.config.home.join("snapshots").join(&self.id);
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = crate::daemon::create_private_dir(&tmp) {
            tracing::warn!(error = %e, "cannot create snapshot directory");
            return;
        }
        let started = Instant::now();
        let result = async {
            live.gvm.vm.pause().await.map_err(|e| e.to_string())?;
            let saved = live.gvm.vm.snapshot(&tmp).await.map_err(|e| e.to_string());
            let copied = match &saved {
                Ok(_) => {
                    sparse_copy(
                        &live.run_dir.join("scratch.ext4"),
                        &tmp.join("scratch.ext4"),
                    )
                    .await
                }
                Err(_) => Ok(()),
            };
            live.gvm.vm.resume().await.map_err(|e| e.to_string())?;
            saved?;
            copied
        }
        .await;
        match result {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Err(e) = std::fs::rename(&tmp, &dir) {
                    tracing::warn!(error = %e, "cannot install snapshot");
                    return;
                }
                *lock(&self.snapshot) = Some(CachedSnapshot {
                    snap: SnapshotRef { dir },
                    release: self.release(),
                });
                tracing::info!(instance = %self.id, ms = started.elapsed().as_millis() as u64, "memory snapshot cached");
            }
            Err(e) => {
                tracing::warn!(instance = %self.id, error = %e, "memory snapshot failed; wakes will boot cold");
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
    }

    async fn restore(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        assets: &BootAssets,
        cached: &CachedSnapshot,
    ) -> Result<Live, String> {
        let (vm_id, run_dir) = self.new_vm_dirs(daemon);
        crate::daemon::create_private_dir(&run_dir).map_err(|e| e.to_string())?;
        let scratch = run_dir.join("scratch.ext4");
        let result = async {
            sparse_copy(&cached.snap.dir.join("scratch.ext4"), &scratch).await?;
            let launch = LaunchSpec {
                vm_id: vm_id.clone(),
                run_dir: run_dir.clone(),
                assets: assets.clone(),
                // Never used with a workspace (no snapshot is taken then); kept exact anyway.
                shares: crate::workspaces::shares(&daemon.config, self.target.workspace.as_deref())
                    .map_err(|e| e.error.message)?,
                vcpus: self.target.vcpus.unwrap_or(aegis_api::DEFAULT_VCPUS),
                memory_mib: self
                    .target
                    .memory_mib
                    .unwrap_or(aegis_api::DEFAULT_MEMORY_MIB),
            };
            let spec = vm::vm_spec(&launch, &scratch);
            let vmm = daemon
                .backend
                .restore(&spec, &cached.snap)
                .await
                .map_err(|e| e.to_string())?;
            vm::record(daemon, &vm_id, &self.id, &run_dir, vmm.pid());
            let mut gvm =
                match vm::attach(std::sync::Arc::from(vmm), Some(RESTORED_SESSION_STREAMS)).await {
                    Ok(g) => g,
                    Err(e) => return Err(e.to_string()),
                };
            // The restored harness serves this new session; the app it runs still writes to
            // the saved session's streams until it is re-attached to this one.
            if let Err(e) = self.reattach_server(&mut gvm).await {
                gvm.shutdown(Duration::ZERO).await;
                return Err(e);
            }
            let live = Live::new(gvm, vm_id.clone(), run_dir.clone(), &self.id);
            if let Err(e) = self.wait_ports(&live).await {
                retire(daemon, live).await;
                return Err(e);
            }
            Ok(live)
        }
        .await;
        if result.is_err() {
            vm::forget(daemon, &vm_id, &run_dir);
        }
        result
    }

    fn drop_snapshot(&self) {
        if let Some(c) = lock(&self.snapshot).take() {
            let _ = std::fs::remove_dir_all(&c.snap.dir);
        }
    }

    fn note_error(&self, e: String) {
        *lock(&self.last_error) = Some(e);
    }

    /// Marks the instance terminated if its VM dies on its own (crash, kill -9): clients in
    /// flight get errors, the next connection wakes a fresh VM.
    fn watch_exit(self: &Arc<Self>, live: &Live) {
        let this = Arc::downgrade(self);
        let retired = live.retired.clone();
        let vm_id = live.vm_id.clone();
        // The VM handle stays in the slot; wait on it through the slot lock-free path.
        let vmm = live.gvm.vm.clone();
        tokio::spawn(async move {
            let exit = tokio::select! {
                e = vmm.wait() => e,
                _ = retired.cancelled() => return,
            };
            let Some(this) = this.upgrade() else { return };
            let Ok(daemon) = this.daemon() else { return };
            let mut slot = this.slot.lock().await;
            if slot.as_ref().is_some_and(|l| l.vm_id == vm_id) {
                tracing::warn!(instance = %this.id, exit = ?exit, "the VM stopped on its own");
                this.note_error(format!(
                    "the microVM stopped unexpectedly ({})",
                    vm::describe_exit(&exit)
                ));
                if let Some(old) = slot.take() {
                    retire(&daemon, old).await;
                }
                lock(&this.connector).take();
                this.set_state(InstanceState::Terminated);
            }
        });
    }

    /// Pauses the VM if it runs (idle timer or `aegis pause`).
    pub async fn pause(&self) -> Result<(), String> {
        let slot = self.slot.lock().await;
        let Some(live) = slot.as_ref() else {
            return Err(format!("instance {} has no running VM to pause", self.id));
        };
        if self.state() != InstanceState::Running {
            return Ok(());
        }
        if self.connecting.load(Ordering::Acquire) > 0 {
            return Err(format!(
                "instance {} is opening a connection; not pausing now",
                self.id
            ));
        }
        // Clear readiness first: new connections now wait for a resume instead of racing it.
        self.ready.store(false, Ordering::Release);
        match live.gvm.vm.pause().await {
            Ok(()) => {
                lock(&self.stats).pauses += 1;
                self.set_state(InstanceState::Paused);
                Ok(())
            }
            Err(e) => {
                self.ready.store(true, Ordering::Release);
                Err(format!("cannot pause instance {}: {e}", self.id))
            }
        }
    }

    /// Terminates the VM (idle timer, `aegis stop`, delete, daemon shutdown). The target and
    /// its snapshot stay; the next connection wakes it.
    pub async fn terminate(&self) {
        let mut slot = self.slot.lock().await;
        self.ready.store(false, Ordering::Release);
        lock(&self.connector).take();
        if let Some(live) = slot.take() {
            if let Some(daemon) = self.daemon.upgrade() {
                retire(&daemon, live).await;
            }
            lock(&self.stats).terminations += 1;
        }
        self.set_state(InstanceState::Terminated);
    }

    /// Deletes the snapshot too (instance removal).
    pub fn forget(&self) {
        self.drop_snapshot();
    }

    /// The idle loop: running -> paused after `pause_after` without activity, paused ->
    /// terminated after `terminate_after`.
    pub async fn idle_loop(self: Arc<Self>) {
        let mut state = self.state.subscribe();
        let mut conns = self.activity.subscribe();
        loop {
            let current = *state.borrow_and_update();
            let wait = match current {
                InstanceState::Running => {
                    let idle = if self.target.idle_policy == aegis_api::IdlePolicy::Idle
                        || self.activity.open_connections() == 0
                    {
                        Some(self.activity.idle_for())
                    } else {
                        None
                    };
                    match idle {
                        Some(idle) if idle >= self.pause_after() => {
                            tracing::info!(instance = %self.id, "idle: pausing");
                            if let Err(e) = self.pause().await {
                                // Retried shortly (a connection being opened, a slow QMP).
                                tracing::debug!(error = %e, "idle pause deferred");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            continue;
                        }
                        Some(idle) => Some(self.pause_after() - idle),
                        None if self.target.idle_policy == aegis_api::IdlePolicy::Idle => {
                            Some(self.pause_after())
                        }
                        None => None,
                    }
                }
                InstanceState::Paused => {
                    let paused_for = self.activity.idle_for().saturating_sub(self.pause_after());
                    if paused_for >= self.terminate_after() {
                        tracing::info!(instance = %self.id, "idle: terminating");
                        self.terminate().await;
                        continue;
                    }
                    Some(self.terminate_after() - paused_for)
                }
                InstanceState::Booting | InstanceState::Terminated => None,
            };
            let sleep = async {
                match wait {
                    // Re-check at least every second: activity may move the deadline.
                    Some(w) => tokio::time::sleep(w.min(Duration::from_secs(1))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = state.changed() => if r.is_err() { return },
                r = conns.changed() => if r.is_err() { return },
                _ = sleep => {}
            }
        }
    }
}

impl Live {
    /// Hands the session's events to a connector (after the server was started).
    fn new(mut gvm: GuestVm, vm_id: String, run_dir: PathBuf, owner: &str) -> Live {
        let events = std::mem::replace(&mut gvm.events, tokio::sync::mpsc::channel(1).1);
        let connector = Connector::start(gvm.session.clone(), events, owner.to_string());
        Live {
            gvm,
            connector,
            vm_id,
            run_dir,
            retired: CancellationToken::new(),
        }
    }
}

/// Kills a VM and removes every trace of it.
async fn retire(daemon: &Daemon, live: Live) {
    live.retired.cancel();
    live.gvm.shutdown(Duration::ZERO).await;
    vm::forget(daemon, &live.vm_id, &live.run_dir);
}

async fn exited_now(gvm: &GuestVm) -> Option<VmExit> {
    tokio::time::timeout(Duration::ZERO, gvm.vm.wait())
        .await
        .ok()
}

/// Copies a sparse file keeping its holes (the scratch disk is mostly holes).
async fn sparse_copy(from: &Path, to: &Path) -> Result<(), String> {
    let status = tokio::process::Command::new("cp")
        .arg("--sparse=always")
        .arg("--reflink=auto")
        .arg(from)
        .arg(to)
        .status()
        .await
        .map_err(|e| format!("cannot run cp: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "copying {} to {} failed ({status})",
            from.display(),
            to.display()
        ))
    }
}
