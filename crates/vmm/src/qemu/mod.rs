//! The QEMU backend: the `microvm` machine, direct kernel boot, virtio-blk disks, the guest
//! channel on a virtio-serial port, control over QMP.
//!
//! - boot: spawn QEMU ([`cmdline`]), then wait for its QMP socket, which proves QEMU parsed
//!   its command line and runs (the guest is already booting by then).
//! - pause/resume: QMP `stop`/`cont`. Bytes on the channel are held, not lost.
//! - snapshot: QMP `stop`, `migrate` to `exec:cat > memory.tmp && mv memory.tmp memory`,
//!   poll `query-migrate`; then `meta.json` ([`snapshot`]) is written last.
//! - restore: the same command line with `-incoming defer`, `migrate-incoming` from
//!   `exec:cat memory`, wait until paused, `cont`.
//!
//! - shared directories: one virtiofsd per share ([`virtiofsd`]), started before QEMU and
//!   killed with it. A VM with shares cannot be migrated (vhost-user-fs has no migration
//!   support), so `snapshot` and `restore` refuse it.
//!
//! The accelerator is KVM where guests really boot, TCG otherwise (see [`crate::host`]).

pub mod cmdline;
pub mod qmp;
pub mod snapshot;
pub mod virtiofsd;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::UnixStream;

use crate::backend::{Backend, Channel, Vm, VmExit, VmmError};
use crate::capabilities::{BackendKind, Capabilities};
use crate::console_log::ConsoleLog;
use crate::process::{remove_file_if_exists, tail_file, ProcessSpec, VmmProcess};
use crate::spec::{SnapshotRef, VmSpec};
use cmdline::{RunPaths, Start};
use qmp::{Qmp, QmpError};
use snapshot::{DiskMeta, SnapshotMeta};
use virtiofsd::Virtiofsd;

