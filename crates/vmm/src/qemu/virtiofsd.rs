//! virtiofsd: one per shared directory, serving it to QEMU's `vhost-user-fs-device` over a
//! unix socket in the VM's run directory.
//!
//! ```text
//! virtiofsd --socket-path=<run>/fs<i>.sock -o source=<dir> -o cache=none
//!           -o sandbox=namespace -o no_posix_lock -o no_flock -o log_level=warn
//! ```
//!
//! - Started before QEMU (QEMU connects to the socket while parsing its command line), with
//!   the same guarantees as every VMM process ([`VmmProcess`]): own process group,
//!   `PR_SET_PDEATHSIG(SIGKILL)`, pid file in the run directory (`virtiofsd<i>.pid`) so a
//!   restarted daemon finds leftovers ([`leftover_pids`]).
//! - `cache=none`: no guest page cache for file data or attributes, so every read and write
//!   goes to the host file at once. Several VMs sharing a directory, and the host, see each
//!   other's writes immediately, and an `O_APPEND` write is one `pwrite` on the host file.
//! - `sandbox=namespace`: virtiofsd pivots into the shared directory in its own mount, pid
//!   and network namespaces; the guest can reach nothing outside that directory.
//! - It exits by itself when QEMU disconnects; it is killed with the VM in any case.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::VmmError;
use crate::process::{remove_file_if_exists, tail_file, ProcessSpec, VmmProcess};
use crate::spec::{Share, VmSpec};

/// Where distributions install the C virtiofsd that QEMU 7.x ships (Debian's
/// `qemu-system-common`; Fedora's older `qemu-virtiofsd`).
pub const CANDIDATES: &[&str] = &["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"];
/// How long virtiofsd may take to create its socket (milliseconds normally).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// How often a running VM checks that its virtiofsd processes are alive.
const EXIT_POLL: Duration = Duration::from_millis(250);
const LOG_TAIL_BYTES: u64 = 2048;

/// The first virtiofsd binary found on this host.
pub fn find() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Files of share `index` in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePaths {
    pub socket: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
}

impl SharePaths {
    pub fn new(run_dir: &Path, index: usize) -> SharePaths {
        SharePaths {
            socket: run_dir.join(format!("fs{index}.sock")),
            log: run_dir.join(format!("virtiofsd{index}.log")),
            pid: run_dir.join(format!("virtiofsd{index}.pid")),
        }
    }
}

/// The argv (without the program) serving `share` on `socket`.
pub fn args(share: &Share, socket: &Path) -> Result<Vec<String>, VmmError> {
    let utf8 = |what: &str, p: &Path| -> Result<String, VmmError> {
        p.to_str().map(str::to_string).ok_or_else(|| {
            VmmError::InvalidSpec(format!("{what} path {} is not UTF-8", p.display()))
        })
    };
    if share.read_only {
        // This virtiofsd has no read-only mode, and a read-only guest mount is no boundary.
        return Err(VmmError::InvalidSpec(format!(
            "share '{}' is read-only, which virtiofsd cannot enforce; share it read-write",
            share.tag
        )));
    }
    let source = utf8("shared directory", &share.host_path)?;
    Ok(vec![
        format!("--socket-path={}", utf8("virtiofsd socket", socket)?),
        "-o".into(),
        // virtiofsd splits -o values at commas; a backslash escapes one.
        format!(
            "source={}",
            source.replace('\\', "\\\\").replace(',', "\\,")
        ),
        "-o".into(),
        "cache=none".into(),
        "-o".into(),
        "sandbox=namespace".into(),
        // Locks are not forwarded to the host: a lock taken in one VM does not exclude
        // another VM (docs/WORKSPACES.md says so).
        "-o".into(),
        "no_posix_lock".into(),
        "-o".into(),
        "no_flock".into(),
        "-o".into(),
        "log_level=warn".into(),
    ])
}

/// The virtiofsd processes of one VM.
#[derive(Default)]
pub(crate) struct Virtiofsd {
    processes: Vec<VmmProcess>,
    sockets: Vec<PathBuf>,
}

