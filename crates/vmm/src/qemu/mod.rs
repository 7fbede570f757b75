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
mod vm;

pub use vm::QemuVm;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, Vm, VmmError};
use crate::capabilities::{BackendKind, Capabilities};
use crate::console_log::ConsoleLog;
use crate::process::{remove_file_if_exists, ProcessSpec, VmmProcess};
use crate::spec::{SnapshotRef, VmSpec};
use cmdline::{RunPaths, Start};
use virtiofsd::Virtiofsd;
use vm::{meta_for, sh_quote};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::VmExit;

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
