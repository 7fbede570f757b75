//! One QEMU process and its guest: QMP control, pause/resume, snapshots, the channel, exit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::net::UnixStream;

use super::cmdline::{self, RunPaths};
use super::qmp::{Qmp, QmpError};
use super::snapshot::{self, DiskMeta, SnapshotMeta};
use super::virtiofsd::Virtiofsd;
use super::{
    QemuConfig, CHANNEL_TIMEOUT, CONSOLE_TAIL_BYTES, MIGRATION_BANDWIDTH, MIGRATION_TIMEOUT, POLL,
    QMP_START_TIMEOUT, QMP_TIMEOUT,
};
use crate::backend::{Channel, Vm, VmExit, VmmError};
use crate::capabilities::BackendKind;
use crate::console_log::ConsoleLog;
use crate::process::{remove_file_if_exists, tail_file, VmmProcess};
use crate::spec::{SnapshotRef, VmSpec};

/// One QEMU process.
pub struct QemuVm {
    pub(super) spec: VmSpec,
    pub(super) paths: RunPaths,
    pub(super) cfg: Arc<QemuConfig>,
    pub(super) process: VmmProcess,
    /// virtiofsd of each share (none for most VMs).
    pub(super) fsd: Virtiofsd,
    /// Pumps the serial console into the bounded console log while the VM lives.
    pub(super) _console: ConsoleLog,
    /// Connected lazily and again after any I/O error or timeout, so a command abandoned
    /// halfway never confuses the next one.
    pub(super) qmp: tokio::sync::Mutex<Option<Qmp>>,
    pub(super) cleaned: AtomicBool,
}

impl QemuVm {
    /// Connects QMP for the first time, retrying while QEMU starts up.
    pub(super) async fn first_qmp(&self) -> Result<(), VmmError> {
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
    pub(super) async fn qmp(
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
    pub(super) async fn qmp_failure(&self, command: &str, e: QmpError) -> VmmError {
        match self.exit_soon().await {
            Some(exit) => self.exited(exit),
            None => self.control(command, e),
        }
    }

    /// The exit, waiting briefly: a closed socket is seen before the reaped process.
    pub(super) async fn exit_soon(&self) -> Option<VmExit> {
        tokio::time::timeout(Duration::from_millis(200), self.process.wait())
            .await
            .ok()
    }

    pub(super) async fn status(&self) -> Result<String, VmmError> {
        let v = self.qmp("query-status", None, "report its status").await?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    pub(super) fn control(&self, request: &str, e: QmpError) -> VmmError {
        VmmError::Control {
            backend: BackendKind::Qemu,
            request: request.to_string(),
            detail: e.to_string(),
        }
    }

    pub(super) fn timeout(&self, what: &'static str, after: Duration) -> VmmError {
        VmmError::Timeout {
            id: self.spec.id.clone(),
            what,
            secs: after.as_secs(),
        }
    }

    pub(super) fn exited(&self, exit: VmExit) -> VmmError {
        VmmError::Exited {
            id: self.spec.id.clone(),
            exit,
            console_tail: self.failure_report(),
        }
    }

    /// The console tail, plus QEMU's own messages when it printed any (bad arguments, a
    /// migration stream it could not load).
    pub(super) fn failure_report(&self) -> String {
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

    pub(super) async fn save(&self, dir: &Path) -> Result<SnapshotRef, VmmError> {
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
    pub(super) fn cleanup(&self) {
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

pub(super) fn meta_for(cfg: &QemuConfig, spec: &VmSpec, memory_bytes: u64) -> SnapshotMeta {
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
pub(super) fn sh_quote(path: &Path) -> Result<String, VmmError> {
    let s = path.to_str().ok_or_else(|| {
        VmmError::InvalidSpec(format!("snapshot path {} is not UTF-8", path.display()))
    })?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}