impl Virtiofsd {
    /// Starts one virtiofsd per share of `spec` and waits until each listens. On any failure
    /// the ones already started are killed and reaped before the error is returned.
    pub async fn start(binary: Option<&Path>, spec: &VmSpec) -> Result<Virtiofsd, VmmError> {
        let mut started = Virtiofsd::default();
        if spec.shares.is_empty() {
            return Ok(started);
        }
        let Some(binary) = binary else {
            return Err(VmmError::Unavailable {
                what: "sharing a directory with the guest (virtio-fs)".into(),
                why: format!(
                    "virtiofsd not found (looked for {}); install qemu-system-common",
                    CANDIDATES.join(", ")
                ),
            });
        };
        for (i, share) in spec.shares.iter().enumerate() {
            if let Err(e) = started.start_one(binary, &spec.run_dir, i, share).await {
                started.stop().await;
                return Err(e);
            }
        }
        Ok(started)
    }

    async fn start_one(
        &mut self,
        binary: &Path,
        run_dir: &Path,
        index: usize,
        share: &Share,
    ) -> Result<(), VmmError> {
        let paths = SharePaths::new(run_dir, index);
        let argv = args(share, &paths.socket)?;
        remove_file_if_exists(&paths.socket)?;
        remove_file_if_exists(&paths.pid)?;
        let process = VmmProcess::spawn(ProcessSpec {
            program: binary,
            args: &argv,
            log: &paths.log,
            pid_file: &paths.pid,
        })
        .await?;
        self.sockets.push(paths.socket.clone());
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        loop {
            if let Some(exit) = process.exited() {
                let log = log_tail(&paths.log);
                return Err(VmmError::Spawn {
                    program: binary.to_path_buf(),
                    source: io::Error::other(format!(
                        "it exited ({exit:?}) before serving {} (tag '{}'): {log}",
                        share.host_path.display(),
                        share.tag
                    )),
                });
            }
            if paths.socket.exists() {
                break;
            }
            if Instant::now() > deadline {
                process.kill_and_wait().await;
                return Err(VmmError::Spawn {
                    program: binary.to_path_buf(),
                    source: io::Error::other(format!(
                        "no socket {} after {} s: {}",
                        paths.socket.display(),
                        SOCKET_TIMEOUT.as_secs(),
                        log_tail(&paths.log)
                    )),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::debug!(tag = %share.tag, pid = process.pid(), "virtiofsd started");
        self.processes.push(process);
        Ok(())
    }

    /// Kills every virtiofsd (and its sandbox child: the whole process group), waits until
    /// they are reaped and removes their sockets. Idempotent.
    pub async fn stop(&self) {
        for p in &self.processes {
            p.kill_and_wait().await;
        }
        for s in &self.sockets {
            let _ = remove_file_if_exists(s);
        }
    }

    /// Resolves with the exit of the first virtiofsd to exit; never if there is none. Polls
    /// (cheaply) so that it can run beside the VMM's own wait for the VM's whole life.
    pub async fn any_exit(&self) -> crate::backend::VmExit {
        if self.processes.is_empty() {
            return std::future::pending().await;
        }
        loop {
            if let Some(exit) = self.processes.iter().find_map(VmmProcess::exited) {
                return exit;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Their pids.
    #[cfg(test)]
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(VmmProcess::pid).collect()
    }
}

fn log_tail(log: &Path) -> String {
    let text: String = tail_file(log, LOG_TAIL_BYTES)
        .lines()
        .filter(|l| !l.starts_with("--- aegis: starting"))
        .collect::<Vec<_>>()
        .join("\n");
    if text.trim().is_empty() {
        "(it printed nothing)".into()
    } else {
        text
    }
}

/// Pids of virtiofsd processes that a VM in `run_dir` left behind (a daemon crash): those of
/// its `virtiofsd<i>.pid` files that are alive and whose command line serves a socket in
/// `run_dir` (a guard against pid reuse). For start-up reconciliation.
pub fn leftover_pids(run_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("virtiofsd") && name.ends_with(".pid")) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if serves_run_dir(pid, run_dir) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Whether process `pid` is alive and its command line has `--socket-path=<run_dir>/...`.
pub fn serves_run_dir(pid: u32, run_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let prefix = format!("--socket-path={}/", run_dir.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| std::str::from_utf8(arg).is_ok_and(|a| a.starts_with(&prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(path: &str) -> Share {
        Share {
            tag: "aegis-workspace".into(),
            host_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn command_line() {
        let a = args(&share("/data/a,b\\c"), Path::new("/run/vm/fs0.sock")).unwrap();
        assert_eq!(
            a,
            [
                "--socket-path=/run/vm/fs0.sock",
                "-o",
                "source=/data/a\\,b\\\\c",
                "-o",
                "cache=none",
                "-o",
                "sandbox=namespace",
                "-o",
                "no_posix_lock",
                "-o",
                "no_flock",
                "-o",
                "log_level=warn",
            ]
        );
        let mut ro = share("/data");
        ro.read_only = true;
        assert!(matches!(
            args(&ro, Path::new("/s")),
            Err(VmmError::InvalidSpec(m)) if m.contains("read-only")
        ));
    }

    #[test]
    fn paths_are_per_share() {
        let p = SharePaths::new(Path::new("/r"), 1);
        assert_eq!(p.socket, Path::new("/r/fs1.sock"));
        assert_eq!(p.pid, Path::new("/r/virtiofsd1.pid"));
        assert_eq!(p.log, Path::new("/r/virtiofsd1.log"));
    }

    #[test]
    fn leftovers_need_a_matching_command_line() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive but does not serve this directory.
        std::fs::write(
            dir.path().join("virtiofsd0.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        std::fs::write(dir.path().join("virtiofsd1.pid"), "garbage").unwrap();
        assert!(leftover_pids(dir.path()).is_empty());
        assert!(leftover_pids(Path::new("/nonexistent")).is_empty());
    }

    /// A stand-in virtiofsd running `script`, and a spec sharing `<dir>/shared` through it.
    fn stand_in(dir: &Path, script: &str) -> (PathBuf, VmSpec) {
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).unwrap();
        let fake = dir.join("fake-virtiofsd");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = VmSpec {
            id: "v".into(),
            kernel: fake.clone(),
            initramfs: fake.clone(),
            kernel_args: vec![],
            vcpus: 1,
            memory_mib: 64,
            disks: vec![],
            shares: vec![share(shared.to_str().unwrap())],
            run_dir: dir.to_path_buf(),
        };
        (fake, spec)
    }

    /// A "virtiofsd" that creates its socket and waits: started, found as a leftover by its
    /// command line, stopped with nothing left.
    #[tokio::test]
    async fn start_and_stop_a_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, spec) = stand_in(
            dir.path(),
            "#!/bin/sh\nsock=${1#--socket-path=}\ntouch \"$sock\"\nsleep 100\n",
        );
        let v = Virtiofsd::start(Some(&fake), &spec).await.unwrap();
        let pids = v.pids();
        assert_eq!(pids.len(), 1);
        assert_eq!(leftover_pids(dir.path()), pids);
        v.stop().await;
        assert!(leftover_pids(dir.path()).is_empty());
        assert!(!dir.path().join("fs0.sock").exists());
        assert!(
            !Path::new(&format!("/proc/{}", pids[0])).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
                    .is_ok_and(|s| s.contains(") Z "))
        );
    }

    #[tokio::test]
    async fn a_dying_virtiofsd_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, spec) = stand_in(
            dir.path(),
            "#!/bin/sh\necho 'fuse: bad mount point' >&2\nexit 1\n",
        );
        match Virtiofsd::start(Some(&fake), &spec).await {
            Err(VmmError::Spawn { source, .. }) => {
                assert!(source.to_string().contains("bad mount point"), "{source}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a dying virtiofsd was accepted"),
        }
        match Virtiofsd::start(None, &spec).await {
            Err(VmmError::Unavailable { why, .. }) => assert!(why.contains("virtiofsd")),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("no binary, yet started"),
        }
    }
}