/// How long QEMU may take to open its QMP socket after start (it takes milliseconds; a
/// loaded host can be slow).
const QMP_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QMP command may take to answer.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Vm::connect`] retries before giving up.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for saving or loading a memory snapshot.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// Migration is local: do not let QEMU's default rate limit (128 MiB/s) slow it down.
const MIGRATION_BANDWIDTH: u64 = 16 << 30;
const POLL: Duration = Duration::from_millis(5);
const CONSOLE_TAIL_BYTES: u64 = 2048;

/// The accelerator QEMU runs guests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// Software emulation: works everywhere, several times slower.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown accelerator '{0}': expected kvm or tcg")]
pub struct UnknownAccel(pub String);

impl FromStr for Accel {
    type Err = UnknownAccel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(UnknownAccel(other.to_string())),
        }
    }
}

/// How this host runs QEMU; built by [`crate::select`] from the host report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    pub binary: PathBuf,
    /// `major.minor.micro`; part of every snapshot's identity.
    pub version: String,
    pub accel: Accel,
    /// Host TSC kHz, passed as `tsc_early_khz=` under TCG.
    pub tsc_khz: Option<u64>,
    /// Most vCPUs one VM may have (host cores).
    pub max_vcpus: u32,
    /// The virtiofsd serving shared directories; none: VMs cannot have shares.
    pub virtiofsd: Option<PathBuf>,
    /// Most bytes kept of one VM's console log ([`crate::console_log`]).
    pub console_log_bytes: u64,
}

/// Boots microVMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    cfg: Arc<QemuConfig>,
}

impl QemuBackend {
    pub fn new(cfg: QemuConfig) -> QemuBackend {
        QemuBackend { cfg: Arc::new(cfg) }
    }

    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    /// Validates, spawns QEMU and waits for its QMP socket.
    async fn launch(&self, spec: &VmSpec, start: Start) -> Result<QemuVm, VmmError> {
        spec.validate(self.cfg.max_vcpus)?;
        let paths = RunPaths::new(&spec.run_dir);
        let argv = cmdline::build(&self.cfg, spec, &paths, start)?;
        // Stale sockets of an earlier VMM in this directory would accept nothing.
        for stale in [
            &paths.channel,
            &paths.qmp,
            &paths.pid,
            &paths.console_socket,
        ] {
            remove_file_if_exists(stale)?;
        }
        // Listening before QEMU starts: it connects to the console while it starts up.
        let console = ConsoleLog::listen(
            &paths.console_socket,
            &paths.console,
            self.cfg.console_log_bytes,
        )
        .map_err(|source| VmmError::Io {
            op: "cannot listen for the serial console on",
            path: paths.console_socket.clone(),
            source,
        })?;
        // QEMU connects to virtiofsd's socket while it starts: virtiofsd goes first.
        let fsd = Virtiofsd::start(self.cfg.virtiofsd.as_deref(), spec).await?;
        let process = match VmmProcess::spawn(ProcessSpec {
            program: &self.cfg.binary,
            args: &argv,
            log: &paths.log,
            pid_file: &paths.pid,
            child_setup: None,
        })
        .await
        {
            Ok(p) => p,
            Err(e) => {
                fsd.stop().await;
                return Err(e);
            }
        };
        tracing::debug!(vm = %spec.id, pid = process.pid(), accel = %self.cfg.accel, "QEMU started");
        let vm = QemuVm {
            spec: spec.clone(),
            paths,
            cfg: self.cfg.clone(),
            process,
            fsd,
            _console: console,
            qmp: tokio::sync::Mutex::new(None),
            cleaned: AtomicBool::new(false),
        };
        if let Err(e) = vm.first_qmp().await {
            let _ = vm.kill().await;
            return Err(e);
        }
        Ok(vm)
    }

    async fn restore_into(&self, vm: &QemuVm, memory: &Path) -> Result<(), VmmError> {
        let uri = format!("exec:cat {}", sh_quote(memory)?);
        vm.qmp(
            "migrate-incoming",
            Some(json!({ "uri": uri })),
            "start loading its snapshot",
        )
        .await?;
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            let status = vm
                .qmp("query-status", None, "report its status")
                .await?
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            match status.as_str() {
                "inmigrate" => {}
                "paused" => break,
                // The source was running when saved (not how Aegis saves, but valid).
                "running" => return Ok(()),
                other => {
                    return Err(VmmError::Control {
                        backend: BackendKind::Qemu,
                        request: "migrate-incoming".into(),
                        detail: format!("VM is in state '{other}' after loading the snapshot"),
                    })
                }
            }
            if Instant::now() > deadline {
                return Err(vm.timeout("load its snapshot", MIGRATION_TIMEOUT));
            }
            tokio::time::sleep(POLL).await;
        }
        vm.qmp("cont", None, "resume after restore").await?;
        Ok(())
    }
}

#[async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            memory_snapshot: true,
            // No /dev/vhost-vsock on the hosts Aegis targets first; virtio-serial works
            // everywhere.
            vsock: false,
            virtio_fs: self.cfg.virtiofsd.is_some(),
            shared_directories: self.cfg.virtiofsd.is_some(),
            tap_network: false,
            accelerator: self.cfg.accel.as_str().to_string(),
        }
    }

    async fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmmError> {
        Ok(Box::new(self.launch(spec, Start::Boot).await?))
    }

    async fn restore(
        &self,
        spec: &VmSpec,
        snapshot: &SnapshotRef,
    ) -> Result<Box<dyn Vm>, VmmError> {
        let dir = &snapshot.dir;
        if !spec.shares.is_empty() {
            return Err(VmmError::Unsupported {
                backend: BackendKind::Qemu,
                operation: "restore a memory snapshot into a VM with a shared directory \
                            (virtio-fs cannot be migrated); boot it from its disks instead",
            });
        }
        let saved = snapshot::read(dir)?;
        let want = meta_for(&self.cfg, spec, 0);
        if let Some(reason) = saved.mismatch(&want) {
            return Err(VmmError::Snapshot {
                dir: dir.clone(),
                reason,
            });
        }
        let started = Instant::now();
        let vm = self.launch(spec, Start::Incoming).await?;
        match self.restore_into(&vm, &snapshot::memory_path(dir)).await {
            Ok(()) => {
                tracing::debug!(vm = %spec.id, ms = started.elapsed().as_millis(), "restored");
                Ok(Box::new(vm))
            }
            Err(e) => {
                // QEMU exits when it cannot load a migration stream: say so with its words.
                let exited = matches!(e, VmmError::Exited { .. });
                let report = vm.failure_report();
                let _ = vm.kill().await;
                if exited {
                    Err(VmmError::Snapshot {
                        dir: dir.clone(),
                        reason: format!("QEMU could not load it:\n{report}"),
                    })
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// One QEMU process.
pub struct QemuVm {
    spec: VmSpec,
    paths: RunPaths,
    cfg: Arc<QemuConfig>,
    process: VmmProcess,
    /// virtiofsd of each share (none for most VMs).
    fsd: Virtiofsd,
    /// Pumps the serial console into the bounded console log while the VM lives.
    _console: ConsoleLog,
    /// Connected lazily and again after any I/O error or timeout, so a command abandoned
    /// halfway never confuses the next one.
    qmp: tokio::sync::Mutex<Option<Qmp>>,
    cleaned: AtomicBool,
}

impl QemuVm {
    /// Connects QMP for the first time, retrying while QEMU starts up.
    async fn first_qmp(&self) -> Result<(), VmmError> {
        let deadline = Instant::now() + QMP_START_TIMEOUT;
        loop {
            if let Some(exit) = self.process.exited() {
                return Err(self.exited(exit));
            }
            match Qmp::connect(&self.paths.qmp).await {
                Ok(q) => {
                    if let Some(v) = q.version() {
                        if v != self.cfg.version {
                            tracing::warn!(
                                probed = %self.cfg.version, running = v,
                                "QEMU version changed since the host was probed"
                            );
                        }
                    }
                    *self.qmp.lock().await = Some(q);
                    return Ok(());
                }
                Err(QmpError::Connect { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    if let Some(exit) = self.exit_soon().await {
                        return Err(self.exited(exit));
                    }
                    return Err(match e {
                        QmpError::Connect { .. } => self.timeout("open QMP", QMP_START_TIMEOUT),
                        e => self.control("connect", e),
                    });
                }
            }
        }
    }

    /// Runs one QMP command. `what` names it for a timeout message ("VM x did not <what>").
    async fn qmp(
        &self,
        command: &str,
        args: Option<Value>,
        what: &'static str,
    ) -> Result<Value, VmmError> {
        let mut guard = self.qmp.lock().await;
        if let Some(exit) = self.process.exited() {
            *guard = None;
            return Err(self.exited(exit));
        }
        let q = match guard.as_mut() {
            Some(q) => q,
            None => match Qmp::connect(&self.paths.qmp).await {
                Ok(q) => guard.insert(q),
                Err(e) => return Err(self.qmp_failure(command, e).await),
            },
        };
        match tokio::time::timeout(QMP_TIMEOUT, q.execute(command, args)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e @ QmpError::Command { .. })) => Err(self.control(command, e)),
            Ok(Err(e)) => {
                *guard = None;
                Err(self.qmp_failure(command, e).await)
            }
            Err(_) => {
                *guard = None;
                Err(self.timeout(what, QMP_TIMEOUT))
            }
        }
    }

    /// A broken QMP connection usually means QEMU died: report that, with its console.
    async fn qmp_failure(&self, command: &str, e: QmpError) -> VmmError {
        match self.exit_soon().await {
            Some(exit) => self.exited(exit),
            None => self.control(command, e),
        }
    }

    /// The exit, waiting briefly: a closed socket is seen before the reaped process.
    async fn exit_soon(&self) -> Option<VmExit> {
        tokio::time::timeout(Duration::from_millis(200), self.process.wait())
            .await
            .ok()
    }

    async fn status(&self) -> Result<String, VmmError> {
        let v = self.qmp("query-status", None, "report its status").await?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    fn control(&self, request: &str, e: QmpError) -> VmmError {
        VmmError::Control {
            backend: BackendKind::Qemu,
            request: request.to_string(),
            detail: e.to_string(),
        }
    }

    fn timeout(&self, what: &'static str, after: Duration) -> VmmError {
        VmmError::Timeout {
            id: self.spec.id.clone(),
            what,
            secs: after.as_secs(),
        }
    }

    fn exited(&self, exit: VmExit) -> VmmError {
        VmmError::Exited {
            id: self.spec.id.clone(),
            exit,
            console_tail: self.failure_report(),
        }
    }

    /// The console tail, plus QEMU's own messages when it printed any (bad arguments, a
    /// migration stream it could not load).
    fn failure_report(&self) -> String {
        let console = self.console_tail();
        let log: String = tail_file(&self.paths.log, CONSOLE_TAIL_BYTES)
            .lines()
            .filter(|l| !l.starts_with("--- aegis: starting"))
            .collect::<Vec<_>>()
            .join("\n");
        if log.trim().is_empty() {
            console
        } else {
            format!(
                "{console}\n--- QEMU ({}) ---\n{log}",
                self.paths.log.display()
            )
        }
    }

    async fn save(&self, dir: &Path) -> Result<SnapshotRef, VmmError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| VmmError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create snapshot directory", dir))?;
        let memory = snapshot::memory_path(dir);
        let tmp = dir.join(format!("{}.tmp", snapshot::MEMORY_FILE));
        // Invalidate first: an old meta.json must never describe a new, partial memory file.
        remove_file_if_exists(&snapshot::meta_path(dir))?;
        remove_file_if_exists(&memory)?;
        remove_file_if_exists(&tmp)?;

        if self.status().await? == "running" {
            self.qmp("stop", None, "pause for a snapshot").await?;
        }
        let started = Instant::now();
        self.qmp(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": MIGRATION_BANDWIDTH })),
            "accept migration parameters",
        )
        .await?;
        // `mv` runs only once `cat` has written everything: the memory file appears complete
        // or not at all, even though QEMU reports "completed" before its helper has exited.
        let uri = format!(
            "exec:cat > {tmp} && mv {tmp} {memory}",
            tmp = sh_quote(&tmp)?,
            memory = sh_quote(&memory)?
        );
        self.qmp("migrate", Some(json!({ "uri": uri })), "start a snapshot")
            .await?;
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            let m = self
                .qmp("query-migrate", None, "report migration status")
                .await?;
            match m.get("status").and_then(Value::as_str).unwrap_or("unknown") {
                "completed" => break,
                s @ ("failed" | "cancelled") => {
                    let why = m
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(VmmError::Control {
                        backend: BackendKind::Qemu,
                        request: "migrate".into(),
                        detail: format!("snapshot {s}: {why}"),
                    });
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(self.timeout("write its snapshot", MIGRATION_TIMEOUT));
            }
            tokio::time::sleep(POLL).await;
        }
        let deadline = Instant::now() + QMP_TIMEOUT;
        while !memory.exists() {
            if Instant::now() > deadline {
                return Err(VmmError::Snapshot {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "QEMU reported the snapshot complete but {} never appeared (disk full?)",
                        memory.display()
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        let file = std::fs::File::open(&memory).map_err(io("open", &memory))?;
        file.sync_all().map_err(io("sync", &memory))?;
        let bytes = file.metadata().map_err(io("stat", &memory))?.len();
        snapshot::write(dir, &meta_for(&self.cfg, &self.spec, bytes))?;
        tracing::debug!(
            vm = %self.spec.id, bytes, ms = started.elapsed().as_millis(), "snapshot saved"
        );
        Ok(SnapshotRef {
            dir: dir.to_path_buf(),
        })
    }

    /// Removes the sockets and pid file once.
    fn cleanup(&self) {
        if self.cleaned.swap(true, Ordering::AcqRel) {
            return;
        }
        for f in [&self.paths.channel, &self.paths.qmp, &self.paths.pid] {
            if let Err(e) = remove_file_if_exists(f) {
                tracing::warn!(vm = %self.spec.id, error = %e, "cannot clean up");
            }
        }
    }
}

#[async_trait]
impl Vm for QemuVm {
    fn id(&self) -> &str {
        &self.spec.id
    }

    fn pid(&self) -> Option<u32> {
        Some(self.process.pid())
    }

    fn run_dir(&self) -> &Path {
        &self.spec.run_dir
    }

    /// Connects to the channel socket. QEMU serves one connection at a time: drop the
    /// previous channel first (a second connection waits in the listen backlog).
    async fn connect(&self) -> Result<Channel, VmmError> {
        let deadline = Instant::now() + CHANNEL_TIMEOUT;
        loop {
            if let Some(exit) = self.process.exited() {
                return Err(self.exited(exit));
            }
            match UnixStream::connect(&self.paths.channel).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) if Instant::now() > deadline => {
                    tracing::debug!(vm = %self.spec.id, error = %e, "channel never came up");
                    return Err(self.timeout("open its guest channel", CHANNEL_TIMEOUT));
                }
                Err(_) => {
                    tokio::select! {
                        exit = self.process.wait() => return Err(self.exited(exit)),
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            }
        }
    }

    async fn pause(&self) -> Result<(), VmmError> {
        self.qmp("stop", None, "pause").await.map(drop)
    }

    async fn resume(&self) -> Result<(), VmmError> {
        self.qmp("cont", None, "resume").await.map(drop)
    }

    async fn snapshot(&self, dir: &Path) -> Result<SnapshotRef, VmmError> {
        if !self.spec.shares.is_empty() {
            return Err(VmmError::Unsupported {
                backend: BackendKind::Qemu,
                operation: "snapshot the memory of a VM with a shared directory (virtio-fs \
                            cannot be migrated); it restarts from its disks instead",
            });
        }
        let r = self.save(dir).await;
        if r.is_err() {
            // Never leave a partial snapshot that looks like one.
            let _ = remove_file_if_exists(&snapshot::meta_path(dir));
            let _ = remove_file_if_exists(&snapshot::memory_path(dir));
            let _ = remove_file_if_exists(&dir.join(format!("{}.tmp", snapshot::MEMORY_FILE)));
        }
        r
    }

    async fn wait(&self) -> VmExit {
        let exit = tokio::select! {
            exit = self.process.wait() => exit,
            fsd = self.fsd.any_exit() => {
                // virtiofsd also exits when QEMU does: give QEMU a moment to exit by itself.
                match tokio::time::timeout(Duration::from_secs(1), self.process.wait()).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        // Guest file accesses to the share would hang forever: stop the VM.
                        tracing::warn!(
                            vm = %self.spec.id, virtiofsd = ?fsd,
                            "virtiofsd exited while the VM runs; killing the VM"
                        );
                        self.process.kill_and_wait().await
                    }
                }
            }
        };
        // virtiofsd exits when QEMU disconnects; make sure, and reap it.
        self.fsd.stop().await;
        exit
    }

    async fn kill(&self) -> Result<(), VmmError> {
        // Kill first: a QMP command in flight (a long snapshot) holds the lock, and fails
        // fast once QEMU is gone.
        self.process.kill_and_wait().await;
        self.fsd.stop().await;
        if let Ok(mut qmp) = self.qmp.try_lock() {
            *qmp = None;
        }
        self.cleanup();
        Ok(())
    }

    fn console_tail(&self) -> String {
        crate::console_log::tail(&self.paths.console, CONSOLE_TAIL_BYTES)
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        // Dropping the process handle kills QEMU. Files are removed only if it is known to be
        // gone and kill() did not already do it (another VMM may use the directory by then).
        if self.process.exited().is_some() {
            self.cleanup();
        }
    }
}

fn meta_for(cfg: &QemuConfig, spec: &VmSpec, memory_bytes: u64) -> SnapshotMeta {
    SnapshotMeta {
        format: snapshot::FORMAT,
        backend: BackendKind::Qemu,
        qemu_version: cfg.version.clone(),
        accelerator: cfg.accel.as_str().to_string(),
        machine_hash: cmdline::machine_fingerprint(cfg, spec),
        memory_mib: spec.memory_mib,
        vcpus: spec.vcpus,
        disks: spec
            .disks
            .iter()
            .map(|d| DiskMeta {
                serial: d.serial.clone(),
                read_only: d.read_only,
            })
            .collect(),
        memory_bytes,
        vm_id: spec.id.clone(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    }
}

/// Single-quotes a path for `/bin/sh` (QEMU runs `exec:` URIs with `sh -c`).
fn sh_quote(path: &Path) -> Result<String, VmmError> {
    let s = path.to_str().ok_or_else(|| {
        VmmError::InvalidSpec(format!("snapshot path {} is not UTF-8", path.display()))
    })?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_parses() {
        assert_eq!("tcg".parse::<Accel>(), Ok(Accel::Tcg));
        assert_eq!("kvm".parse::<Accel>(), Ok(Accel::Kvm));
        assert!("hvf".parse::<Accel>().is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote(Path::new("/a b/c")).unwrap(), "'/a b/c'");
        assert_eq!(sh_quote(Path::new("/it's")).unwrap(), r"'/it'\''s'");
    }

    fn backend(binary: &Path) -> QemuBackend {
        QemuBackend::new(QemuConfig {
            binary: binary.to_path_buf(),
            version: "7.2.22".into(),
            accel: Accel::Tcg,
            tsc_khz: Some(2_000_000),
            max_vcpus: 2,
            virtiofsd: None,
            console_log_bytes: crate::console_log::DEFAULT_CONSOLE_LOG_BYTES,
        })
    }

    fn spec(dir: &Path) -> VmSpec {
        let f = dir.join("kernel");
        std::fs::write(&f, b"x").unwrap();
        VmSpec {
            id: "t1".into(),
            kernel: f.clone(),
            initramfs: f,
            kernel_args: vec![],
            vcpus: 1,
            memory_mib: 128,
            disks: vec![],
            shares: vec![],
            run_dir: dir.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn invalid_specs_are_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.memory_mib = 16;
        let r = backend(Path::new("/nonexistent")).boot(&s).await;
        assert!(matches!(r, Err(VmmError::InvalidSpec(_))));
        assert!(!dir.path().join("vmm.log").exists());
    }

    /// A "QEMU" that dies at once: boot reports the exit and what it printed.
    #[tokio::test]
    async fn an_early_exit_is_reported_with_the_vmm_log() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-qemu");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'qemu-system-x86_64: -m 128M: bad option' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = backend(&fake).boot(&spec(dir.path())).await;
        match r {
            Err(VmmError::Exited {
                exit, console_tail, ..
            }) => {
                assert_eq!(
                    exit,
                    VmExit::Failed {
                        code: Some(1),
                        signal: None
                    }
                );
                assert!(console_tail.contains("bad option"), "{console_tail}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("boot of a dying VMM succeeded"),
        }
        assert!(!dir.path().join("vmm.pid").exists());
    }

    #[tokio::test]
    async fn restore_refuses_a_mismatched_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(Path::new("/nonexistent"));
        let s = spec(dir.path());
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(snapshot::memory_path(&snap), b"1234").unwrap();
        let mut meta = meta_for(b.config(), &s, 4);
        meta.memory_mib = 256;
        snapshot::write(&snap, &meta).unwrap();
        let r = b.restore(&s, &SnapshotRef { dir: snap }).await;
        assert!(
            matches!(&r, Err(VmmError::Snapshot { reason, .. }) if reason.contains("256 MiB")),
            "{:?}",
            r.err()
        );
    }
}
